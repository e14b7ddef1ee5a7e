"""The unit tier: pure logic, no vLLM and no torch. Runs first in CI, in seconds, and also in a venv
that has only the project's own dependencies (.ci/unit-venv)."""
import sys

import pytest


@pytest.fixture(autouse=True, scope="session")
def no_vllm_or_torch():
    yield
    heavy = sorted(m for m in ("vllm", "torch") if m in sys.modules)
    assert not heavy, f"the unit tier imported {heavy}"
