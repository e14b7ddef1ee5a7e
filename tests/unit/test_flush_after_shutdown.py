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
