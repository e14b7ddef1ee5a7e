"""A scheduler that sleeps before scheduling while a flag file exists (test-only, loaded by vLLM's own
``scheduler_cls`` engine argument). Used to inject a known delay into the scheduler gap."""
import os
import time

from vllm.v1.core.sched.scheduler import Scheduler

FLAG = os.environ.get("W2EXT_TEST_SLOW_FLAG", "")
DELAY_S = float(os.environ.get("W2EXT_TEST_SLOW_S", "0.05"))


class SlowScheduler(Scheduler):
    def schedule(self, *args, **kwargs):
        if FLAG and os.path.exists(FLAG):
            time.sleep(DELAY_S)
        return super().schedule(*args, **kwargs)
