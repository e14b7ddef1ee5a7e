"""An export process gone while its vLLM process still sends: a warning when it ended on its own (a crash: the user
loses spans and metrics and should know), an info line when a signal killed it (at shutdown vLLM's process manager
force-kills what is left of a slow process, its children with it: the vLLM process goes too, and the warning was
noise in every slow shutdown, tests/test_otlp_slow.py). Real child processes, planted ends; either way the sink goes
quiet (one line, no exception)."""
import logging
import signal
import subprocess
import sys

import pytest

from vllm_w2ext.telemetry.export_process import ExportProcessSink


def child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


@pytest.mark.parametrize("end, level", [("killed", logging.INFO), ("exited", logging.WARNING)])
def test_a_gone_export_process_is_said_once_at_the_level_its_end_calls_for(caplog, end, level):
    proc = child("import time; time.sleep(60)" if end == "killed" else "import sys; sys.exit(3)")
    if end == "killed":
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    sink = ExportProcessSink(proc)
    with caplog.at_level(logging.INFO, logger="vllm_w2ext"):
        for _ in range(3):
            sink.consume([["engine.step", "engine_core", 1, 2, 0, 10, 20, 1, None, None, None, 1, None]])
    lines = [r for r in caplog.records if "is gone" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == level, [(r.levelno, r.getMessage()) for r in lines]
    assert ("exit code -9" if end == "killed" else "exit code 3") in lines[0].getMessage()
    assert sink.dropped == 3 and sink.failed_batches == 3
