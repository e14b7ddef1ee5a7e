"""EngineCore process hooks: one span per engine step and its phases.

``engine.step`` wraps ``EngineCore.step`` or ``step_with_batch_queue`` (whichever vLLM bound as
``step_fn``); children: ``engine.schedule``, ``engine.execute_model`` and ``engine.sample_tokens``
(dispatch until the output future is done, so under async scheduling they may end in a later step)
and ``engine.update_from_output``. The scheduler output is stamped with the step's context so worker
processes parent their spans on it. Batch attributes and request links are computed on the export
thread from the stamped ``SchedulerOutput``; the hot path only takes timestamps.
"""
from __future__ import annotations

from concurrent.futures import Future

from vllm_w2ext.hooks import requests_index
from vllm_w2ext.hooks.base import Hook
from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.pipeline import recorder
from vllm_w2ext.telemetry.ranges import ENGINE, Range

# Attribute set on SchedulerOutput, read by the workers: (trace_id, span_id, step_id, schedule start,
# schedule end, last update start, last update end, previous step end, this step start) - the engine's
# side of the scheduler gap the worker measures.
STAMP = "_w2ext_ctx"


class _State:
    step = 0
    current: Range | None = None           # open engine.step range
    finished: list[str] = []               # request ids freed since the last step ended
    identity_done = False
    last_update = (0, 0)                   # last update_from_output interval (ns)
    prev_step_end = 0


S = _State()


def _step_pre(core, args, kwargs):
    if not S.identity_done:
        identity.set_role(ENGINE, engine_index=getattr(core, "engine_index", 0))
        S.identity_done = True
    S.step += 1
    r = recorder().begin("engine.step", ENGINE, step=S.step)
    r.data = requests_index.StepData(core.scheduler)
    S.current = r
    return r


def _step_post(r: Range, result, error):
    S.current = None
    data: requests_index.StepData = r.data
    if S.finished:
        data.finished, S.finished = S.finished, []
    if result is not None:
        data.model_executed = bool(result[1])
    r.finalize = requests_index.INDEX.finalize_step
    recorder().end(r, error)
    S.prev_step_end = r.end_ns


def _schedule_pre(sched, args, kwargs):
    return recorder().begin("engine.schedule", ENGINE)


def _schedule_post(r: Range, so, error):
    rec = recorder()
    rec.end(r, error)
    step = S.current
    if so is None or step is None:
        return
    setattr(so, STAMP, (step.trace_id, step.span_id, step.step, r.start_ns, r.end_ns, *S.last_update,
                        S.prev_step_end, step.start_ns))
    data: requests_index.StepData = step.data
    data.batch = so
    sched = data.scheduler
    data.running, data.waiting = len(sched.running), len(sched.waiting)   # right after scheduling
    new = so.scheduled_new_reqs
    if new:
        reqs = data.scheduler.requests
        data.new_headers = [(n.req_id, getattr(reqs.get(n.req_id), "trace_headers", None)) for n in new]


def _update_pre(sched, args, kwargs):
    so = args[0] if args else kwargs.get("scheduler_output")
    stamp = getattr(so, STAMP, None)
    attrs = {"vllm.step.batch_id": stamp[2]} if stamp else None
    return recorder().begin("engine.update_from_output", ENGINE, attrs=attrs)


def _update_post(r: Range, result, error):
    recorder().end(r, error)
    S.last_update = (r.start_ns, r.end_ns)


def _free_request_pre(sched, args, kwargs):
    request = args[0] if args else kwargs["request"]
    S.finished.append(request.request_id)
    return None


def _executor_pre(name):
    def pre(executor, args, kwargs):
        step = S.current
        if step is None:
            return None
        return recorder().begin(name, ENGINE, parent=step.context, step=step.step, nested=False)
    return pre


def _executor_post(r: Range | None, result, error):
    if r is None:
        return
    rec = recorder()
    if error is None and isinstance(result, Future) and not result.done():
        result.add_done_callback(lambda f, r=r, rec=rec: rec.end(r, f.exception()))
    else:
        rec.end(r, error)


def _end(r, result, error):
    recorder().end(r, error)


_EXEC_MODULES = (("vllm.v1.executor.uniproc_executor", "UniProcExecutor"),
                 ("vllm.v1.executor.multiproc_executor", "MultiprocExecutor"))

HOOKS: list[Hook] = [
    Hook("engine.step", "vllm.v1.engine.core", "EngineCore.step", _step_pre, _step_post, ENGINE,
         "sync scheduling (vLLM 0.32 CPU)"),
    Hook("engine.step_with_batch_queue", "vllm.v1.engine.core", "EngineCore.step_with_batch_queue",
         _step_pre, _step_post, ENGINE, "async scheduling / PP (vLLM 0.26 H100)"),
    Hook("engine.schedule", "vllm.v1.core.sched.scheduler", "Scheduler.schedule", _schedule_pre,
         _schedule_post, ENGINE, "scheduling; stamps the SchedulerOutput with the step context"),
    Hook("engine.update_from_output", "vllm.v1.core.sched.scheduler", "Scheduler.update_from_output",
         _update_pre, _update_post, ENGINE, "turn model output into EngineCoreOutputs"),
    Hook("engine.free_request", "vllm.v1.core.sched.scheduler", "Scheduler._free_request",
         _free_request_pre, None, ENGINE, "request finished: closes its engine-side summary span"),
] + [
    Hook(f"engine.{m}.{cls}", mod, f"{cls}.{m}", _executor_pre(f"engine.{m}"), _executor_post, ENGINE,
         f"{cls}: dispatch until the output future resolves")
    for mod, cls in _EXEC_MODULES for m in ("execute_model", "sample_tokens")
]
