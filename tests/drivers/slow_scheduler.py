"""A scheduler that sleeps inside ``Scheduler.schedule`` while a flag file exists (test-only, loaded by
vLLM's own ``scheduler_cls`` engine argument; the sleep: slow_flag.py). The sleep sits in
``_update_after_schedule``, which vLLM's ``schedule`` calls last (0.26 to 0.32), so the delay is part of the
scheduling call the plugin wraps: a known cause planted in the scheduler."""
from slow_flag import planted_sleep

from vllm.v1.core.sched.scheduler import Scheduler


class SlowScheduler(Scheduler):
    def _update_after_schedule(self, *args, **kwargs):
        planted_sleep()
        return super()._update_after_schedule(*args, **kwargs)
