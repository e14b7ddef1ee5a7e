"""The export thread's wait (``VLLM_W2EXT_EXPORT_INTERVAL_MS=auto``, the default): long while there is little to send,
short while there is much (``pipeline.next_wait``), because each wake costs vLLM's process a fixed share whatever it
sends (benchmarks/results/cpu/export_wait). Planted: record rates whose waits are known, through the rule and
through a running export thread; a fixed interval stays fixed; the setting's values and errors."""
import threading
import time

import pytest

from vllm_w2ext import config
from vllm_w2ext.telemetry.pipeline import Pipeline, next_wait
from vllm_w2ext.vocab import FRONT, Span


@pytest.mark.parametrize("records,elapsed,want", [
    (0, 0.2, 1.0),            # nothing sent: the longest wait
    (125, 0.2, 1.0),          # batch 1 at 1.6 ms steps: 625 records a second, 1,024 take longer than the longest
    (1024, 0.2, 0.2),         # 1,024 in 200 ms: the shortest
    (512, 0.2, 0.4),          # half of it: twice as long
    (40_000, 0.2, 0.2),       # never under the shortest
    (3, 0.0, 1.0),            # no time passed (woken at once): the longest, to be corrected at the next wake
])
def test_wait_follows_the_record_rate(records, elapsed, want):
    assert next_wait(records, elapsed, 0.2, 1.0, 1024) == pytest.approx(want)


def test_fixed_interval_stays_fixed():
    assert next_wait(0, 5.0, 0.05, 0.05, 1024) == 0.05
    assert next_wait(10**6, 0.01, 0.05, 0.05, 1024) == 0.05


@pytest.mark.parametrize("raw,field,waits", [("auto", 0, config.AUTO_EXPORT_MS), ("AUTO", 0, config.AUTO_EXPORT_MS),
                                             ("50", 50, (50, 50)), ("60000", 60000, (60000, 60000))])
def test_setting(raw, field, waits):
    s = config.load({"VLLM_W2EXT_EXPORT_INTERVAL_MS": raw})
    assert (s.export_interval_ms, s.export_waits_ms) == (field, waits)


def test_default_is_auto():
    assert config.load({}).export_waits_ms == config.AUTO_EXPORT_MS


@pytest.mark.parametrize("raw", ["soon", "5", "0", "70000"])
def test_bad_setting_names_the_variable(raw):
    with pytest.raises(config.SettingsError, match="VLLM_W2EXT_EXPORT_INTERVAL_MS=.*auto or an integer"):
        config.load({"VLLM_W2EXT_EXPORT_INTERVAL_MS": raw})


def _wakes_over(p: Pipeline, seconds: float, feed_every_s: float | None, per_feed: int) -> int:
    """Wakes of ``p``'s export thread over ``seconds`` while a thread records ``per_feed`` ranges every
    ``feed_every_s`` (None: nothing recorded)."""
    stop = threading.Event()

    def feed():
        rec = p.recorder
        while not stop.wait(feed_every_s):
            for _ in range(per_feed):
                rec.end(rec.begin(Span.GENERATE, FRONT))

    feeder = threading.Thread(target=feed) if feed_every_s else None
    w0 = p.wakes
    if feeder:
        feeder.start()
    time.sleep(seconds)
    stop.set()
    if feeder:
        feeder.join()
    return p.wakes - w0


def test_running_thread_wakes_by_what_it_sends(monkeypatch):
    """Auto at 10-50 ms aiming at 100 records a wake: idle, it wakes every 50 ms (~12 in 0.6 s, where a fixed 10 ms
    would wake ~60 times); at ~20,000 records a second every 10 ms (~60)."""
    monkeypatch.setattr(config, "AUTO_EXPORT_MS", (10, 50))
    monkeypatch.setattr(config, "EXPORT_FILL", 100)
    p = Pipeline(config.Settings(export_process="off"))
    assert p.settings.export_waits_ms == (10, 50)
    p.start()
    try:
        time.sleep(0.1)                                   # past the first (shortest) wait
        idle = _wakes_over(p, 0.6, None, 0)
        busy = _wakes_over(p, 0.6, 0.005, 100)
    finally:
        p.shutdown()
    assert idle <= 16, idle
    assert busy >= 30, busy
