"""Span-tree analysis over exported spans (from an OTLP receiver dump or a trace file).

Used by the tests (to assert the tree) and by the benchmark summaries (span counts per name and
process role, an excerpt of consecutive engine steps)."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

from vllm_w2ext.analysis.spans.records import SpanRecord
from vllm_w2ext.vocab import STEP_STATE_ATTR_PREFIXES, Attr, Span


class SpanSet:
    """Index over spans of the plugin (spans without a ``vllm.process_role`` resource are vLLM's own)."""

    def __init__(self, spans: Iterable, only_plugin: bool = True):
        spans = [s if isinstance(s, SpanRecord) else SpanRecord.from_dict(s) for s in spans]
        self.spans = [s for s in spans if s.role] if only_plugin else spans
        self.by_id = {(s.trace_id, s.span_id): s for s in self.spans}
        self.children: dict[tuple[str, str], list[SpanRecord]] = defaultdict(list)
        for s in self.spans:
            if s.parent_id:
                self.children[(s.trace_id, s.parent_id)].append(s)

    def named(self, name: str) -> list[SpanRecord]:
        return [s for s in self.spans if s.name == name]

    def parent(self, s: SpanRecord) -> SpanRecord | None:
        return self.by_id.get((s.trace_id, s.parent_id)) if s.parent_id else None

    def kids(self, s: SpanRecord) -> list[SpanRecord]:
        return sorted(self.children.get((s.trace_id, s.span_id), []), key=lambda x: x.start_ns)

    def counts(self) -> dict[str, dict[str, int]]:
        """{role: {span name: count}}"""
        out: dict[str, Counter] = defaultdict(Counter)
        for s in self.spans:
            out[s.role][s.name] += 1
        return {r: dict(sorted(c.items())) for r, c in sorted(out.items())}

    def linked_from(self, target: SpanRecord) -> list[SpanRecord]:
        key = (target.trace_id, target.span_id)
        return [s for s in self.spans if key in {tuple(x) for x in s.links}]

    def steps(self) -> list[SpanRecord]:
        return sorted(self.named(Span.STEP), key=lambda s: s.step or 0)

    def step_excerpt(self, first: int, count: int) -> list[dict]:
        """Consecutive engine steps with their children (offsets in µs from the step start)."""
        rows = []
        for st in self.steps():
            if st.step is None or not first <= st.step < first + count:
                continue
            kids = []
            for k in self.kids(st):
                kid = {"name": k.name, "role": k.role, "start_us": round((k.start_ns - st.start_ns) / 1e3, 1),
                       "dur_us": round(k.dur_us, 1)}
                if Attr.STEP_BATCH_ID in k.attrs:
                    kid["batch_id"] = k.attrs[Attr.STEP_BATCH_ID]
                if k.end_ns > st.end_ns:
                    kid["ends_after_step_us"] = round((k.end_ns - st.end_ns) / 1e3, 1)
                grand = [g.name for g in self.kids(k)]
                if grand:
                    kid["children"] = grand
                kids.append(kid)
            rows.append({"step": st.step, "dur_us": round(st.dur_us, 1),
                         "attrs": {k: v for k, v in st.attrs.items() if k.startswith(STEP_STATE_ATTR_PREFIXES)},
                         "links": len(st.links), "children": kids})
        return rows

    def summary(self) -> dict:
        steps = self.steps()
        outlive = sum(1 for st in steps for k in self.kids(st) if k.end_ns > st.end_ns)
        return {
            "span_counts": self.counts(),
            "num_steps": len(steps),
            "steps_with_links": sum(1 for s in steps if s.links),
            "child_spans_ending_after_their_step": outlive,
            "processes": sorted({(s.role, s.pid) for s in self.spans}),
        }
