"""The EngineCore's request index, kept on the export side from each step's :class:`StepFacts`.

One ``engine.request`` span per finished request, in the request's own trace (parented on the front
end's ``vllm.request`` span through its ``traceparent``), from the start of its first step to the end
of the step it finished in, linking those two steps. Only requests that change (new, preempted,
resumed, finished) cost work, so the index costs the same at 1 and at 500 requests per step.

``vllm.request.num_steps`` counts the scheduling steps (steps that scheduled any tokens) from the
request's first to the one it finished in, minus those while it was preempted. vLLM schedules every
running request in each step unless the step's token budget runs out first, so this is exact without
budget pressure and an upper bound with it."""
from __future__ import annotations

from dataclasses import dataclass, field

from vllm_w2ext.steps.facts import StepFacts
from vllm_w2ext.vocab import Attr


@dataclass
class Request:
    parent: tuple[int, int] | None     # the front end's request span
    first_step: int
    first_ctx: tuple[int, int]
    start_ns: int
    first_count: int                   # scheduling steps counted when it was first scheduled
    skipped: int = 0                   # scheduling steps spent preempted
    preempted_at: int = -1


@dataclass
class RequestIndex:
    extract_parent: object             # W3C headers -> (trace_id, span_id) | None
    links: str = "boundary"            # boundary | all | none
    max_links: int = 512
    reqs: dict[str, Request] = field(default_factory=dict)
    scheduled_steps: int = 0

    def on_step(self, step: int, ctx: tuple[int, int], start_ns: int, facts: StepFacts) -> list[tuple[int, int]]:
        """Register the step's batch; returns the links of its step span."""
        links: list[tuple[int, int]] = []
        if facts.num_reqs:
            self.scheduled_steps += 1
        count = self.scheduled_steps
        for rid, headers in facts.new:
            q = self.reqs[rid] = Request(self.extract_parent(headers), step, ctx, start_ns, count)
            if self.links == "boundary" and q.parent is not None and len(links) < self.max_links:
                links.append(q.parent)
        for rid in facts.preempted:
            q = self.reqs.get(rid)
            if q is not None:
                q.preempted_at = count
        for rid in facts.resumed:
            q = self.reqs.get(rid)
            if q is not None and q.preempted_at >= 0:
                q.skipped += count - q.preempted_at - 1
                q.preempted_at = -1
        if self.links == "all" and facts.scheduled:
            for rid in facts.scheduled:
                q = self.reqs.get(rid)
                if q is not None and q.parent is not None and len(links) < self.max_links:
                    links.append(q.parent)
        return links

    def finish(self, rid: str, step: int, ctx: tuple[int, int], end_ns: int) -> dict | None:
        """A request freed in ``step``: the fields of its ``engine.request`` span, or None if unknown."""
        q = self.reqs.pop(rid, None)
        if q is None:
            return None
        return {"parent": q.parent, "start_ns": q.start_ns, "end_ns": end_ns,
                "links": [q.first_ctx] if q.first_ctx == ctx else [q.first_ctx, ctx],
                "attrs": {Attr.REQUEST_ID: rid, Attr.FIRST_STEP: q.first_step, Attr.LAST_STEP: step,
                          Attr.NUM_STEPS: self.scheduled_steps - q.first_count + 1 - q.skipped}}
