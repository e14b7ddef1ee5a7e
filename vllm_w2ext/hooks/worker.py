"""Worker hooks: ``Worker.execute_model`` / ``sample_tokens`` (shared by the V1 and V2 runners and
by ``CPUWorker``) and the runner's forward: ``_model_forward`` in the V1 runner, ``execute_model`` of
the V2 runner (it has no separate forward). Spans are parented on the step context stamped on the
``SchedulerOutput`` by the EngineCore; calls without a stamp (warm-up, profiling, dummy runs) are
not recorded."""
from __future__ import annotations

from vllm_w2ext.hooks.base import Hook
from vllm_w2ext.hooks.engine_core import STAMP
from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.pipeline import recorder
from vllm_w2ext.telemetry.ranges import WORKER


class _State:
    last: tuple[int, int, int] | None = None     # stamp of the last executed step
    identity_done = False


S = _State()


def _tp_rank() -> int | None:
    try:
        from vllm.distributed.parallel_state import get_tp_group
        return get_tp_group().rank_in_group
    except Exception:
        return None


def _ensure_identity(worker) -> None:
    if not S.identity_done:
        identity.set_role(WORKER, rank=getattr(worker, "rank", 0), local_rank=getattr(worker, "local_rank", 0),
                          tp_rank=_tp_rank())
        S.identity_done = True


def _execute_pre(worker, args, kwargs):
    so = args[0] if args else kwargs.get("scheduler_output")
    stamp = getattr(so, STAMP, None)
    if stamp is None:
        return None
    _ensure_identity(worker)
    S.last = stamp
    return recorder().begin("worker.execute_model", WORKER, parent=stamp[:2], step=stamp[2],
                            attrs={"vllm.worker.num_tokens": so.total_num_scheduled_tokens})


def _sample_pre(worker, args, kwargs):
    stamp = S.last
    if stamp is None:
        return None
    return recorder().begin("worker.sample_tokens", WORKER, parent=stamp[:2], step=stamp[2])


def _nested_pre(name):
    def pre(runner, args, kwargs):
        rec = recorder()
        top = rec.current()
        if top is None or top.role != WORKER:     # not inside a recorded worker step
            return None
        return rec.begin(name, WORKER)
    return pre


def _v2_execute_pre(runner, args, kwargs):
    if kwargs.get("dummy_run"):
        return None
    return _nested_pre("worker.model_runner.execute_model")(runner, args, kwargs)


def _end(r, result, error):
    if r is not None:
        recorder().end(r, error)


HOOKS: list[Hook] = [
    Hook("worker.execute_model", "vllm.v1.worker.gpu_worker", "Worker.execute_model", _execute_pre, _end,
         WORKER, "both runners; CPUWorker inherits it"),
    Hook("worker.sample_tokens", "vllm.v1.worker.gpu_worker", "Worker.sample_tokens", _sample_pre, _end,
         WORKER, "both runners"),
    Hook("worker.forward_v1", "vllm.v1.worker.gpu_model_runner", "GPUModelRunner._model_forward",
         _nested_pre("worker.forward"), _end, WORKER, "V1 runner forward (0.32 CPU)", optional=True),
    Hook("worker.runner_execute_v2", "vllm.v1.worker.gpu.model_runner", "GPUModelRunner.execute_model",
         _v2_execute_pre, _end, WORKER, "V2 runner prepare + forward (0.26 H100)", optional=True),
]
