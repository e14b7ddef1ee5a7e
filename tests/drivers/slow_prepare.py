"""A worker whose model runner sleeps before preparing each step's inputs while a flag file exists (test-only,
loaded by vLLM's own ``worker_cls`` engine argument in the worker's process; the sleep: slow_flag.py). The sleep
sits in the runner's input preparation, which its ``execute_model`` calls before the forward: the V1 runner's
``_prepare_inputs`` (the CPU build), the V2 runner's ``prepare_inputs`` (the GPU default from vLLM 0.26). A known
cause planted between ``Worker.execute_model``'s start and the forward's launch. ``SlowPrepareWorker`` is the CPU
build's worker, ``SlowPrepareGPUWorker`` the GPU's (each module imported only when its class is asked for)."""
from slow_flag import planted_sleep


def _slow_runner(worker) -> None:
    runner = worker.model_runner
    name = "_prepare_inputs" if hasattr(runner, "_prepare_inputs") else "prepare_inputs"
    original = getattr(runner, name)

    def slow_prepare_inputs(*args, **kwargs):
        planted_sleep()
        return original(*args, **kwargs)

    setattr(runner, name, slow_prepare_inputs)


def __getattr__(name: str):
    if name == "SlowPrepareWorker":
        from vllm.v1.worker.cpu_worker import CPUWorker as base
    elif name == "SlowPrepareGPUWorker":
        from vllm.v1.worker.gpu_worker import Worker as base
    else:
        raise AttributeError(name)

    def init_device(self):
        base.init_device(self)
        _slow_runner(self)

    cls = type(name, (base,), {"init_device": init_device, "__module__": __name__})
    globals()[name] = cls
    return cls
