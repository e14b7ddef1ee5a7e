"""Process shutdown hooks: export what was recorded before vLLM tears a process down.

vLLM may SIGKILL a worker or EngineCore that is slow to exit, so waiting for ``atexit`` loses the last
spans; these hooks flush (bounded by ``VLLM_W2EXT_SHUTDOWN_TIMEOUT_S``) at the start of shutdown."""
from __future__ import annotations

from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.telemetry.pipeline import flush_if_started
from vllm_w2ext.vocab import ENGINE, WORKER


def _flush_pre(instance, args, kwargs):
    flush_if_started()
    return None


HOOKS: list[Hook] = [
    Hook("engine.shutdown", "vllm.v1.engine.core", "EngineCore.shutdown", _flush_pre, None, ENGINE,
         "flush spans of the EngineCore (and an in-process worker) before teardown"),
    Hook("worker.shutdown", "vllm.v1.executor.multiproc_executor", "WorkerProc.shutdown", _flush_pre, None,
         WORKER, "flush spans of a worker process before teardown"),
]
