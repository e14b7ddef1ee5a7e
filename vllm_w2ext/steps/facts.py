"""What one engine step scheduled, read from vLLM's ``SchedulerOutput`` on the hot path.

Work here is proportional to the requests that *changed* in this step (new, preempted, resumed,
finished), never to the batch: token counts come from ``total_num_scheduled_tokens`` and the few
requests whose tokens are prefill, found with C-level iteration (``map``/``compress``), not a Python
loop over the batch. Duck-typed on the output's attributes, so it serves vLLM 0.26 to 0.33."""
from __future__ import annotations

from itertools import compress
from typing import NamedTuple


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


class StepFacts(NamedTuple):
    """Wire format of one step's batch (EngineCore -> its export process)."""
    num_reqs: int
    prefill_tokens: int
    decode_tokens: int
    preempted: tuple          # request ids preempted in this step
    resumed: tuple            # request ids resumed from preemption in this step
    finished_before: int      # requests finished since the previous schedule (vLLM's count)
    new: tuple                # (request id, W3C trace headers or None) first scheduled in this step
    scheduled: tuple | None   # every scheduled request id (only with VLLM_W2EXT_STEP_LINKS=all)
    running: int              # scheduler queues right after scheduling
    waiting: int


def _resumed_ids(cached) -> tuple:
    ids = getattr(cached, "resumed_req_ids", None)          # vLLM >= 0.27: a set of ids
    if ids is not None:
        return tuple(ids)
    flags = getattr(cached, "resumed_from_preemption", None)  # 0.26: one bool per cached request
    return tuple(compress(cached.req_ids, flags)) if flags else ()


def read_step(so, running: int, waiting: int, new_headers, all_ids: bool) -> StepFacts:
    """Facts of a ``SchedulerOutput``; ``new_headers(ids)`` gives the trace headers of new requests.

    Decode tokens: one per cached request that already has output tokens and was not resumed (vLLM
    schedules a decoding request for exactly one token), counted with ``list.count``; with speculative
    decoding their scheduled tokens are summed instead (drafts count as decode). Prefill: the rest
    (new requests, chunked prefills, recomputed resumed requests)."""
    nst: dict = so.num_scheduled_tokens
    new_ids = [n.req_id for n in so.scheduled_new_reqs]
    cached = so.scheduled_cached_reqs
    resumed = _resumed_ids(cached)
    out_toks = getattr(cached, "num_output_tokens", None)
    total = so.total_num_scheduled_tokens
    if out_toks is None:                        # no per-request output counts: new requests are the prefill
        prefill = sum(map(nst.__getitem__, new_ids))
    elif so.scheduled_spec_decode_tokens:
        decoding = compress(cached.req_ids, out_toks)
        decode = sum(map(nst.__getitem__, decoding)) - sum(map(nst.__getitem__, resumed))
        prefill = total - decode
    else:
        prefill = total - (len(out_toks) - out_toks.count(0) - len(resumed))
    preempted = tuple(so.preempted_req_ids or ())
    return StepFacts(len(nst), prefill, total - prefill, preempted, resumed, len(so.finished_req_ids),
                     tuple(zip(new_ids, new_headers(new_ids))) if new_ids else (),
                     tuple(nst) if all_ids else None, running, waiting)


class StepRecord(NamedTuple):
    """The raw facts an ``engine.step`` range carries to the export side."""
    facts: StepFacts | None       # None: nothing was scheduled in this step
    model_executed: bool
    finished: tuple               # request ids freed during this step


class ExecutionRecord(NamedTuple):
    """The raw facts a ``worker.execute_model`` range carries: the step's stamp and the end of the
    previous model execution on this worker (0 for the first)."""
    stamp: Stamp
    prev_end: int
