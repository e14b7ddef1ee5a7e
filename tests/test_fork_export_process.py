"""A forked child (vLLM's EngineCore or worker under the fork start method, vLLM's default for a script's
``LLM`` on the GPU) gets an export process of its own, and keeps its pipe to it.

The child inherits its parent's prestarted export process (``export_process._prestarted``), closes its
copies of that pipe and starts its own, whose pipe usually gets the same descriptor numbers. The
parent's pipe used to be closed with ``os.close(fileno)``: the child's copy of the parent's ``Popen``
then closed the same numbers again when it was collected, which was the child's new pipe. Its export
process saw end of input at once and exited, and the child wrote its ranges to a closed (or reused)
descriptor. No vLLM needed: the real export process, a real fork."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, clean_env

CHILD = r"""
import json, os, sys, time
from vllm_w2ext import config
from vllm_w2ext.telemetry import export_process, identity
identity.set_role("frontend")
export_process.prestart(config.current())
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    proc = export_process._prestarted[0][1]        # the child's own, started by the at-fork handler
    import gc; gc.collect()
    time.sleep(0.5)
    out = {"roles": identity.roles(), "alive": proc.poll() is None}
    try:
        out["same_pipe"] = os.fstat(proc.stdin.fileno()).st_ino == \
            os.stat(f"/proc/{proc.pid}/fd/0").st_ino
    except OSError as e:
        out["same_pipe"] = repr(e)
    os.write(w, json.dumps(out).encode())
    os._exit(0)
os.close(w)
os.waitpid(pid, 0)
print(os.read(r, 4096).decode())
"""


def test_forked_child_keeps_its_export_pipe(tmp_path):
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_TRACE_DIR=str(tmp_path))
    p = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120,
                       cwd=str(ROOT))
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["same_pipe"] is True, got
    assert got["alive"], got
    assert got["roles"] == {}            # the parent's role is not the child's
