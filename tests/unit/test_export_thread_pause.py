"""A paused process's export thread does not wake every interval (``Pipeline.set_running``): a wake costs the
same fixed CPU on vLLM's GIL with nothing to send (benchmarks/results/cpu/export_interval), so a paused plugin
would keep that cost, and an in-engine A/B (benchmarks/gpu/toggle_ab.py) would read it as the paused state's.
Planted: a 10 ms interval, so a running thread wakes ~30 times in 0.3 s and a paused one not at all; the records
of before the pause go out at once, and shutdown while paused ends the thread."""
import time

from vllm_w2ext import config
from vllm_w2ext.hooks import INSTRUMENTOR
from vllm_w2ext.telemetry import pipeline
from vllm_w2ext.telemetry.pipeline import Pipeline
from vllm_w2ext.vocab import FRONT, Span


def _wait_for(cond, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def test_paused_export_thread_sleeps_and_resumes():
    p = Pipeline(config.Settings(export_interval_ms=10, export_process="off"))
    p.start()
    try:
        time.sleep(0.3)
        assert p.wakes >= 10
        p.recorder.end(p.recorder.begin(Span.GENERATE, FRONT))    # recorded just before the pause
        p.set_running(False)
        assert _wait_for(lambda: len(p.recorder.buf) == 0)         # sent at once, not at the next interval
        paused_from = p.wakes
        time.sleep(0.3)
        assert p.wakes - paused_from <= 1                         # at most the pause's own flush, still running
        p.set_running(True)
        assert _wait_for(lambda: p.wakes >= paused_from + 10)     # woken at once, then every interval again
    finally:
        p.shutdown()


def test_shutdown_while_paused_ends_the_thread():
    p = Pipeline(config.Settings(export_interval_ms=10, export_process="off"))
    p.start()
    p.set_running(False)
    time.sleep(0.05)
    t0 = time.monotonic()
    p.shutdown()
    assert not p._thread.is_alive() and time.monotonic() - t0 < 1.0


def test_instrumentor_pause_reaches_the_pipeline(monkeypatch):
    got = []
    monkeypatch.setattr(pipeline, "set_running", got.append)
    INSTRUMENTOR.set_active(False)
    INSTRUMENTOR.set_active(True)
    assert got == [False, True]


def test_resume_restarts_the_wait_without_a_flush():
    """Resumed, the thread only starts waiting again: the pause's flush sent everything, and a flush at each resume
    would put a wake into every resumed block of an in-engine A/B. Planted: a 10 s interval, so any flush after the
    resume within 0.2 s could only be the resume's."""
    p = Pipeline(config.Settings(export_interval_ms=10_000, export_process="off"))
    p.start()
    try:
        p.set_running(False)
        assert _wait_for(lambda: p.flushes == 1)                   # the pause's flush
        w = p.wakes
        p.set_running(True)
        assert _wait_for(lambda: p.wakes == w + 1)                 # woken by the resume ...
        time.sleep(0.2)
        assert (p.flushes, p.wakes) == (1, w + 1)                  # ... and no flush for it
    finally:
        p.shutdown()
