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
from vllm_w2ext.steps.facts import STAMP_STEP, read_step
from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.pipeline import recorder
from vllm_w2ext.telemetry.wire import DATA, END, IV_END, IV_START, SPAN_ID, START, TRACE_ID
from vllm_w2ext.vocab import ENGINE, Attr, Span

# Attributes set on SchedulerOutput, read by the workers: the step's steps.facts.Stamp (a plain tuple in
# its field order: vLLM pickles it with the SchedulerOutput for worker processes), and when the
# EngineCore dispatched it to the executor (ns).
STAMP = "_w2ext_ctx"
DISPATCH = "_w2ext_dispatch"


class _State:
    step = 0
    current: list | None = None            # open engine.step range
    facts = None                           # StepFacts of the open step (None: nothing scheduled)
    finished: list = []                    # Finished of each request freed since the last step ended
    sched = None                           # the Scheduler (queue lengths at step end)
    pending = 0                            # requests running or waiting when the previous step ended
    identity_done = False
    all_links = False                      # VLLM_W2EXT_STEP_LINKS=all: ship every scheduled id
    last_update = (0, 0)                   # last update_from_output interval (ns)
    update_batch = -1                      # the step whose output update_from_output is taking in
    prev_step_end = 0


S = _State()


def _step_pre(core, args, kwargs):
    if not S.identity_done:
        engine = getattr(core, "engine_index", 0)       # the DP rank (EngineCoreProc); 0 in-process
        identity.set_role(ENGINE, engine_index=engine, dp_rank=engine)
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
    sched = S.sched
    S.pending = len(sched.running) + len(sched.waiting) if sched is not None else 1
    r[DATA] = (S.facts, bool(result[1]) if result is not None else False, finished, S.pending)   # StepRecord
    recorder().end(r, error)
    S.prev_step_end = r[END]


def _schedule_pre(sched, args, kwargs):
    S.sched = sched
    return recorder().phase_begin(Span.SCHEDULE, ENGINE, S.step)


def _schedule_post(t0, so, error):
    step = S.current
    if step is None:                               # scheduled outside a recorded step
        recorder().phase_end(t0, Span.SCHEDULE, ENGINE, 0, 0, -1, error)
        return
    iv = recorder().phase_end(t0, Span.SCHEDULE, ENGINE, step[TRACE_ID], step[SPAN_ID], S.step, error)
    if so is None:
        return
    setattr(so, STAMP, (step[TRACE_ID], step[SPAN_ID], S.step, iv[IV_START], iv[IV_END], *S.last_update,   # Stamp
                        S.prev_step_end, step[START], S.pending))
    sched = S.sched
    S.facts = read_step(so, sched.requests, len(sched.running), len(sched.waiting), S.all_links)


def _update_pre(sched, args, kwargs):
    so = args[0] if args else kwargs.get("scheduler_output")
    stamp = getattr(so, STAMP, None)
    S.update_batch = stamp[STAMP_STEP] if stamp is not None else -1
    return recorder().phase_begin(Span.UPDATE, ENGINE, S.step)


def _update_post(t0, result, error):
    step = S.current
    batch = S.update_batch
    iv = recorder().phase_end(t0, Span.UPDATE, ENGINE, step[TRACE_ID] if step else 0, step[SPAN_ID] if step else 0,
                              S.step if step else -1, error, {Attr.STEP_BATCH_ID: batch} if batch >= 0 else None)
    S.last_update = (iv[IV_START], iv[IV_END])


def _free_request_pre(sched, args, kwargs):
    request = args[0] if args else kwargs["request"]
    S.finished.append((request.request_id, request.status.name, request.num_output_tokens))   # Finished
    return None


def _executor_pre(name, dispatch: bool):
    def pre(executor, args, kwargs):
        step = S.current
        if step is None:
            return None
        r = recorder().begin(name, ENGINE, parent=(step[TRACE_ID], step[SPAN_ID]), step=S.step, nested=False)
        if dispatch and args:                      # execute_model(scheduler_output, ...)
            setattr(args[0], DISPATCH, r[START])
        return r
    return pre


def _executor_post(r: list | None, result, error):
    if r is None:
        return
    rec = recorder()
    if error is None and isinstance(result, Future) and not result.done():
        result.add_done_callback(lambda f, r=r, rec=rec: rec.end(r, f.exception()))
    else:
        rec.end(r, error)


# Executors that hand the step to worker processes: their dispatch-until-output spans show the trip
# there and back. UniProcExecutor runs the worker inline in the EngineCore's thread (TP=1 on the GPU):
# its span would repeat worker.execute_model at the cost of two more hooked calls per step.
_EXEC_MODULES = (("vllm.v1.executor.multiproc_executor", "MultiprocExecutor"),)

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
    Hook(f"engine.{m}.{cls}", mod, f"{cls}.{m}", _executor_pre(span, span == Span.EXECUTE), _executor_post, ENGINE,
         f"{cls}: dispatch until the output future resolves")
    for mod, cls in _EXEC_MODULES for m, span in (("execute_model", Span.EXECUTE), ("sample_tokens", Span.SAMPLE))
]
