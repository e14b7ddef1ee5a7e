"""The span tree (spans/tree.py) and the records it is built from (spans/records.py), on spans written
here as the receiver would dump them."""
from __future__ import annotations

from vllm_w2ext.analysis.spans.records import SpanRecord, load_jsonl, write_jsonl
from vllm_w2ext.analysis.spans.tree import SpanSet
from vllm_w2ext.vocab import ENGINE, WORKER, Attr, Span


def span(name, sid, parent, start, end, role=ENGINE, **attrs):
    return {"name": name, "trace_id": "t1", "span_id": sid, "parent_id": parent, "start_ns": start,
            "end_ns": end, "attrs": attrs, "resource": {Attr.PROCESS_ROLE: role, "process.pid": 42} if role else {}}


SPANS = [
    span(Span.STEP, "s1", "", 1_000, 5_000, **{Attr.STEP_ID: 1, Attr.NUM_REQS: 2, Attr.RUNNING: 2, "other": 1}),
    span(Span.SCHEDULE, "c1", "s1", 1_100, 1_600),
    span(Span.EXECUTE, "c2", "s1", 1_700, 6_000, **{Attr.STEP_BATCH_ID: 0}),         # outlives its step
    span(Span.WORKER_EXECUTE, "w1", "c2", 1_800, 4_000, role=WORKER),
    span(Span.STEP, "s2", "", 7_000, 8_000, **{Attr.STEP_ID: 2}),
    span("vllm_own_span", "v1", "", 0, 1, role=None),
]


def test_tree_summary_and_excerpt():
    ss = SpanSet(SPANS)
    assert len(ss.spans) == 5                                         # vLLM's own span left out
    assert ss.counts() == {ENGINE: {Span.EXECUTE: 1, Span.SCHEDULE: 1, Span.STEP: 2}, WORKER: {Span.WORKER_EXECUTE: 1}}
    s = ss.summary()
    assert (s["num_steps"], s["child_spans_ending_after_their_step"], s["processes"]) == (2, 1, [(ENGINE, 42), (WORKER, 42)])
    [row] = ss.step_excerpt(1, 1)
    assert row["step"] == 1 and row["dur_us"] == 4.0
    assert row["attrs"] == {Attr.NUM_REQS: 2, Attr.RUNNING: 2}          # batch and scheduler state only
    assert row["children"] == [
        {"name": Span.SCHEDULE, "role": ENGINE, "start_us": 0.1, "dur_us": 0.5},
        {"name": Span.EXECUTE, "role": ENGINE, "start_us": 0.7, "dur_us": 4.3, "batch_id": 0,
         "ends_after_step_us": 1.0, "children": [Span.WORKER_EXECUTE]}]


def test_jsonl_round_trip(tmp_path):
    path = str(tmp_path / "spans.jsonl")
    write_jsonl([SpanRecord.from_dict({**SPANS[0], "unknown_key": 1})], path)
    [back] = load_jsonl(path)
    assert (back.name, back.step, back.role, back.pid, back.dur_us) == (Span.STEP, 1, ENGINE, 42, 4.0)
