"""EngineCore process hooks: one span per engine step and its phases.

``engine.step`` wraps ``EngineCore.step`` or ``step_with_batch_queue`` (whichever vLLM bound as
``step_fn``); children: ``engine.schedule``, ``engine.execute_model`` and ``engine.sample_tokens``
(dispatch until the output future is done, so under async scheduling they may end in a later step)
and ``engine.update_from_output``. The scheduler output is stamped with the step's context so worker
processes parent their spans on it. The hot path takes timestamps and the step's counts
(``steps.facts.read_step``: work proportional to the requests that changed, not to the batch), and keeps
the schedule's and update's bounds in the step's record (``StepRecord``) rather than a record each;
attributes, links, those two phase spans and request spans are assembled on the export side (``steps.assemble``).
``update_from_output`` is a bounds hook (``hooks/bounds.py``): the step's post reads its bounds. ``schedule`` is one
whose buffer is a consumer: its front hands each call's bounds to ``scheduled`` at once. Where the worker runs in this
thread, the step's post also takes the worker's execution raw into the StepRecord (``_worker_bounds``; its C copy
``_cfront.worker_bounds`` where the extension was built).
"""
from __future__ import annotations

import logging
import sys
import time
import types
from collections import deque
from concurrent.futures import CancelledError, Future
from functools import partial

from vllm_w2ext import config
from vllm_w2ext.hooks import gpu_timing
from vllm_w2ext.hooks.bounds import EXECUTIONS, FORWARDS, LAUNCHES, MODE, SAMPLES, UPDATES
from vllm_w2ext.hooks.cost_budget import CostBudget
from vllm_w2ext.hooks.runner import GATE
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.steps.facts import (FACTS_FIRST, FACTS_NEW, FACTS_PREEMPTED, FACTS_RESUMED, STAMP_STEP, light_steps,
                                    read_step)
from vllm_w2ext.telemetry import identity, pipeline, selfcost
from vllm_w2ext.telemetry.pipeline import RECORDER, recorder
from vllm_w2ext.telemetry.recording import PHASE_MARKS, ROOT, new_span_id, new_trace_id, span_bits
from vllm_w2ext.telemetry.wire import (DATA, END, IV_END, IV_START, NESTED, ON_THREAD, SPAN_ID, START, TRACE_ID,
                                       open_range)
from vllm_w2ext.vocab import ENGINE, Attr, Span

# Attributes set on SchedulerOutput, read by the workers: the step's steps.facts.Stamp (a plain tuple in
# its field order: vLLM pickles it with the SchedulerOutput for worker processes), and when the
# EngineCore dispatched it to the executor (ns).
STAMP = "_w2ext_ctx"
DISPATCH = "_w2ext_dispatch"
LIGHT = object()                           # step pre's state for a light step (sampling)
_now = time.time_ns
log = logging.getLogger("vllm_w2ext")


class _State:
    """The EngineCore hooks' state, one instance (``S``). Every attribute is set in ``__init__``, none on the
    class: CPython 3.12 and 3.13 (not 3.11) do not specialize an instance's attribute load or store when its class
    has a plain attribute of the same name, so class-level defaults made each of the ~30 reads and writes per step a
    generic lookup through the instance's and the class's dicts (``benchmarks/results/cpu/state_attrs``). Slots: the
    C step post (``_cfront.step_post``) reads and writes them at their offsets."""
    __slots__ = ("step", "current", "facts", "finished", "sched", "waiting_type", "waiting_len", "pending",
                 "identity_done", "all_links", "update_start", "update_end", "update_batch", "schedule_start",
                 "schedule_end", "stamp", "prev_step_end", "sample", "want", "light_at", "light", "light_so",
                 "last_recorded", "light_executed", "light_tokens", "prefilling", "preempted", "t0")

    def __init__(self) -> None:
        self.step = 0
        self.current: list | None = None   # open engine.step range (None: none, or a light step; None after every step)
        self.facts = None                  # StepFacts of the open step (None: nothing scheduled; None after every step)
        self.finished: list = []           # Finished of each request freed since the last step ended
        self.sched = None                  # the Scheduler (queue lengths at step end)
        self.waiting_type = None           # the type of its waiting queue, and how to count it (``_count_waiting``)
        self.waiting_len = len
        self.pending = 0                   # requests running or waiting when the previous step ended
        self.identity_done = False
        self.all_links = False             # VLLM_W2EXT_STEP_LINKS=all: ship every scheduled id
        self.update_start = self.update_end = 0   # last update_from_output interval (ns)
        self.update_batch = -1             # with marks: the step whose output update_from_output is taking in
        # the open step's schedule bounds kept for its StepRecord (no marks, no error; start 0: none); its update's
        # are in bounds.UPDATES
        self.schedule_start = self.schedule_end = 0
        self.stamp = None                  # the open step's Stamp (None: nothing scheduled in it; None after every step)
        self.prev_step_end = 0
        self.sample = 1                    # VLLM_W2EXT_SAMPLE (set_sample)
        self.want = 1                      # the N the cost budget asks for (export thread); taken at a recorded step's end
        self.light_at = (False,)           # facts.light_steps(sample): light_at[n % sample], is step n light
        self.light = False                 # the open step is not recorded in full: counted, or bare at its end
        self.t0 = 0                        # a light step's start (ns), should it need recording after all
        self.light_so = None               # the light step's SchedulerOutput (None: nothing scheduled)
        # light steps since the last recorded one (its SkippedSteps, the idle ones by difference): the step number
        # recorded last, and the light steps that scheduled tokens and their tokens (counted at scheduling)
        self.last_recorded = 0
        self.light_executed = self.light_tokens = 0
        # Requests that may still change in a step that shows no other sign of it (see _resumes_or_completes_prompt),
        # kept from the recorded steps' facts (every step that changes a request is recorded):
        self.prefilling: set = set()       # first scheduled with part of their prompt, no first token yet
        self.preempted: set = set()        # preempted, not resumed yet

    def set_sample(self, every: int) -> None:
        """VLLM_W2EXT_SAMPLE=every: the step number's modulus and which remainders are light steps."""
        self.sample, self.light_at = every, light_steps(every)
        self.want = every

    def take_want(self) -> None:
        """vLLM's thread: run from the next step on at the N the cost budget asked for (``want`` is only read
        here: a write of the export thread's in between is taken at the next recorded step)."""
        every = self.want
        self.sample, self.light_at = every, light_steps(every)


S = _State()


# -- sampling (VLLM_W2EXT_SAMPLE=N) -------------------------------------------------------------------
# Steps are recorded in pairs, two consecutive steps in every N: the second one has a recorded
# predecessor, so its scheduler gap and device idle are measured. Any other step is light: its hooks
# take a timestamp and count it, nothing more; no stamp goes to the workers, so their hooks skip it too.
# A light step that changes a request's life (the request index must see every arrival, first token,
# preemption and finish) is recorded at its end as an ``engine.step`` span alone: its batch facts read at
# scheduling (while the scheduler still holds its requests), the requests freed in its update_from_output,
# no phases, no stamp, no worker spans. It stays light while it runs, so a large batch, where nearly every
# step starts or finishes a request, costs about what a light step costs (it used to be recorded in full:
# 74 us per step at ~850 requests per step on the H200 host with SAMPLE=64, results/h200/pyspy). Only the
# pairs are recorded in full, an even sample of the steps for the device time scaled up from them.
# Every step it does not record is still counted (steps.facts.SkippedSteps on the next recorded step).
# While a light step runs, the hooks that would only find it unrecorded are switched off (runner.GATE,
# the ``recorded_only`` hooks: update_from_output, the executor's and, in this process, the worker's).

try:                                               # read_step's scan of the batch for requests short of their first
    from vllm_w2ext.hooks._cfront import zero_positions    # token in C, where the extension was built (each step that
except ImportError:                                # brings new requests scans the whole batch)
    from vllm_w2ext.steps.facts import zero_positions


def _read_facts(so) -> tuple:
    """The StepFacts of a scheduled batch (``read_step`` with the scheduler's state); keeps the requests
    still prefilling and those preempted (work proportional to the requests that changed)."""
    sched = S.sched
    facts = read_step(so, sched.requests, len(sched.running), S.waiting_len(sched.waiting), S.all_links, S.prefilling,
                      S.preempted, zero_positions)
    preempted, resumed, new, first = facts[FACTS_PREEMPTED], facts[FACTS_RESUMED], facts[FACTS_NEW], facts[FACTS_FIRST]
    if preempted or resumed:
        S.preempted.update(preempted)
        S.preempted.difference_update(resumed)
    if new or first:
        S.prefilling.update(n[0] for n in new)
        S.prefilling.difference_update(first)
    return facts


def _count_waiting(queue) -> None:
    """How the hooks count the scheduler's waiting queue (``S.waiting_len``), once per queue type: vLLM's FCFS queue
    is a deque whose ``__len__`` is a Python method (``super().__len__()``: a frame and a super object on each of the
    two or three counts per step, 4 of the EngineCore main thread's 85 plugin samples per step at batch 1 and 6 of 49 at
    510 requests per step on an H100 host, results/h100/issue19_df1e1b6), so a deque is counted by deque's own
    ``__len__``: the number of requests in it. Any other queue (the priority queue's heap) by ``len``."""
    S.waiting_type = type(queue)
    S.waiting_len = deque.__len__ if isinstance(queue, deque) else len


def _forget(finished) -> None:
    """Finished requests (Finished tuples) can no longer resume or complete a prompt."""
    if S.prefilling or S.preempted:
        ids = [f[0] for f in finished]
        S.prefilling.difference_update(ids)
        S.preempted.difference_update(ids)


def _resumes_or_completes_prompt(cached) -> bool:
    """Does a batch's scheduled_cached_reqs resume a preempted request, or carry the last prompt chunk of one
    still prefilling (it may be one token: only its output count says)? A C-level scan of a per-request list,
    run only while a request could be found by it (vLLM 0.26 flags resumed requests in a list)."""
    if S.preempted and (getattr(cached, "resumed_req_ids", None) or
                        True in (getattr(cached, "resumed_from_preemption", None) or ())):
        return True
    if S.prefilling:
        out = getattr(cached, "num_output_tokens", None)
        if out is None or 0 in out:
            return True
    return False


def _record_light_step() -> list:
    """The light step recorded at its end after all: its range opened back at its start (off the thread's
    stack, on its track: nothing was nested in it). The gate stays as it is: the next step sets it."""
    S.light = False
    return open_range(Span.STEP, ENGINE, new_trace_id(), new_span_id(), 0, S.t0, S.step, None, ON_THREAD)


def _watch_cost(budget: CostBudget) -> None:
    """VLLM_W2EXT_COST_BUDGET: on the export thread, after each window, the N that keeps this process's plugin
    cost (hooks' time + export thread's CPU, bounded by the device's idle share where the worker's timer runs in
    this process: ``hooks.cost_budget``) under the budget; vLLM's thread takes it at
    its next recorded step's end. A log line per change: the first a warning (tracing thins out from there), the
    others at info level."""
    p = pipeline.get()
    changes = [0]

    def poll(rec) -> None:
        n = budget.update(time.monotonic(), selfcost.hook_wall_ns[0] / 1e9 + p.export_cpu_s, S.step,
                          tuple(gpu_timing.MEASURED))
        if n is not None:
            S.want = n
            changes[0] += 1
            idle = budget.idle_share
            (log.warning if changes[0] == 1 else log.info)(
                "vllm_w2ext: the plugin took %.2f %% of the EngineCore's time%s (budget %.2f %%): recording %s",
                budget.cost_share * 100, "" if idle is None else f", the device idled {idle * 100:.2f} %",
                budget.budget * 100, "every step" if n <= 2 else f"2 steps in every {n}")
    p.add_poller(poll, "cost_budget")


def _record_update(step: list, start: int, end: int, batch: int, error: BaseException) -> None:
    """A failed update_from_output of the step ``step``: an Interval of its own that names the error (a
    StepRecord's update bounds carry none)."""
    rec = RECORDER[0] or recorder()
    if len(rec.buf) < rec.capacity:
        rec.buf.append((Span.UPDATE, ENGINE, step[TRACE_ID], step[SPAN_ID], start, end, S.step,   # wire.Interval
                        {Attr.STEP_BATCH_ID: batch} if batch >= 0 else None, type(error).__name__))
    else:
        rec.dropped += 1


def _worker_bounds(stamp) -> tuple | None:
    """Where the worker runs on this thread (``bounds.MODE``): this step's execution as its bounds hooks left it, a
    ``WorkerBounds`` the export side makes the worker's spans of (``steps.assemble``); the GPU timer stopped as the
    worker's posts stop it. ``stamp``: the step's own (``S.stamp``: the worker executes what this step scheduled).
    None: nothing executed in this step. Each buffer holds one call per step (vLLM's step functions execute, sample
    and launch once per step); ``pop`` takes it, and any older ones go. The definition: where the C extension was
    built, the step's post runs its copy (``_cfront.worker_bounds``, ``read_worker_bounds``), held to this one by a
    unit test."""
    ex = EXECUTIONS
    if not ex:
        if SAMPLES:                                # a sample with no execution before it: not recorded (as the
            SAMPLES.clear()                        # worker's sample hook finds no execution to parent it on)
        return None
    e0, e1, so, e_err = ex.pop()
    if ex:
        ex.clear()
    launch, f0, f1, f_err = e0, 0, 0, None
    if FORWARDS:                                   # V1: the forward; on CUDA the device time starts there
        f0, f1, _, f_err = FORWARDS.pop()
        launch = f0
        if FORWARDS:
            FORWARDS.clear()
    if LAUNCHES:                                   # V2: the forward's launch
        launch = LAUNCHES.pop()[0]
        if LAUNCHES:
            LAUNCHES.clear()
    s0 = s1 = 0
    s_err = result = None
    if SAMPLES:
        s0, s1, result, s_err = SAMPLES.pop()
        if SAMPLES:
            SAMPLES.clear()
    if stamp is None:                              # not a step the EngineCore recorded (as the worker's hooks skip it)
        MODE.forget()
        return None
    prev = MODE.last_end
    MODE.last_end = s1 if s0 else e1
    stop = MODE.device_stop
    if stop is not None and e_err is None and s_err is None:   # as the worker's posts stop it (not after a failure)
        stop(stamp[STAMP_STEP], launch, result)
    return (stamp, prev, stop is not None, so.total_num_scheduled_tokens, e0, e1,        # WorkerBounds
            None if e_err is None else type(e_err).__name__, f0, f1, None if f_err is None else type(f_err).__name__,
            s0, s1, None if s_err is None else type(s_err).__name__)


try:                                               # the same in C where the extension was built (~110 bytecodes less
    from vllm_w2ext.hooks._cfront import worker_bounds as read_worker_bounds, worker_bounds_setup   # per step)
except ImportError:                                # (an extension from before it has no worker_bounds either)
    read_worker_bounds = _worker_bounds
else:
    worker_bounds_setup(EXECUTIONS, FORWARDS, LAUNCHES, SAMPLES, MODE, STAMP_STEP)


# -- the hooks -------------------------------------------------------------------------------------
def _step_pre(core, args, kwargs):
    if not S.identity_done:
        engine = getattr(core, "engine_index", 0)       # the DP rank (EngineCoreProc); 0 in-process
        identity.set_role(ENGINE, engine_index=engine, dp_rank=engine)
        settings = config.current()
        S.all_links = settings.step_links == "all"
        S.set_sample(settings.sample)
        if settings.cost_budget > 0:
            _watch_cost(CostBudget(settings.cost_budget, settings.sample))
        S.identity_done = True
        MODE.arrive(engine=True)
    S.sched = sched = core.scheduler               # for the schedule's consumer (``scheduled``), which gets no self
    if type(sched.waiting) is not S.waiting_type:
        _count_waiting(sched.waiting)
    S.step = n = S.step + 1
    if S.light_at[n % S.sample]:                   # S.current and S.facts are None (every step's post leaves them so)
        if not GATE.shut:
            GATE.close()
        S.light = True
        S.light_so = None
        S.t0 = _now()
        return LIGHT
    if GATE.shut:
        GATE.open()
    S.light = False
    # Through the recorder on the process's first step (making the recorder attaches NVTX, which sets the marks)
    # and while there are marks to push; else Recorder.begin's list for a root written out, a Python call less.
    rec = RECORDER[0]
    if rec is None or PHASE_MARKS[0]:
        r = S.current = (rec or recorder()).begin(Span.STEP, ENGINE, ROOT, None, n, ON_THREAD)
    else:
        r = S.current = [Span.STEP, ENGINE, span_bits(128) or 1, span_bits(64) or 1, 0, _now(), 0, n, None, None, None,
                         ON_THREAD, None]
    return r


def _step_post(r, result, error):
    if r is LIGHT:
        if S.facts is None and not S.finished and error is None:     # changed no request: counted (at scheduling)
            return
        r = _record_light_step()                   # it changed a request (or failed): recorded, alone
        so = S.light_so
        if S.facts is None and so is not None:     # requests freed in its update (or failed): scheduling counted
            S.light_executed -= 1                  # it as light; the batch read now
            S.light_tokens -= so.total_num_scheduled_tokens
            S.facts = _read_facts(so)
    executed = bool(result[1]) if result is not None else False
    S.current = None
    finished = ()
    if S.finished:
        finished, S.finished = tuple(S.finished), []
        _forget(finished)
    sched = S.sched
    S.pending = len(sched.running) + S.waiting_len(sched.waiting) if sched is not None else 1
    light = S.light_executed
    skipped = (light, S.step - S.last_recorded - 1 - light, S.light_tokens)                   # SkippedSteps
    S.last_recorded = S.step
    S.light_executed = S.light_tokens = 0
    u0 = u1 = 0
    batch = -1
    ups = UPDATES
    if ups:                                        # this step's update (from its bounds front, or its post)
        u0, u1, so, failed = ups.pop()
        if ups:
            ups.clear()
        S.update_start, S.update_end = u0, u1
        stamp = getattr(so, STAMP, None)
        batch = stamp[STAMP_STEP] if stamp is not None else -1
        if failed is not None:                     # an Interval of its own, naming its error
            _record_update(r, u0, u1, batch, failed)
            u0 = u1 = 0
            batch = -1
    r[DATA] = (S.facts, executed, finished, S.pending, skipped, S.schedule_start, S.schedule_end, u0, u1, batch,  # StepRecord
               S.sample, read_worker_bounds(S.stamp) if MODE.in_process else None)
    S.schedule_start = 0
    S.facts = S.stamp = None
    # Recorder.end written out when there are no marks to close and the buffer has room; else through it
    rec = RECORDER[0] or recorder()
    buf = rec.buf
    if error is None and r[NESTED] is not True and len(buf) < rec.capacity:
        r[END] = S.prev_step_end = _now()
        buf.append(r)
    else:
        rec.end(r, error)
        S.prev_step_end = r[END]
    if S.want != S.sample:                         # the cost budget moved N: from the next step on
        S.take_want()
    if MODE.ready:                                 # the worker runs on this thread: its bounds from the next step
        MODE.start()


class _HeldGlobals(types.ModuleType):
    """This module's type where the C hooks hold its globals ``HELD`` (``_cfront.hold_global``: inside vLLM a lookup in
    the module's dict runs cold, each step): a rebinding from outside (``engine_core.S = ...``, the tests'
    monkeypatch) reaches them too. Nothing in this module rebinds them."""

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name in HELD:
            hold_global(name, value)

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        if name in HELD:
            hold_global(name)


try:                                               # its common way in C where the extension was built (~160 bytecodes
    from vllm_w2ext.hooks._cfront import HELD as _HELD_NAMES, hold_global, step_post, step_post_setup   # less per
except ImportError:                                # step); every other step goes to it
    step_post = _step_post
else:
    HELD = frozenset(_HELD_NAMES)                  # the names the extension holds (its list; hold_global takes them)
    step_post_setup(globals(), _State, _step_post, STAMP, STAMP_STEP, NESTED, DATA, END, deque)   # takes HELD's values
    sys.modules[__name__].__class__ = _HeldGlobals
try:                                               # and its pre's (a recorded step's start, ~70 bytecodes less)
    from vllm_w2ext.hooks._cfront import step_pre, step_pre_setup
except ImportError:
    step_pre = _step_pre
else:
    step_pre_setup(_step_pre, span_bits, Span.STEP, ENGINE, ON_THREAD)


def _schedule_pre(sched, args, kwargs):
    """Where marks are wanted (or through the Python front's timed call): the schedule's start, or its marks."""
    S.sched = sched
    if S.light:
        return LIGHT                               # not None, so that post runs: it looks at the batch
    if PHASE_MARKS[0]:
        return (RECORDER[0] or recorder()).phase_begin(Span.SCHEDULE, ENGINE, S.step)
    return _now()


def _schedule_post(t0, so, error):
    """``_schedule_pre``'s end: the schedule's bounds to ``scheduled``, its Interval recorded here first where it has
    marks to close (``MARKED``: kept out of the step's record)."""
    if t0 is LIGHT or type(t0) is int:
        scheduled((t0 if t0 is not LIGHT else 0, _now(), so, error))
        return
    step = S.current
    iv = (RECORDER[0] or recorder()).phase_end(t0, Span.SCHEDULE, ENGINE, step[TRACE_ID] if step else 0,
                                               step[SPAN_ID] if step else 0, S.step if step else -1, error)
    if so is not None and step is not None:
        scheduled((iv[IV_START], iv[IV_END], so, MARKED))


MARKED = object()       # as a schedule's error in ``scheduled``: its Interval is recorded (it had marks to close)


def _record_schedule(step: list | None, start: int, end: int, error: BaseException | None) -> None:
    """A schedule outside a recorded step, or a failed one: an Interval of its own (a StepRecord's schedule bounds
    carry no error)."""
    rec = RECORDER[0] or recorder()
    if len(rec.buf) < rec.capacity:
        rec.buf.append((Span.SCHEDULE, ENGINE, step[TRACE_ID] if step else 0, step[SPAN_ID] if step else 0,  # Interval
                        start, end, S.step if step else -1, None, None if error is None else type(error).__name__))
    else:
        rec.dropped += 1


def scheduled(bounds) -> None:
    """``engine.schedule``'s consumer: a bounds hook (``hooks/bounds.py``) whose buffer is this function, so its C
    front calls it once, after vLLM's schedule, with the call's ``Bounds`` (start, end, the SchedulerOutput or None,
    the error), where ``_schedule_pre`` and ``_schedule_post`` took two Python calls and a clock read. Where marks are
    wanted those two run and hand their bounds on to this (``_schedule_post``).

    On a light step: counts it, or reads its facts where it changes a request (recorded at its end). On a recorded
    one: stamps the SchedulerOutput with the step's context (the workers' spans parent on it), keeps the bounds for
    the step's StepRecord and reads the batch's StepFacts. A fault here goes to the hook's runner (``fail``), as a
    ``post``'s does: the front's own note of the bounds would drop it silently."""
    try:
        so = bounds[2]
        if S.light:
            if so is None:
                return
            tokens = so.total_num_scheduled_tokens
            if not tokens:
                return
            S.light_so = so
            # Does it start, preempt, resume or finish a request, or carry prefill tokens? Attribute checks (the
            # steady decode of any batch costs the same), written out here: this runs on most steps
            if (so.scheduled_new_reqs or so.preempted_req_ids or so.finished_req_ids or S.finished
                    or (tokens != len(so.num_scheduled_tokens) and not so.scheduled_spec_decode_tokens)
                    or ((S.preempted or S.prefilling) and _resumes_or_completes_prompt(so.scheduled_cached_reqs))):
                S.facts = _read_facts(so)          # recorded at the step's end (see above): its facts now
                return
            S.light_executed += 1                  # counted (SkippedSteps), unless its update frees a request
            S.light_tokens += tokens
            return
        step = S.current
        t0, end, _, error = bounds
        if error is not None:
            if error is not MARKED:                # failed: an Interval of its own, naming its error
                _record_schedule(step, t0, end, error)
                return
        elif step is None or so is None:           # scheduled outside a recorded step
            _record_schedule(step, t0, end, None)
            return
        else:                                      # kept for the step's StepRecord, no Interval
            S.schedule_start = t0
            S.schedule_end = end
        S.stamp = stamp = (step[TRACE_ID], step[SPAN_ID], S.step, t0, end, S.update_start, S.update_end,   # Stamp
                           S.prev_step_end, step[START], S.pending)
        setattr(so, STAMP, stamp)
        # The steady decode step (nothing new, prefilling or preempted; one token each) answered here, as read_step's
        # first case answers it, without the two Python calls to get there (~2.4k instructions of a recorded step)
        nst = so.num_scheduled_tokens
        total = so.total_num_scheduled_tokens
        if (total == len(nst) and not (so.scheduled_new_reqs or S.prefilling or S.preempted or so.preempted_req_ids
                                       or S.all_links)):
            sched = S.sched                        # (the step's pre took it and counted its waiting queue's type)
            S.facts = (total, 0, total, (), (), 0, len(so.finished_req_ids), (), (), None, len(sched.running),  # StepFacts
                       S.waiting_len(sched.waiting))
        else:
            S.facts = _read_facts(so)
    except Exception as e:
        _fail_schedule(e)


def _fail_schedule(error: Exception) -> None:
    from vllm_w2ext.hooks import INSTRUMENTOR
    runner = INSTRUMENTOR.runners.get("engine.schedule")
    if runner is not None:
        runner.fail(error)
    else:
        log.error("vllm_w2ext: engine.schedule's consumer raised %r", error)


class _Consumer:
    """A bounds hook's buffer that hands each Bounds tuple to a function at once (its ``append``)."""
    __slots__ = ("append",)

    def __init__(self, fn) -> None:
        self.append = fn


try:                                               # a recorded step's schedule in C where the extension was built
    from vllm_w2ext.hooks._cfront import scheduled as _scheduled_c, scheduled_setup   # (the steady decode's facts
                                                   # too; other batches' from _read_facts; a Python call less a step)
except ImportError:
    schedule_consumer = scheduled
else:
    scheduled_setup(scheduled, TRACE_ID, SPAN_ID, START)
    schedule_consumer = _scheduled_c
SCHEDULES = _Consumer(schedule_consumer)


def _update_pre(sched, args, kwargs):
    """A bounds hook: its front notes its calls' bounds (hooks/bounds.py). This and ``_update_post`` run where marks
    are wanted: the batch it takes in, its mark, and an Interval of its own."""
    if S.light:
        return None                                # nothing to close: post does not run
    so = args[0] if args else kwargs.get("scheduler_output")
    stamp = getattr(so, STAMP, None)
    S.update_batch = stamp[STAMP_STEP] if stamp is not None else -1
    return (RECORDER[0] or recorder()).phase_begin(Span.UPDATE, ENGINE, S.step)


def _update_post(t0, result, error):
    step = S.current
    batch = S.update_batch
    iv = (RECORDER[0] or recorder()).phase_end(
        t0, Span.UPDATE, ENGINE, step[TRACE_ID] if step else 0, step[SPAN_ID] if step else 0,
        S.step if step else -1, error, {Attr.STEP_BATCH_ID: batch} if batch >= 0 else None)
    S.update_start, S.update_end = iv[IV_START], iv[IV_END]


def _free_request_pre(sched, args, kwargs):
    request = args[0] if args else kwargs["request"]
    # Finished; the status's name through its ``_name_`` (an enum member's own attribute: ``.name`` is a
    # property, a Python call per request)
    S.finished.append((request.request_id, request.status._name_, request.num_output_tokens))
    return None


try:                                               # the same in C where the extension was built (a Python frame less
    from vllm_w2ext.hooks._cfront import free_request_pre, free_request_setup   # per finished request)
except ImportError:
    free_request_pre = _free_request_pre
else:
    free_request_setup(_free_request_pre)


def _executor_pre(name, dispatch: bool):
    """MultiprocExecutor's dispatch (``execute_model`` / ``sample_tokens``), from the call until its output future is
    done: a free-standing range, child of the recorded step. Without NVTX it is ``Recorder.begin``'s list written out
    (a keyword call and its branches less: each of the two ran ~5-7 µs a step cold in vLLM's CPU layout,
    ``benchmarks/results/cpu/layout_ab_343606d``)."""
    def pre(executor, args, kwargs):
        step = S.current
        if step is None:
            return None
        rec = RECORDER[0] or recorder()
        if rec.nvtx is None:                       # wire.open_range's order; nested False: no thread stack
            r = [name, ENGINE, step[TRACE_ID], span_bits(64) or 1, step[SPAN_ID], _now(), 0, S.step, None, None, None,
                 False, None]
        else:
            r = rec.begin(name, ENGINE, (step[TRACE_ID], step[SPAN_ID]), None, S.step, False)
        if dispatch and args:                      # execute_model(scheduler_output, ...)
            setattr(args[0], DISPATCH, r[START])
        return r
    return pre


def _executor_post(r: list | None, result, error):
    """The range ends when the output future is done, on the thread that sets it (at once, on this one, where it
    already is), naming the future's exception; a call that raised (or returned no future) ends it now. No ``done()``
    first: ``add_done_callback`` calls back at once on a done future, and each of the two takes the future's lock."""
    if r is None:
        return
    if error is None and isinstance(result, Future):
        result.add_done_callback(partial(_dispatch_done, r))
    else:
        (RECORDER[0] or recorder()).end(r, error)


def _dispatch_done(r: list, future: Future) -> None:
    try:
        error = future.exception()
    except CancelledError as e:                    # (a cancelled future raises it here)
        error = e
    (RECORDER[0] or recorder()).end(r, error)


# Executors that hand the step to worker processes: their dispatch-until-output spans show the trip
# there and back. UniProcExecutor runs the worker inline in the EngineCore's thread (TP=1 on the GPU):
# its span would repeat worker.execute_model at the cost of two more hooked calls per step.
_EXEC_MODULES = (("vllm.v1.executor.multiproc_executor", "MultiprocExecutor"),)

HOOKS: list[Hook] = [
    Hook("engine.step", "vllm.v1.engine.core", "EngineCore.step", step_pre, step_post, ENGINE,
         "sync scheduling (vLLM 0.32 CPU)", clock="engine"),
    Hook("engine.step_with_batch_queue", "vllm.v1.engine.core", "EngineCore.step_with_batch_queue",
         step_pre, step_post, ENGINE, "async scheduling / PP (vLLM 0.26 H100)", clock="engine"),
    Hook("engine.schedule", "vllm.v1.core.sched.scheduler", "Scheduler.schedule", _schedule_pre,
         _schedule_post, ENGINE, "scheduling; stamps the SchedulerOutput with the step context",
         bounds=SCHEDULES, bounds_keep="result"),
    Hook("engine.update_from_output", "vllm.v1.core.sched.scheduler", "Scheduler.update_from_output",
         _update_pre, _update_post, ENGINE, "turn model output into EngineCoreOutputs", recorded_only=True,
         bounds=UPDATES, bounds_keep="arg"),
    Hook("engine.free_request", "vllm.v1.core.sched.scheduler", "Scheduler._free_request",
         free_request_pre, None, ENGINE, "request finished: closes its engine-side summary span"),
] + [
    Hook(f"engine.{m}.{cls}", mod, f"{cls}.{m}", _executor_pre(span, span == Span.EXECUTE), _executor_post, ENGINE,
         f"{cls}: dispatch until the output future resolves", recorded_only=True)
    for mod, cls in _EXEC_MODULES for m, span in (("execute_model", Span.EXECUTE), ("sample_tokens", Span.SAMPLE))
]
