"""What one engine step scheduled, read from vLLM's ``SchedulerOutput`` on the hot path.

Work here is proportional to the requests that *changed* in this step (new, preempted, resumed,
finished), never to the batch: token counts come from ``total_num_scheduled_tokens`` and the few
requests whose tokens are prefill, found with C-level scans (``list.index``, ``compress``), not a Python
loop over the batch. Duck-typed on the output's attributes, so it serves vLLM 0.26 to 0.33."""
from __future__ import annotations

import struct
from itertools import compress
from typing import NamedTuple

# On vLLM's threads these records are built as PLAIN tuples in the NamedTuple's field order: a plain
# tuple is built and serialized at C speed (``wire.encode_frame``), a NamedTuple is pickled
# through a Python-level __reduce__ (measured: 13.5 µs of the export thread's time per step with
# NamedTuples on the wire) and makes the whole frame fall back to pickle. The classes
# below define the field order; the export side reads the tuples back with ``step_record`` and
# ``execution_record``.


class Stamp(NamedTuple):
    """The EngineCore's step context, set on the ``SchedulerOutput`` that travels to the workers
    (pickled by vLLM with it), so worker spans parent on the step and split the gap before it."""
    trace_id: int             # the engine step's span context
    span_id: int
    step: int
    schedule_start: int       # this step's Scheduler.schedule (ns, wall clock)
    schedule_end: int
    update_start: int         # the last update_from_output before this step's schedule
    update_end: int
    prev_step_end: int        # end of the previous engine step
    step_start: int           # start of this engine step
    prev_pending: int         # requests running or waiting when the previous step ended (0: no work)


# Positions in the stamp tuple the workers read (derived from Stamp, never written twice).
STAMP_TRACE_ID, STAMP_SPAN_ID, STAMP_STEP = (Stamp._fields.index(f) for f in ("trace_id", "span_id", "step"))


class NewRequest(NamedTuple):
    id: str
    headers: dict | None      # W3C trace headers (the front end's request span)
    arrival_s: float          # when the front end received it (wall clock, s)
    prompt_tokens: int


class StepFacts(NamedTuple):
    """Wire format of one step's batch (EngineCore -> its export process)."""
    num_reqs: int
    prefill_tokens: int
    decode_tokens: int
    preempted: tuple          # request ids preempted in this step
    resumed: tuple            # request ids resumed from preemption in this step
    resumed_tokens: int       # tokens those resumed requests recompute
    finished_before: int      # requests finished since the previous schedule (vLLM's count)
    new: tuple                # NewRequest of each request first scheduled in this step
    first_tokens: tuple       # request ids whose prompt is complete after this step (first token)
    scheduled: tuple | None   # every scheduled request id (only with VLLM_W2EXT_STEP_LINKS=all)
    running: int              # scheduler queues right after scheduling
    waiting: int


# Positions in the StepFacts tuple the EngineCore reads back on the hot path (derived, never written twice).
FACTS_PREEMPTED, FACTS_RESUMED, FACTS_NEW, FACTS_FIRST = \
    (StepFacts._fields.index(f) for f in ("preempted", "resumed", "new", "first_tokens"))


class Finished(NamedTuple):
    id: str
    status: str               # vLLM's RequestStatus name, e.g. FINISHED_STOPPED
    output_tokens: int


def zero_positions(counts) -> list[int]:
    """Where a per-request list of counts holds 0: one C-level scan (``list.index`` from each hit on), not a
    Python call per request as ``compress(range(n), map((0).__eq__, counts))`` makes. The zeros are few
    (requests still short of their first token), the list is the batch (``benchmarks/read_step_cost.py``)."""
    out, i, at = [], -1, counts.index
    try:
        while True:
            i = at(0, i + 1)
            out.append(i)
    except ValueError:
        return out


def _prompt_done(reqs: dict, rid: str, computed: int, scheduled: int) -> bool:
    r = reqs.get(rid)
    return r is not None and computed + scheduled >= r.num_prompt_tokens


def read_step(so, reqs: dict, running: int, waiting: int, all_ids: bool, prefilling=False,
              preempted=True, scan=zero_positions) -> tuple:
    """Facts of a ``SchedulerOutput`` as a StepFacts-ordered tuple; ``reqs``: the scheduler's request
    id -> Request; ``prefilling`` (truthy, e.g. a non-empty set of ids): a request scheduled before may still
    be short of its prompt (the EngineCore keeps track), so a batch of one token each is looked through for a
    last prompt token; ``preempted`` (truthy): a request may be preempted now, so one may resume in this step
    (the EngineCore keeps track; falsy: none can). Only their truth is read: the EngineCore passes its sets.
    ``scan``: ``zero_positions`` or its twin (the EngineCore passes the C one where it was built).

    The steady decode step (no new request, none prefilling, none preempted now or before, one token each)
    is answered first, from three attribute reads and a length: every request decodes one token. It is
    most steps of any run, so on a recorded step ``hooks.engine_core``'s schedule hook answers it itself without
    calling this (its twin, held to this case field for field by ``tests/unit/test_phase_intervals.py``); a change
    here goes there too.

    Decode tokens: one per cached request that already has output tokens and was not resumed (vLLM
    schedules a decoding request for exactly one token): the cached requests less those with none (found with
    ``list.index``) and the resumed, unless every request got one token and none can be prefilling (nothing to
    count: the steady decode state costs O(1)); with
    speculative decoding their scheduled tokens are summed instead (drafts count as decode). Prefill: the rest
    (new requests, chunked prefills, recomputed resumed requests). Per-request work only for new,
    resumed and still-prefilling requests."""
    nst: dict = so.num_scheduled_tokens
    total = so.total_num_scheduled_tokens
    new_reqs = so.scheduled_new_reqs
    if not (new_reqs or prefilling or preempted or so.preempted_req_ids) and total == len(nst):
        return (total, 0, total, (), (), 0, len(so.finished_req_ids), (), (),   # StepFacts (total = len(nst))
                tuple(nst) if all_ids else None, running, waiting)
    get = nst.__getitem__
    cached = so.scheduled_cached_reqs
    resumed = getattr(cached, "resumed_req_ids", None)      # vLLM >= 0.27: a set of ids
    if resumed is not None:
        resumed = tuple(resumed)
    else:                                                    # 0.26: one bool per cached request
        flags = getattr(cached, "resumed_from_preemption", None)
        resumed = tuple(compress(cached.req_ids, flags)) if flags else ()
    out_toks = getattr(cached, "num_output_tokens", None)
    first: list[str] = []
    new = []
    for n in new_reqs:
        rid = n.req_id
        r = reqs.get(rid)
        prompt = r.num_prompt_tokens if r is not None else 0
        new.append((rid, getattr(r, "trace_headers", None), getattr(r, "arrival_time", 0.0), prompt))   # NewRequest
        if n.num_computed_tokens + nst[rid] >= prompt:
            first.append(rid)
    if out_toks is None:                        # no per-request output counts: new requests are the prefill
        prefill = sum(nst[n[0]] for n in new)
    elif not new and total == len(nst) and not resumed and not prefilling:
        prefill = 0                             # one token each, no prompt unfinished: all decoding (O(1))
    else:
        zeros = scan(out_toks)                  # requests still prefilling (no output token yet)
        if so.scheduled_spec_decode_tokens:
            decode = sum(map(get, compress(cached.req_ids, out_toks))) - sum(map(get, resumed))
            prefill = total - decode
        else:
            prefill = total - (len(out_toks) - len(zeros) - len(resumed))
        if zeros:                               # chunked prefills going on: which complete now
            ids, computed = cached.req_ids, cached.num_computed_tokens
            for i in zeros:
                if _prompt_done(reqs, ids[i], computed[i], nst[ids[i]]):
                    first.append(ids[i])
    preempted = tuple(so.preempted_req_ids or ())
    return (len(nst), prefill, total - prefill, preempted, resumed,                     # StepFacts
            sum(map(get, resumed)) if resumed else 0, len(so.finished_req_ids), tuple(new),
            tuple(first), tuple(nst) if all_ids else None, running, waiting)


SAMPLE_PAIR = 2      # VLLM_W2EXT_SAMPLE=N records this many consecutive steps in every N (N <= 2: every step)


def sampled(every: int) -> bool:
    """Does VLLM_W2EXT_SAMPLE=every leave steps unrecorded?"""
    return every > SAMPLE_PAIR


def sampled_out(n: int, every: int) -> bool:
    """Is the n-th step left unrecorded by VLLM_W2EXT_SAMPLE=every (all but two consecutive in every N)?
    The test of ``sampled`` written out; the hooks (EngineCore, front end) index ``light_steps`` instead."""
    return every > SAMPLE_PAIR and n % every >= SAMPLE_PAIR


def light_steps(every: int) -> tuple:
    """``sampled_out`` of each step number modulo ``every``: the EngineCore tests step n with
    ``light_steps(every)[n % every]``, a tuple index instead of a Python call on every step."""
    return tuple(sampled_out(i, every) for i in range(max(every, 1)))


class SkippedSteps(NamedTuple):
    """Steps the EngineCore only counted (``VLLM_W2EXT_SAMPLE``) since the previous recorded step. They
    scheduled decode tokens only (a step with prefill tokens or request changes is recorded)."""
    executed: int                 # light steps that ran the model
    idle: int                     # light steps that did not
    decode_tokens: int            # tokens they scheduled (and a recorded step's own, when it has no facts)


NO_SKIPPED = SkippedSteps(0, 0, 0)


class StepRecord(NamedTuple):
    """The raw facts an ``engine.step`` range carries to the export side, its schedule and update phases
    included: without marks to close or an error to name the hooks keep their bounds here instead of
    appending an Interval each, and the export side makes them the step's ``engine.schedule`` and
    ``engine.update_from_output`` spans (``steps.assemble``). Start 0: not kept here (not run in this step, or
    recorded as an Interval of its own)."""
    facts: StepFacts | None       # None: nothing was scheduled in this step, or it was recorded at its end
    model_executed: bool
    finished: tuple               # Finished of each request freed during this step
    pending: int                  # requests running or waiting when the step ended
    skipped: SkippedSteps = NO_SKIPPED   # steps only counted before this one (sampling)
    schedule_start: int = 0       # Scheduler.schedule in this step (ns)
    schedule_end: int = 0
    update_start: int = 0         # Scheduler.update_from_output in this step (ns)
    update_end: int = 0
    update_batch: int = -1        # the step whose output that update took in (vllm.step.batch_id); -1: unknown
    every: int = 1                # VLLM_W2EXT_SAMPLE's N in effect for this step (the cost budget moves it)
    worker: "WorkerBounds | None" = None   # the worker's execution in this step, where it runs on this thread


class WorkerBounds(NamedTuple):
    """Where the worker runs in the EngineCore's thread (TP=1 on the GPU, ``hooks/bounds.py``), its execution
    in a step as its bounds hooks noted it: what the worker's hooks record elsewhere as a ``worker.execute_model``
    range (with an ExecutionRecord) and its forward and sample intervals, which the export side makes of it.
    Errors by their type's name; a phase's start 0: it did not run."""
    stamp: Stamp                  # the executed SchedulerOutput's
    prev_end: int                 # end of the previous execution read from bounds (0: none to measure from)
    cuda: bool                    # timed with CUDA events (device samples follow)
    tokens: int
    execute_start: int
    execute_end: int
    execute_error: str | None
    forward_start: int            # the V1 runner's forward
    forward_end: int
    forward_error: str | None
    sample_start: int
    sample_end: int
    sample_error: str | None


class DeviceSample(NamedTuple):
    """One forward on the GPU's own timeline (CUDA events), resolved a step or two later."""
    step: int
    launch_ns: int            # wall clock when the step's first GPU event was recorded
    busy_s: float             # GPU time of the step
    idle_s: float             # GPU idle between the previous step's end and this one's start


class ExecutionRecord(NamedTuple):
    """The raw facts a ``worker.execute_model`` range carries: the step's stamp, the end of the
    previous model execution on this worker (0 for the first), and when the EngineCore dispatched the
    step. Its GPU sample follows in a ``Span.DEVICE_SAMPLES`` record (the export thread resolves it)."""
    stamp: Stamp
    prev_end: int
    dispatch_ns: int
    cuda: bool                # the worker times its steps with CUDA events (device samples follow)
    tokens: int = -1          # tokens scheduled in the step (the span's vllm.worker.num_tokens); -1: not known


# The StepRecord as raw values: what the engine step's post in C (``hooks/_cfront.c``, RAW_STEP_N there) writes for a
# step that names no error, ``(facts, stamp, raw)`` or, where it freed requests, ``(facts, stamp, raw, finished)``: the
# StepFacts, the worker's Stamp (None where the worker did not run on the EngineCore's thread) and the freed requests'
# Finished tuples by reference, the rest int64 values in this order, written where they are taken (the bounds hooks'
# Slots) rather than boxed into ints and three tuples on vLLM's thread, and read back on the export side
# (``step_record``).
RAW_STEP_FIELDS = ("model_executed", "pending", "skipped_executed", "skipped_idle", "skipped_decode_tokens",
                   "schedule_start", "schedule_end", "update_start", "update_end", "update_batch", "every", "worker",
                   # the worker's execution (WorkerBounds), where ``worker`` is 1
                   "prev_end", "cuda", "tokens", "execute_start", "execute_end", "forward_start", "forward_end",
                   "sample_start", "sample_end")
RAW_STEP = struct.Struct("=%dq" % len(RAW_STEP_FIELDS))   # native order: written and read on one machine (the pipe)


# -- the export side: wire tuples back to named records (NamedTuples pass through unchanged) ----------
def step_facts(t: tuple) -> StepFacts:
    return StepFacts(*t[:FACTS_NEW], tuple(NewRequest._make(n) for n in t[FACTS_NEW]), *t[FACTS_NEW + 1:])


def raw_step_record(facts, stamp, raw: bytes, finished: tuple = ()) -> StepRecord:
    """A StepRecord written as raw values (``RAW_STEP``), with the requests it freed (Finished tuples)."""
    (executed, pending, k_exec, k_idle, k_tokens, s0, s1, u0, u1, batch, every, worker,
     prev, cuda, tokens, e0, e1, f0, f1, x0, x1) = RAW_STEP.unpack(raw)
    wb = (WorkerBounds(Stamp._make(stamp), prev, bool(cuda), tokens, e0, e1, None, f0, f1, None, x0, x1, None)
          if worker else None)
    return StepRecord(None if facts is None else step_facts(facts), bool(executed),
                      tuple(Finished._make(f) for f in finished), pending,
                      SkippedSteps(k_exec, k_idle, k_tokens), s0, s1, u0, u1, batch, every, wb)


def step_record(t: tuple) -> StepRecord:
    """An ``engine.step`` range's data: a StepRecord tuple, or its raw form ``(facts, stamp, raw[, finished])``."""
    if len(t) <= 4:
        return raw_step_record(*t)
    facts, executed, finished, pending, skipped, *phases = t
    rec = StepRecord(None if facts is None else step_facts(facts), executed,
                     tuple(Finished._make(f) for f in finished), pending, SkippedSteps._make(skipped), *phases)
    w = rec.worker
    return rec if w is None else rec._replace(worker=WorkerBounds(Stamp._make(w[0]), *w[1:]))


def execution_record(t: tuple) -> ExecutionRecord:
    stamp, prev_end, dispatch, cuda, tokens = t
    return ExecutionRecord(Stamp._make(stamp), prev_end, dispatch, cuda, tokens)


def device_samples(t: tuple) -> tuple:
    """The data of a ``Span.DEVICE_SAMPLES`` record: DeviceSamples."""
    return tuple(DeviceSample._make(d) for d in t)
