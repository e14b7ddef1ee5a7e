"""The merged trace's clock. Kineto writes µs relative to ``baseTimeNanoseconds``; our span files hold
``time.time_ns()``. The offset between the two clocks is MEASURED: while the profiler records, the
worker mirrors its ranges as ``record_function`` annotations named ``<span> #<step>``, and each one
matched with the same span (name, step, pid) in a span file gives one difference of start times."""
from __future__ import annotations

import statistics

from vllm_w2ext.analysis.merge.profiler_index import ProfilerIndex
from vllm_w2ext.analysis.readers.pftrace import SpanFile


def ns_to_us(ns: int) -> float:
    """ns as a Chrome-JSON µs value; printed with the same 3 decimals Kineto writes."""
    return ns / 1000


def time_base(span_files: list[SpanFile], profs: list[ProfilerIndex]) -> int:
    """``baseTimeNanoseconds`` of the merged trace: the first profiler trace's, else the whole second
    before our first span (a spans-only merge stays on our own clock)."""
    if profs:
        return profs[0].base_ns
    first = min((s.start_ns for sf in span_files for s in sf.slices), default=0)
    return first // 1_000_000_000 * 1_000_000_000


def measure_offset(span_files: list[SpanFile], profs: list[ProfilerIndex]) -> dict:
    """Offset (ns) to add to our time.time_ns() stamps to land on the profiler's clock, from every
    annotation that matches a span of the same name, step and process: their median, with the spread."""
    ours: dict[tuple, list[int]] = {}
    for sf in span_files:
        for s in sf.slices:
            if s.step >= 0:
                ours.setdefault((s.name, s.step, sf.pid), []).append(s.start_ns)
                ours.setdefault((s.name, s.step, None), []).append(s.start_ns)
    diffs = []
    for ix in profs:
        for a in ix.annotations:
            if not a.ours:
                continue
            starts = ours.get((a.name, a.step, a.pid)) or ours.get((a.name, a.step, None))
            if starts and len(starts) == 1:
                diffs.append(ix.base_ns + a.start_ns - starts[0])
    if not diffs:
        return {"clock_offset_ns": None, "offset_spread_ns": None, "matched_annotations": 0}
    diffs.sort()
    q = statistics.quantiles(diffs, n=4) if len(diffs) >= 2 else [diffs[0]] * 3
    return {"clock_offset_ns": round(statistics.median(diffs)), "offset_spread_ns": round(q[2] - q[0]),
            "offset_min_ns": diffs[0], "offset_max_ns": diffs[-1], "matched_annotations": len(diffs)}


def clip_to_profiled(span_files: list[SpanFile], profs: list[ProfilerIndex], offset_ns: int, margin_ns: int) -> int:
    """Keep only the spans that overlap the profilers' recorded windows (± margin); how many went."""
    windows = [(ix.base_ns + ix.first_ns - offset_ns - margin_ns, ix.base_ns + ix.last_ns - offset_ns + margin_ns)
               for ix in profs if ix.first_ns is not None]
    dropped = 0
    for sf in span_files:
        keep = [s for s in sf.slices if any(s.start_ns <= b and s.end_ns >= a for a, b in windows)]
        dropped += len(sf.slices) - len(keep)
        sf.slices = keep
    return dropped
