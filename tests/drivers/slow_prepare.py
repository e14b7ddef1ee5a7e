"""A CPU worker whose model runner sleeps before preparing each step's inputs while a flag file exists (test-only,
loaded by vLLM's own ``worker_cls`` engine argument in the worker's process; the sleep: slow_flag.py). The sleep
sits in ``_prepare_inputs``, which the V1 runner's ``execute_model`` calls before its forward: a known cause
planted in the worker's input preparation, between ``Worker.execute_model``'s start and the forward."""
from slow_flag import planted_sleep

from vllm.v1.worker.cpu_worker import CPUWorker


class SlowPrepareWorker(CPUWorker):
    def init_device(self):
        super().init_device()
        runner = self.model_runner
        original = runner._prepare_inputs

        def slow_prepare_inputs(*args, **kwargs):
            planted_sleep()
            return original(*args, **kwargs)

        runner._prepare_inputs = slow_prepare_inputs
