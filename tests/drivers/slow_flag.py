"""The sleep the slowed test classes plant (slow_scheduler.py, slow_prepare.py): ``W2EXT_TEST_SLOW_S`` seconds per
call while the flag file ``W2EXT_TEST_SLOW_FLAG`` exists (set by planted.py's ``generate_slowed`` and by the tests
that load those classes through vLLM's engine arguments)."""
import os
import time

FLAG = os.environ.get("W2EXT_TEST_SLOW_FLAG", "")
DELAY_S = float(os.environ.get("W2EXT_TEST_SLOW_S", "0.05"))


def planted_sleep() -> None:
    if FLAG and os.path.exists(FLAG):
        time.sleep(DELAY_S)
