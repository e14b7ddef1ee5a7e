"""Start and stop real vLLM processes for the tests (`vllm serve` through the CPU CLI shim)."""
from __future__ import annotations

import contextlib
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
