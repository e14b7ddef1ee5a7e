"""The EngineCore's request index, kept on the export side from each step's facts.

One ``engine.request`` span per finished request, in the request's own trace (parented on the front
end's ``vllm.request`` span through its ``traceparent``), from its first scheduled step to the end of
the step it finished in (its queueing before that is the ``queued`` event and ``queue_s``), linking its first and last steps, with its life as events (queued, scheduled,
first_token, preempted, resumed, finished) and attributes (queue, prefill and decode time, steps,
preemptions, the prefill interference estimate). Only requests that change (new, first token,
preempted, resumed, finished) cost work, so the index costs the same at 1 and at 500 requests a step.

- ``num_steps``: the scheduling steps (steps that scheduled any tokens) from the request's first to
  the one it finished in, minus those while it was preempted. vLLM schedules every running request
  in each step unless the token budget runs out first: exact without budget pressure, an upper bound
  with it.
- ``steps_with_prefill``: of those after its first token (its decode steps), the ones whose batch
  also carried prefill tokens.
- ``prefill_interference_s``: the time those prefills added to this request, estimated as the sum
  over its decode steps that carried prefill of (step duration - the typical duration of a decode-only
  step), the typical duration being a running median-like estimate (``DecodeBaseline``) of the
  decode-only steps seen so far.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vllm_w2ext.steps.facts import Finished, StepFacts
from vllm_w2ext.vocab import Attr, Event

FINISH_REASON = {"FINISHED_STOPPED": "stop", "FINISHED_LENGTH_CAPPED": "length", "FINISHED_ABORTED": "abort",
                 "FINISHED_IGNORED": "abort", "FINISHED_ERROR": "error", "FINISHED_REPETITION": "stop"}
PREEMPT_REASON = "kv_cache_full"     # vLLM v1 preempts only when the KV cache cannot hold the batch


class DecodeBaseline:
    """A robust running estimate of a decode-only step's duration: moves a fixed fraction of the way
    toward each new sample's side (a streaming median), so a few slow steps do not drag it."""

    def __init__(self) -> None:
        self.value = 0
        self.n = 0

    def add(self, ns: int) -> None:
        self.n += 1
        if self.n == 1:
            self.value = ns
            return
        step = max(1, self.value // 32)
        self.value += step if ns > self.value else -step if ns < self.value else 0


@dataclass
class Request:
    parent: tuple[int, int] | None     # the front end's request span
    first_step: int
    first_ctx: tuple[int, int]
    arrival_ns: int
    scheduled_ns: int
    first_count: int                   # scheduling steps counted when it was first scheduled
    prompt_tokens: int
    events: list = field(default_factory=list)
    first_token_ns: int = 0
    prefill_steps_at_first_token: int = 0
    interference_at_first_token: int = 0
    skipped: int = 0                   # scheduling steps spent preempted
    preempted_at: int = -1
    preemptions: int = 0


@dataclass
class RequestIndex:
    extract_parent: object             # W3C headers -> (trace_id, span_id) | None
    links: str = "boundary"            # boundary | all | none
    max_links: int = 512
    reqs: dict[str, Request] = field(default_factory=dict)
    scheduled_steps: int = 0
    prefill_steps: int = 0             # scheduling steps whose batch mixed prefill into decodes
    interference_ns: int = 0           # what those mixed steps took beyond a decode-only step
    baseline: DecodeBaseline = field(default_factory=DecodeBaseline)

    def on_step(self, step: int, ctx: tuple[int, int], start_ns: int, end_ns: int,
                facts: StepFacts) -> list[tuple[int, int]]:
        """Register the step's batch; returns the links of its step span."""
        links: list[tuple[int, int]] = []
        if facts.num_reqs:
            self.scheduled_steps += 1
            if facts.decode_tokens and not facts.prefill_tokens:
                self.baseline.add(end_ns - start_ns)
            elif facts.decode_tokens and facts.prefill_tokens:
                self.prefill_steps += 1
                if self.baseline.n:
                    self.interference_ns += max(0, end_ns - start_ns - self.baseline.value)
        count = self.scheduled_steps
        for n in facts.new:
            arrival = int(n.arrival_s * 1e9) if n.arrival_s else start_ns
            q = self.reqs[n.id] = Request(self.extract_parent(n.headers), step, ctx, min(arrival, start_ns), start_ns,
                                          count, n.prompt_tokens)
            q.events += [(Event.QUEUED, q.arrival_ns, None), (Event.SCHEDULED, start_ns, None)]
            if self.links == "boundary" and q.parent is not None and len(links) < self.max_links:
                links.append(q.parent)
        for rid in facts.first_tokens:
            q = self.reqs.get(rid)
            if q is not None and not q.first_token_ns:
                q.first_token_ns = end_ns
                q.prefill_steps_at_first_token = self.prefill_steps
                q.interference_at_first_token = self.interference_ns
                q.events.append((Event.FIRST_TOKEN, end_ns, None))
        for rid in facts.preempted:
            q = self.reqs.get(rid)
            if q is not None:
                q.preempted_at = count
                q.preemptions += 1
                q.events.append((Event.PREEMPTED, start_ns, {"reason": PREEMPT_REASON}))
        for rid in facts.resumed:
            q = self.reqs.get(rid)
            if q is not None and q.preempted_at >= 0:
                q.skipped += count - q.preempted_at - 1
                q.preempted_at = -1
                q.events.append((Event.RESUMED, start_ns, None))
        if self.links == "all" and facts.scheduled:
            for rid in facts.scheduled:
                q = self.reqs.get(rid)
                if q is not None and q.parent is not None and len(links) < self.max_links:
                    links.append(q.parent)
        return links

    def finish(self, f: Finished, step: int, ctx: tuple[int, int], end_ns: int) -> dict | None:
        """A request freed in ``step``: the fields of its ``engine.request`` span, or None if unknown."""
        q = self.reqs.pop(f.id, None)
        if q is None:
            return None
        reason = FINISH_REASON.get(f.status, f.status.lower())
        first = q.first_token_ns or end_ns
        decoding = bool(q.first_token_ns)
        attrs = {Attr.REQUEST_ID: f.id, Attr.FIRST_STEP: q.first_step, Attr.LAST_STEP: step,
                 Attr.NUM_STEPS: self.scheduled_steps - q.first_count + 1 - q.skipped,
                 Attr.QUEUE_S: (q.scheduled_ns - q.arrival_ns) / 1e9, Attr.PREFILL_S: (first - q.scheduled_ns) / 1e9,
                 Attr.DECODE_S: (end_ns - first) / 1e9, Attr.REQUEST_PREEMPTIONS: q.preemptions,
                 Attr.STEPS_WITH_PREFILL: self.prefill_steps - q.prefill_steps_at_first_token if decoding else 0,
                 Attr.PREFILL_INTERFERENCE_S:
                     (self.interference_ns - q.interference_at_first_token) / 1e9 if decoding else 0.0,
                 Attr.FINISH_REASON: reason, Attr.OUTPUT_TOKENS: f.output_tokens,
                 Attr.REQUEST_PROMPT_TOKENS: q.prompt_tokens}
        return {"parent": q.parent, "start_ns": q.scheduled_ns, "end_ns": end_ns,
                "links": [q.first_ctx] if q.first_ctx == ctx else [q.first_ctx, ctx], "attrs": attrs,
                "events": q.events + [(Event.FINISHED, end_ns, {"reason": reason})]}
