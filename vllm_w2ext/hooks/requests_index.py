"""Export-thread bookkeeping of the EngineCore: batch attributes of each step, links between step
spans and request spans, and one ``engine.request`` span per finished request (in the request's
trace) that points back at the steps that served it. Runs only on the export thread."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vllm_w2ext import config
from vllm_w2ext.telemetry import propagation
from vllm_w2ext.telemetry.ranges import ENGINE, Range, new_span_id, new_trace_id


class StepData:
    __slots__ = ("scheduler", "batch", "new_headers", "finished", "running", "waiting", "model_executed")

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        self.batch = None                    # SchedulerOutput of this step (None: nothing scheduled)
        self.new_headers: list | None = None
        self.finished: list[str] | None = None
        self.running = 0
        self.waiting = 0
        self.model_executed = False


def batch_composition(so) -> tuple[int, int, int]:
    """(requests, prefill tokens, decode tokens) of a SchedulerOutput."""
    nst: dict[str, int] = so.num_scheduled_tokens
    prefill = sum(nst.get(n.req_id, 0) for n in so.scheduled_new_reqs)
    cached = so.scheduled_cached_reqs
    out_toks = getattr(cached, "num_output_tokens", None)
    spec = so.scheduled_spec_decode_tokens or {}
    if out_toks is not None:
        for rid, n_out in zip(cached.req_ids, out_toks):
            n = nst.get(rid, 0)
            if n_out == 0 or n > 1 + len(spec.get(rid, ())):
                prefill += n          # chunked prefill or resumed (recomputed) request
    total = so.total_num_scheduled_tokens
    return len(nst), prefill, total - prefill


@dataclass
class _Req:
    parent: tuple[int, int] | None
    first_step: int
    first_ctx: tuple[int, int]
    start_ns: int
    last_step: int = 0
    last_ctx: tuple[int, int] = (0, 0)
    end_ns: int = 0
    steps: int = 0


@dataclass
class Index:
    reqs: dict[str, _Req] = field(default_factory=dict)
    headers: dict[str, tuple[int, int] | None] = field(default_factory=dict)

    def finalize_step(self, r: Range) -> list[Range] | None:
        d: StepData = r.data
        r.data = None
        attrs = {"vllm.step.id": r.step, "vllm.scheduler.running": d.running,
                 "vllm.scheduler.waiting": d.waiting, "vllm.step.model_executed": d.model_executed}
        so = d.batch
        if d.new_headers:
            for rid, h in d.new_headers:
                self.headers[rid] = propagation.extract(h)
        if so is not None:
            nreq, prefill, decode = batch_composition(so)
            attrs.update({"vllm.batch.num_reqs": nreq, "vllm.batch.prefill_tokens": prefill,
                          "vllm.batch.decode_tokens": decode,
                          "vllm.batch.preemptions": len(so.preempted_req_ids or ()),
                          "vllm.batch.finished_before": len(so.finished_req_ids)})
            settings = config.current()
            mode, max_links = settings.step_links, settings.max_links
            links = []
            ctx = r.context
            for rid in so.num_scheduled_tokens:
                q = self.reqs.get(rid)
                if q is None:
                    q = self.reqs[rid] = _Req(self.headers.pop(rid, None), r.step, ctx, r.start_ns)
                    if mode == "boundary" and q.parent is not None and len(links) < max_links:
                        links.append(q.parent)
                q.last_step, q.last_ctx, q.end_ns = r.step, ctx, r.end_ns
                q.steps += 1
                if mode == "all" and q.parent is not None and len(links) < max_links:
                    links.append(q.parent)
            r.links = links
        r.attrs = attrs
        if not d.finished:
            return None
        return [s for s in (self._close(rid) for rid in d.finished) if s is not None]

    def _close(self, rid: str) -> Range | None:
        self.headers.pop(rid, None)
        q = self.reqs.pop(rid, None)
        if q is None:
            return None
        trace_id, parent_id = q.parent if q.parent else (new_trace_id(), 0)
        s = Range("engine.request", ENGINE, trace_id, new_span_id(), parent_id, q.start_ns,
                  {"vllm.request.id": rid, "vllm.request.first_step": q.first_step,
                   "vllm.request.last_step": q.last_step, "vllm.request.num_steps": q.steps}, -1)
        s.end_ns = q.end_ns
        s.nested = False
        s.links = [q.first_ctx] if q.first_ctx == q.last_ctx else [q.first_ctx, q.last_ctx]
        return s


INDEX = Index()
