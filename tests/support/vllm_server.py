"""Start and stop real vLLM processes for the tests (`vllm serve` through the CPU CLI shim)."""
from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

from vllm_w2ext.lab import free_port, wait_http  # noqa: F401  (re-exported for the tests)

CLI = [sys.executable, "-m", "vllm_w2ext.lab.vllm_cli"]


def stop(proc: subprocess.Popen, sig: int | None = signal.SIGINT, timeout: float = 60) -> None:
    """Signal (unless ``sig`` is None: it is already exiting), wait, then kill if it hangs."""
    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def vllm_serve(model: Path, env: dict, log: Path, cwd: Path, *extra: str):
    """`vllm serve MODEL` on a free loopback port (served name "tiny"); yields the port once healthy."""
    port = free_port()
    cmd = CLI + ["serve", str(model), "--port", str(port), "--host", "127.0.0.1", "--dtype", "float32",
                 "--max-model-len", "512", "--enforce-eager", "--served-model-name", "tiny", *extra]
    with open(log, "w") as lf:
        proc = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, cwd=str(cwd))
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc)
        yield port
    finally:
        stop(proc)
    if not env.get("VLLM_W2EXT_FAULT_INJECT"):      # a hook that raised disables itself silently: not here
        faults = [line for line in log.read_text(errors="replace").splitlines() if "and is now disabled" in line]
        assert not faults, "a hook raised: " + "\n".join(faults[:5])


_PREFIX = re.compile(r"^(.*?)Traceback \(most recent call last\):")


def tracebacks(log: str) -> list[str]:
    """Each traceback a server's log holds, less vLLM's own shutdown race.

    vLLM 0.32's ``AsyncLLM.shutdown`` cancels the task that reads the EngineCore's socket (which then
    queues ``EngineDeadError``) before it cancels the output handler; when the handler runs between the
    two it logs "AsyncLLM output_handler failed." with that error, during a graceful stop: vLLM issue #48745
    (a flag set first in ``shutdown`` is proposed in PR #49000, open). A traceback is the lines that follow it with
    the same log prefix (process, level, time, source line): an EngineCore traceback, or any other, is kept."""
    lines, found = log.splitlines(), []
    for i, line in enumerate(lines):
        m = _PREFIX.match(line)
        if not m:
            continue
        prefix, block = m.group(1), [line]
        for nxt in lines[i + 1:]:
            if prefix and not nxt.startswith(prefix):
                break
            block.append(nxt)
        text = "\n".join(block)
        shutdown_race = "[async_llm.py:" in prefix and "EngineDeadError" in block[-1] and "output_handler" in text
        if not shutdown_race:
            found.append(text)
    return found


class CliLoop:
    """One process that runs ``vllm`` commands one after the other (tests/drivers/vllm_cli_loop.py):
    ``run(args)`` is ``vllm *args`` in a process of its own, less the start-up. Standard error goes to
    ``log``; ``run`` returns the command's standard output and raises if it exits non-zero."""

    DONE = "W2EXT_CLI_DONE "

    def __init__(self, env: dict, log: Path, cwd: Path):
        import queue
        import threading
        driver = Path(__file__).resolve().parents[1] / "drivers" / "vllm_cli_loop.py"
        self.log = log
        self._err = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, str(driver)], env=env, cwd=str(cwd), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)                   # the process is gone

    def run(self, args: list[str], timeout: float = 600) -> str:
        import queue
        import time
        self.proc.stdin.write(json.dumps(args) + "\n")
        self.proc.stdin.flush()
        out, deadline = [], time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"vllm {' '.join(args[:2])} still running after {timeout} s") from None
            if line is None:
                raise AssertionError(f"the vllm CLI loop exited rc={self.proc.wait()}:\n"
                                     f"{self.log.read_text()[-3000:]}")
            if line.startswith(self.DONE):
                rc = int(line[len(self.DONE):])
                assert rc == 0, f"vllm {' '.join(args[:2])} exited {rc}:\n{self.log.read_text()[-3000:]}"
                return "".join(out)
            out.append(line)

    def close(self):
        self.proc.stdin.close()
        stop(self.proc, None, 60)
        self._err.close()
