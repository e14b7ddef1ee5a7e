"""Process shutdown hooks: export what was recorded before vLLM tears a process down.

vLLM may SIGKILL a worker or EngineCore that is slow to exit, so waiting for ``atexit`` loses the last
spans; these hooks flush at the start of shutdown. That flush and the pipeline's shutdown at exit wait
``EXIT_BUDGET_S`` in all (at most ``VLLM_W2EXT_SHUTDOWN_TIMEOUT_S``): vLLM's process manager force-kills an
EngineCore or worker process that has not exited 5 s after its SIGTERM (``vllm/v1/utils.py``'s ``shutdown``
with no timeout given, vLLM 0.26-0.33), and with it the process's tree, its export process included. Ending the
plugin's waits before that leaves vLLM its own teardown; what the export process still holds it sends on its own
deadline once its input closes (``telemetry/export_process.py``). Seen in CI before the shared budget, when the
flush and the exit's wait each had the whole timeout: with a slow collector (1 s an export) on a loaded 2-core
machine an EngineCore outlasted the 5 s, and vLLM's force-kill raised out of its own shutdown
(psutil.NoSuchProcess in ``kill_process_tree``)."""
from __future__ import annotations

from vllm_w2ext.config import EXIT_BUDGET_S
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.telemetry.pipeline import exit_flush_if_started
from vllm_w2ext.vocab import ENGINE, WORKER


def _flush_pre(instance, args, kwargs):
    exit_flush_if_started(EXIT_BUDGET_S)
    return None


HOOKS: list[Hook] = [
    Hook("engine.shutdown", "vllm.v1.engine.core", "EngineCore.shutdown", _flush_pre, None, ENGINE,
         "flush spans of the EngineCore (and an in-process worker) before teardown", direct=False),
    Hook("worker.shutdown", "vllm.v1.executor.multiproc_executor", "WorkerProc.shutdown", _flush_pre, None,
         WORKER, "flush spans of a worker process before teardown", direct=False),
]
