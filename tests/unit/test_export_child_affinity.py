"""The export process runs on every core, whatever cores its parent is pinned to (vLLM's CPU worker binds
itself to one core and spins there: an export process confined to that core fell minutes behind, and one
confined to the other core starved beside the spinner of another engine pinned there)."""
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                                reason="needs CPU affinity and two allowed cores")

PROBE = ("import os, sys; os.sched_setaffinity(0, {%s}); "
         "from vllm_w2ext.export_child import unpin; unpin(); "
         "print(sorted(os.sched_getaffinity(0)))")


def _affinity_after(pinned: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", PROBE % pinned], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_pinned_parent_every_core():
    allowed = sorted(os.sched_getaffinity(0))
    for one in (allowed[0], allowed[-1]):
        assert _affinity_after(str(one)) == allowed


def test_unpinned_process_keeps_every_core():
    allowed = sorted(os.sched_getaffinity(0))
    assert _affinity_after(", ".join(map(str, allowed))) == allowed
