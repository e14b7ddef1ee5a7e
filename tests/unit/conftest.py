"""The unit tier: pure logic, no vLLM and no torch. Runs first in CI, in seconds, and also in a venv
that has only the project's own dependencies (.ci/unit-venv)."""
import sys

import pytest


@pytest.fixture(autouse=True, scope="session")
def no_vllm_or_torch():
    yield
    heavy = sorted(m for m in ("vllm", "torch") if m in sys.modules)
    assert not heavy, f"the unit tier imported {heavy}"


@pytest.fixture
def no_marks():
    """``recording.PHASE_MARKS`` off for the test (no NVTX or profiler marks wanted: the fronts' own ways through),
    restored after it; the test may switch marks on through the list it gets."""
    from vllm_w2ext.telemetry import recording
    saved = recording.PHASE_MARKS[0]
    recording.PHASE_MARKS[0] = False
    yield recording.PHASE_MARKS
    recording.PHASE_MARKS[0] = saved
