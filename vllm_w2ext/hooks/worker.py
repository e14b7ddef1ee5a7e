"""Worker hooks: ``Worker.execute_model`` / ``sample_tokens`` (shared by the V1 and V2 runners and
by ``CPUWorker``) and the runner's forward: ``_model_forward`` in the V1 runner, ``execute_model`` of
the V2 runner (it has no separate forward). Spans are parented on the step context stamped on the
``SchedulerOutput`` by the EngineCore; calls without a stamp (warm-up, profiling, dummy runs) are
not recorded.

The scheduler gap is measured here, on the model-execution timeline: from the end of one step's
execution (sample_tokens, or execute_model when nothing is sampled) to the start of the next
execute_model, split by the engine intervals carried in the stamp (schedule, update, engine idle).
On CUDA, ``gpu_timing`` adds the GPU's own view."""
from __future__ import annotations

from vllm_w2ext.hooks.base import Hook
from vllm_w2ext.hooks.engine_core import STAMP
from vllm_w2ext.hooks.gpu_timing import make_timer
from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.pipeline import recorder
from vllm_w2ext.telemetry.ranges import WORKER, annotate_profiler


class _State:
    last: tuple | None = None        # stamp of the last executed step
    last_end = 0                     # ns: end of the last model execution (sample or execute)
    identity_done = False
    timer = None                     # GpuTimer on CUDA workers
    gpu_start = None                 # CUDA event of the step being executed


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
        S.timer = make_timer(worker)
        S.identity_done = True


def _overlap(g0: int, g1: int, a: int, b: int) -> int:
    return max(0, min(g1, b) - max(g0, a)) if a and b else 0


def gap_attrs(prev_end: int, start: int, stamp: tuple) -> dict:
    """Scheduler gap before this execution and where it went (seconds)."""
    gap = start - prev_end
    _, _, _, s0, s1, u0, u1, prev_step_end, step_start = stamp
    sched = _overlap(prev_end, start, s0, s1)
    upd = _overlap(prev_end, start, u0, u1)
    idle = _overlap(prev_end, start, prev_step_end, step_start)
    other = max(0, gap - sched - upd - idle)
    return {"vllm.gap.cpu_s": gap / 1e9, "vllm.gap.schedule_s": sched / 1e9, "vllm.gap.update_s": upd / 1e9,
            "vllm.gap.engine_idle_s": idle / 1e9, "vllm.gap.other_s": other / 1e9}


def _execute_pre(worker, args, kwargs):
    so = args[0] if args else kwargs.get("scheduler_output")
    stamp = getattr(so, STAMP, None)
    if stamp is None:
        return None
    _ensure_identity(worker)
    S.last = stamp
    r = recorder().begin("worker.execute_model", WORKER, parent=stamp[:2], step=stamp[2],
                         attrs={"vllm.worker.num_tokens": so.total_num_scheduled_tokens})
    if S.last_end and len(stamp) >= 9:
        r.attrs.update(gap_attrs(S.last_end, r.start_ns, stamp))
    if S.timer is not None:
        fwd, gaps = S.timer.resolve()
        if fwd:
            r.attrs["vllm.gpu.forward_s"] = fwd
            r.attrs["vllm.gpu.gap_s"] = gaps
        S.gpu_start = S.timer.start()
    return r


def _execute_post(r, result, error):
    if r is None:
        return
    recorder().end(r, error)
    S.last_end = r.end_ns
    if result is not None and S.timer is not None and S.gpu_start is not None:   # nothing left to sample
        S.timer.stop(S.gpu_start)
        S.gpu_start = None


def _sample_pre(worker, args, kwargs):
    stamp = S.last
    if stamp is None:
        return None
    return recorder().begin("worker.sample_tokens", WORKER, parent=stamp[:2], step=stamp[2])


def _sample_post(r, result, error):
    if r is None:
        return
    recorder().end(r, error)
    S.last_end = r.end_ns
    if S.timer is not None and S.gpu_start is not None:
        S.timer.stop(S.gpu_start)
        S.gpu_start = None


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


def _profile_pre(worker, args, kwargs):
    """vLLM's torch profiler starts/stops in this process: mirror our ranges as its user annotations."""
    annotate_profiler(bool(args[0] if args else kwargs.get("is_start", True)))
    return None


HOOKS: list[Hook] = [
    Hook("worker.execute_model", "vllm.v1.worker.gpu_worker", "Worker.execute_model", _execute_pre,
         _execute_post, WORKER, "both runners; CPUWorker inherits it"),
    Hook("worker.sample_tokens", "vllm.v1.worker.gpu_worker", "Worker.sample_tokens", _sample_pre, _sample_post,
         WORKER, "both runners"),
    Hook("worker.profile", "vllm.v1.worker.gpu_worker", "Worker.profile", _profile_pre, None, WORKER,
         "torch profiler start/stop: ranges also become record_function annotations"),
    Hook("worker.forward_v1", "vllm.v1.worker.gpu_model_runner", "GPUModelRunner._model_forward",
         _nested_pre("worker.forward"), _end, WORKER, "V1 runner forward (0.32 CPU)", optional=True),
    Hook("worker.runner_execute_v2", "vllm.v1.worker.gpu.model_runner", "GPUModelRunner.execute_model",
         _v2_execute_pre, _end, WORKER, "V2 runner prepare + forward (0.26 H100)", optional=True),
]
