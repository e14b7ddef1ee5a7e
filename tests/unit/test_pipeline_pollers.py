"""Pipeline pollers: work moved off vLLM's threads (resolving CUDA events) runs on the export thread before
each take, so what it records goes out in the same batch; a poller that raises is dropped with one log
line and the export thread goes on."""
import logging
import threading
import time

from vllm_w2ext import config
from vllm_w2ext.telemetry.pipeline import Pipeline
from vllm_w2ext.telemetry.sink import Sink
from vllm_w2ext.vocab import WORKER, Span


def planted_clock(clock: list):
    """``time.thread_time`` for this thread: moves 1 s per reading. Other threads (an export thread an earlier test
    left running, which the flush's ``time.sleep(0)`` lets run) read the real clock: their readings must not move
    this one."""
    real, me = time.thread_time, threading.get_ident()

    def tick():
        if threading.get_ident() != me:
            return real()
        clock[0] += 1.0
        return clock[0]
    return tick


def test_pollers_run_before_the_take_and_a_faulty_one_is_dropped(caplog):
    p = Pipeline(config.Settings())
    calls = []

    def good(rec):
        calls.append("good")
        rec.emit(Span.DEVICE_SAMPLES, WORKER, None, 0, 0, data=((1, 2, 3e-3, 0.0),))

    def bad(rec):
        calls.append("bad")
        raise RuntimeError("planted")

    p.add_poller(bad, "bad")
    p.add_poller(good, "good")
    with caplog.at_level(logging.ERROR, logger="vllm_w2ext"):
        assert p.flush_once() == 1                  # good's record was taken in the same flush
        assert p.flush_once() == 1
    assert calls == ["bad", "good", "good"]
    assert sum("planted" in r.getMessage() for r in caplog.records) == 1


def test_the_export_threads_cpu_is_split_by_part(monkeypatch):
    """export_cpu_parts: each poller under its name, the send's take and delivery (no export process: nothing
    encoded) and the own counters; together the export thread's CPU. A planted thread CPU clock that moves 1 s per
    reading, 5 s in the poller."""
    from vllm_w2ext.telemetry import pipeline
    clock = [0.0]

    monkeypatch.setattr(pipeline.time, "thread_time", planted_clock(clock))
    p = Pipeline(config.Settings())

    def slow(rec):
        clock[0] += 5.0
    p.add_poller(slow, "device")
    p.flush_once()
    parts = p.export_cpu_parts
    assert set(parts) == {"device", "take", "encode", "deliver", "stats"}
    assert parts["device"] == 6.0                    # its 5 s and the clock's own step
    assert parts["take"] == parts["deliver"] == parts["stats"] == 1.0 and parts["encode"] == 0.0
    assert sum(parts.values()) == p.export_cpu_s == 9.0     # five readings: before, after the poller, the take,
    #                                                         the send, the own counters


def test_the_send_is_split_into_take_encode_and_deliver(monkeypatch):
    """With an export process, the thread CPU its sink says it spent encoding the frames is the send's ``encode``
    and the rest of the send is ``deliver``. Planted: a thread CPU clock moving 1 s per reading; each chunk's
    consume spends 7 s, 4 of them encoding (as the sink's ``encode_cpu_here`` says); the take 2 s."""
    from vllm_w2ext.telemetry import pipeline
    clock = [0.0]

    monkeypatch.setattr(pipeline.time, "thread_time", planted_clock(clock))

    class Encoding(_Remote):
        encoded = 0.0

        def encode_cpu_here(self):
            return self.encoded

        def consume(self, records):
            clock[0] += 7.0
            self.encoded += 4.0

    p = Pipeline(config.Settings())
    p.remote = Encoding()
    class TimedTake(type(p.recorder)):            # the recorder's take, 2 s on the planted clock
        __slots__ = ()

        def take(self):
            clock[0] += 2.0
            return super().take()
    p.recorder.__class__ = TimedTake
    for i in range(pipeline.CHUNK + 1):                  # two chunks
        p.recorder.emit(Span.DEVICE_SAMPLES, WORKER, None, i, i)
    assert p.flush_once() == pipeline.CHUNK + 1
    parts = p.export_cpu_parts
    assert parts["take"] == 3.0                      # its 2 s and the reading after it
    assert parts["encode"] == 8.0                    # 4 s in each of the two chunks
    assert parts["deliver"] == 7.0                   # the chunks' other 3 s each and the reading after the send
    assert sum(parts.values()) == p.export_cpu_s


class _Remote(Sink):
    """The export process's side of the pipe, as the export thread sees it."""

    def __init__(self):
        self.stats, self.identities = [], []

    def flush(self, timeout_s):
        pass

    def sync_identity(self, metrics_dir):
        self.identities.append(metrics_dir)

    def consume(self, records):
        pass

    def send_stats(self, cost):
        self.stats.append(cost)


def test_own_counters_go_at_most_once_a_second_and_at_once_after_a_fault(monkeypatch):
    from vllm_w2ext.telemetry import pipeline, selfcost
    p = Pipeline(config.Settings())
    p.remote = remote = _Remote()
    clock = [100.0]
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: clock[0])
    p.flush_once()
    selfcost.add_sample(1000, 1000, 1)                # the counters moved
    p.flush_once()                                     # within the second: not sent
    assert len(remote.stats) == 1
    selfcost.hook_failed("t.planted")                  # a fault: sent with the next flush
    p.flush_once()
    assert len(remote.stats) == 2 and remote.stats[-1].hook_errors["t.planted"] >= 1
    selfcost.add_sample(1000, 1000, 1)
    clock[0] += pipeline.STATS_EVERY_S
    p.flush_once()                                     # a second later
    assert len(remote.stats) == 3
    selfcost.add_sample(1000, 1000, 1)
    p.flush(0)                                          # an explicit flush sends them
    assert len(remote.stats) == 4
