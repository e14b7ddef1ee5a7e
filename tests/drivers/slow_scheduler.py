"""A scheduler that sleeps inside ``Scheduler.schedule`` while a flag file exists (test-only, loaded by
vLLM's own ``scheduler_cls`` engine argument). The sleep sits in ``_update_after_schedule``, which
vLLM's ``schedule`` calls last (0.26 to 0.32), so the delay is part of the scheduling call the plugin
wraps: a known cause planted in the scheduler."""
import os
import time

from vllm.v1.core.sched.scheduler import Scheduler

FLAG = os.environ.get("W2EXT_TEST_SLOW_FLAG", "")
DELAY_S = float(os.environ.get("W2EXT_TEST_SLOW_S", "0.05"))


class SlowScheduler(Scheduler):
    def _update_after_schedule(self, *args, **kwargs):
        if FLAG and os.path.exists(FLAG):
            time.sleep(DELAY_S)
        return super()._update_after_schedule(*args, **kwargs)
