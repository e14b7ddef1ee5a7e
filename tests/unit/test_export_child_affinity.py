"""The export process leaves the cores vLLM pinned its parent to (vLLM's CPU worker binds itself to
one core and spins there; an export process sharing that core fell minutes behind)."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                                reason="needs CPU affinity and two allowed cores")

PROBE = ("import os, sys; os.sched_setaffinity(0, {%s}); "
         "from vllm_w2ext.export_child import leave_pinned_cores; leave_pinned_cores(); "
         "print(sorted(os.sched_getaffinity(0)))")


def _affinity_after(pinned: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", PROBE % pinned], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_pinned_parent_core_is_left():
    allowed = sorted(os.sched_getaffinity(0))
    got = _affinity_after(str(allowed[0]))
    assert allowed[0] not in got and set(got) <= set(range(os.cpu_count())) and got


def test_unpinned_process_keeps_every_core():
    allowed = sorted(os.sched_getaffinity(0))
    assert _affinity_after(", ".join(map(str, allowed))) == allowed
