"""EngineCore process hooks: one span per engine step and its phases.

``engine.step`` wraps ``EngineCore.step`` or ``step_with_batch_queue`` (whichever vLLM bound as
``step_fn``); children: ``engine.schedule``, ``engine.execute_model`` and ``engine.sample_tokens``
(dispatch until the output future is done, so under async scheduling they may end in a later step)
and ``engine.update_from_output``. The scheduler output is stamped with the step's context so worker
processes parent their spans on it. The hot path takes timestamps and the step's counts
(``steps.facts.read_step``: work proportional to the requests that changed, not to the batch);
attributes, links and request spans are assembled on the export side (``steps.assemble``).
"""
from __future__ import annotations

from concurrent.futures import Future

from vllm_w2ext import config
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.steps.facts import Stamp, StepRecord, read_step
from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.pipeline import recorder
from vllm_w2ext.telemetry.wire import DATA, END, SPAN_ID, START, TRACE_ID
from vllm_w2ext.vocab import ENGINE, Attr, Span

# Attribute set on SchedulerOutput (a steps.facts.Stamp), read by the workers.
STAMP = "_w2ext_ctx"


class _State:
    step = 0
    current: list | None = None            # open engine.step range
    facts = None                           # StepFacts of the open step (None: nothing scheduled)
    finished: list[str] = []               # request ids freed since the last step ended
    identity_done = False
    all_links = False                      # VLLM_W2EXT_STEP_LINKS=all: ship every scheduled id
    last_update = (0, 0)                   # last update_from_output interval (ns)
    prev_step_end = 0


S = _State()


def _step_pre(core, args, kwargs):
    if not S.identity_done:
        identity.set_role(ENGINE, engine_index=getattr(core, "engine_index", 0))
        S.all_links = config.current().step_links == "all"
        S.identity_done = True
    S.step += 1
    S.facts = None
    r = S.current = recorder().begin(Span.STEP, ENGINE, step=S.step)
    return r


def _step_post(r: list, result, error):
    S.current = None
    finished = ()
    if S.finished:
        finished, S.finished = tuple(S.finished), []
    r[DATA] = StepRecord(S.facts, bool(result[1]) if result is not None else False, finished)
    recorder().end(r, error)
    S.prev_step_end = r[END]


def _schedule_pre(sched, args, kwargs):
    return sched, recorder().begin(Span.SCHEDULE, ENGINE)


def _new_headers(sched):
    reqs = sched.requests
    return lambda ids: [getattr(reqs.get(i), "trace_headers", None) for i in ids]


def _schedule_post(state, so, error):
    sched, r = state
    recorder().end(r, error)
    step = S.current
    if so is None or step is None:
        return
    setattr(so, STAMP, Stamp(step[TRACE_ID], step[SPAN_ID], S.step, r[START], r[END], *S.last_update,
                             S.prev_step_end, step[START]))
    S.facts = read_step(so, len(sched.running), len(sched.waiting), _new_headers(sched), S.all_links)


def _update_pre(sched, args, kwargs):
    so = args[0] if args else kwargs.get("scheduler_output")
    stamp = getattr(so, STAMP, None)
    return recorder().begin(Span.UPDATE, ENGINE, attrs={Attr.STEP_BATCH_ID: stamp.step} if stamp else None)


def _update_post(r: list, result, error):
    recorder().end(r, error)
    S.last_update = (r[START], r[END])


def _free_request_pre(sched, args, kwargs):
    request = args[0] if args else kwargs["request"]
    S.finished.append(request.request_id)
    return None


def _executor_pre(name):
    def pre(executor, args, kwargs):
        step = S.current
        if step is None:
            return None
        return recorder().begin(name, ENGINE, parent=(step[TRACE_ID], step[SPAN_ID]), step=S.step, nested=False)
    return pre


def _executor_post(r: list | None, result, error):
    if r is None:
        return
    rec = recorder()
    if error is None and isinstance(result, Future) and not result.done():
        result.add_done_callback(lambda f, r=r, rec=rec: rec.end(r, f.exception()))
    else:
        rec.end(r, error)


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
    Hook(f"engine.{m}.{cls}", mod, f"{cls}.{m}", _executor_pre(span), _executor_post, ENGINE,
         f"{cls}: dispatch until the output future resolves")
    for mod, cls in _EXEC_MODULES for m, span in (("execute_model", Span.EXECUTE), ("sample_tokens", Span.SAMPLE))
]
