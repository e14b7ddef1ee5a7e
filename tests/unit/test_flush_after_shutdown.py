"""A flush after the pipeline's shutdown is a quiet no-op. In a one-process engine (``LLM`` with
``VLLM_ENABLE_V1_MULTIPROCESSING=0``, e.g. benchmarks/gpu/device_busy_check.py) the interpreter's exit runs our
``atexit`` handler (``Pipeline.shutdown``: last records out, the export process's pipe closed) before vLLM's
``weakref.finalize`` callbacks (their one ``atexit`` handler was registered at import, ours later, and ``atexit``
runs the last registered first); one of them is ``EngineCore.shutdown``, whose hook (``hooks/lifecycle.py``)
flushes again. That flush wrote to the closed pipe and logged "the export process (pid N) is gone
(OSError(9, 'Bad file descriptor'))" (the in-process chain: "trace_file flush failed: ValueError('I/O operation on
closed file')"), and a write after the close could land in another file that had the descriptor's number by then."""
import glob
import logging
import os

import pytest

from vllm_w2ext import config
from vllm_w2ext.analysis.readers.pftrace import read_span_file
from vllm_w2ext.telemetry import export_process
from vllm_w2ext.telemetry.pipeline import Pipeline
from vllm_w2ext.vocab import FRONT, Span


def _spans(p: Pipeline, n: int) -> None:
    for _ in range(n):
        p.recorder.end(p.recorder.begin(Span.GENERATE, FRONT))


@pytest.mark.parametrize("export", ["on", "off"])
def test_vllms_flush_after_our_shutdown_is_quiet_and_nothing_is_lost(export, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("VLLM_W2EXT_TRACE_DIR", str(tmp_path))     # the export process reads its settings here
    p = Pipeline(config.Settings(trace_dir=str(tmp_path), export_process=export))
    p.connect()
    assert (p.remote is not None) == (export == "on") and (p.chain is not None) == (export == "off")
    with caplog.at_level(logging.WARNING, logger="vllm_w2ext"):
        _spans(p, 5)
        p.flush_once()                   # an export interval
        _spans(p, 3)                     # the last interval's: out with the shutdown
        p.shutdown()                     # our atexit handler
        p.flush()                        # EngineCore.shutdown's hook, from vLLM's weakref.finalize after it
        p.flush()
    assert [r.getMessage() for r in caplog.records] == []
    files = glob.glob(str(tmp_path / "w2ext-*.pftrace"))
    assert len(files) == 1
    assert [s.name for s in read_span_file(files[0]).slices] == [Span.GENERATE] * 8


def test_no_write_to_the_pipes_descriptor_after_shutdown(tmp_path, caplog):
    """Once closed, the pipe's descriptor number is free for the next file the process opens: a late send
    must not write there. Planted: a file put at that number (dup2) right after the shutdown."""
    sink = export_process.start()
    assert sink is not None
    sink.shutdown(5.0)
    path = tmp_path / "bystander"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.dup2(fd, sink.fd)
        with caplog.at_level(logging.WARNING, logger="vllm_w2ext"):
            sink.send_stats((1, 0, 0, 0.0, 0.0, 0.0, 0.0, {}))
            sink.consume([["x"]])
            sink.flush(0.1)
    finally:
        os.close(sink.fd)
        os.close(fd)
    assert path.read_bytes() == b""
    assert [r.getMessage() for r in caplog.records] == []


class SlowTarget:
    """Stands for the export process behind a slow collector: each flush and the shutdown take all the time given."""

    def __init__(self):
        self.waits = []

    def flush(self, timeout_s):
        self.waits.append(("flush", round(timeout_s, 1)))

    def shutdown(self, timeout_s):
        self.waits.append(("shutdown", round(timeout_s, 1)))

    def __getattr__(self, name):                   # the rest of a sink's calls (consume, tick, ...): nothing to do
        return lambda *a, **k: None


def test_the_exit_flush_and_the_shutdown_share_one_budget(monkeypatch):
    """vLLM force-kills an EngineCore or worker 5 s after its SIGTERM: the flush at the start of its shutdown
    (hooks.lifecycle) and the pipeline's shutdown at exit wait ``budget`` together, never more than
    VLLM_W2EXT_SHUTDOWN_TIMEOUT_S; a second exit flush does not start the clock again. Planted clock: 1 s per
    flush."""
    from vllm_w2ext.hooks import lifecycle
    from vllm_w2ext.telemetry import pipeline
    now = [100.0]
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: now[0])
    p = Pipeline(config.Settings(shutdown_timeout_s=5.0))
    p.chain = target = SlowTarget()
    p.exit_flush(lifecycle.EXIT_BUDGET_S)
    now[0] += 1.0
    p.exit_flush(lifecycle.EXIT_BUDGET_S)
    now[0] += 1.0
    p.shutdown()
    assert target.waits == [("flush", 3.5), ("flush", 2.5), ("shutdown", 1.5)]
    q = Pipeline(config.Settings(shutdown_timeout_s=2.0))      # a smaller setting bounds the budget
    q.chain = target = SlowTarget()
    q.exit_flush(lifecycle.EXIT_BUDGET_S)
    q.shutdown()
    assert target.waits == [("flush", 2.0), ("shutdown", 2.0)]
    r = Pipeline(config.Settings(shutdown_timeout_s=5.0))      # no exit flush (the front end): its own timeout
    r.chain = target = SlowTarget()
    r.shutdown()
    assert target.waits == [("shutdown", 5.0)]
