"""The export process runs in a process group of its own (a terminal's Ctrl-C reaches vLLM, not it) but in
its parent's session: with the kernel's autogroup scheduling every session is a CPU group of its own, and
export processes in sessions of their own were starved for seconds on a core shared with another session's
busy process (metrics scrapes and OTLP exports timed out on the 2-core test machine)."""
import os
import subprocess
import sys

import pytest

from vllm_w2ext.telemetry import export_process

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11) or not hasattr(os, "getsid"),
                                reason="Popen(process_group=) is Python 3.11+; POSIX sessions")


def test_export_process_own_group_parent_session():
    proc = export_process._spawn()
    assert proc is not None
    try:
        assert os.getpgid(proc.pid) == proc.pid                  # its own group: no terminal Ctrl-C
        assert os.getsid(proc.pid) == os.getsid(0)               # the parent's session: its CPU group
        if os.path.exists(f"/proc/{proc.pid}/autogroup"):
            with open(f"/proc/{proc.pid}/autogroup") as a, open("/proc/self/autogroup") as b:
                assert a.read().split()[0] == b.read().split()[0]
    finally:
        proc.stdin.close()                                       # end of input: it exits
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
