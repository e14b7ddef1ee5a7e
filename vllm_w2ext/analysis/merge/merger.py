"""``vllm-w2ext merge``: the plugin's per-process span files and the torch-profiler traces of one run
as ONE Chrome/Kineto JSON trace on ONE clock (the profiler's), which Perfetto opens and HTA loads.

- The profiler's events are copied unchanged (byte for byte when there is one profiler trace or all
  share ``baseTimeNanoseconds``), except: its naming metadata is replaced by ours (every process and
  thread named for its role and ordered front end -> EngineCore -> workers -> GPUs; no entry for a
  GPU without events; tracks.py); a GPU activity that overlaps an earlier one on its stream without
  nesting in it (Perfetto would drop it) moves, with its ``ac2g`` flow end, to a lane track of that
  stream; global instants move onto a profiled process (they name none). Its top-level keys
  (``distributedInfo``, ``deviceProperties``, ...) are kept.
- Our spans (``time.time_ns()``) are shifted onto the profiler's clock by a MEASURED offset: while the
  profiler records, the worker mirrors its ranges as ``record_function`` annotations named
  ``<span> #<step>``; each one matched with the same span (name, step, pid) in a span file gives one
  difference of start times. The offset is their median; its spread (interquartile range, min/max)
  is printed and stored in the trace (top-level ``w2extMerge`` and a global instant event).
- Spans become complete events on threads of their own process (front end, EngineCore, worker), in
  lanes where they would overlap; flows go front-end request -> EngineCore request of the same
  ``vllm.request.id`` (``vllm.request`` -> ``engine.request``), request -> first/last step
  (``engine.request`` -> ``engine.step``), step -> worker (``engine.step`` -> ``worker.execute_model``),
  step -> the profiler's annotation of that step in the worker, annotation -> the GPU kernels it
  launched (CPU ops on CPU traces; vLLM's own ``execute_context_...`` annotations when the plugin was
  off): the first and last by default, every one with ``--step-flows all``.
- Several profiler traces (one per tensor-parallel rank, each with its worker and its GPU) go on one
  timeline: each is shifted by its ``baseTimeNanoseconds``' difference from the first's; the second and
  later ones get their ac2g flow ids (CUPTI correlation ids, alike on every rank, and Perfetto pairs flow
  ends by id alone) and their bookkeeping tracks renumbered (``ProfilerIndex.renumber``); each trace's
  own clock offset is measured and stored next to the common one; two traces whose GPUs share a
  device id (one GPU visible per process) are warned about (their kernels would share a track).
- Partial runs: a span file cut mid-packet (SIGKILL) gives its complete packets; processes without
  a profiler trace are merged as they are; with no profiler trace the output is the spans alone (on
  their own clock), with no span file the profiler trace plus step -> kernel flows.

This module is the sequence; the pieces are inputs.py, profiler_index.py, clock.py, our_events.py,
flows.py, tracks.py and writer.py; command.py is the command line."""
from __future__ import annotations

import os

from vllm_w2ext.analysis.merge.clock import clip_to_profiled, measure_offset, ns_to_us, time_base
from vllm_w2ext.analysis.merge.flows import add_flows
from vllm_w2ext.analysis.merge.inputs import MergeError, find_inputs, relative_name
from vllm_w2ext.analysis.merge.our_events import OurEvents, add_spans
from vllm_w2ext.analysis.merge.profiler_index import ProfilerIndex, index_trace
from vllm_w2ext.analysis.merge.tracks import layout
from vllm_w2ext.analysis.merge.writer import write_merged
from vllm_w2ext.analysis.readers.pftrace import SpanFile, read_span_file

STEP_FLOWS = ("bounds", "all")


def merge(inputs: list[str], out_path: str, step_flows: str = "bounds", clip_ms: float | None = None) -> dict:
    """Merge the span files and profiler traces found in ``inputs`` into ``out_path`` (.json or .json.gz).
    ``clip_ms``: keep only spans within that many ms of a profiler trace's recorded window. Returns
    what it measured and read (also written into the file as ``w2extMerge``)."""
    _check_options(step_flows, clip_ms)
    span_files, profs = _read_inputs(inputs, out_path)
    info = measure_offset(span_files, profs)
    measured = info["clock_offset_ns"] is not None
    offset = info["clock_offset_ns"] or 0
    base = time_base(span_files, profs)
    warnings = _warnings(span_files, profs, out_path, measured)
    if clip_ms is not None and profs:
        info["clipped_spans"] = clip_to_profiled(span_files, profs, offset, round(clip_ms * 1e6))
    o = _our_events(span_files, profs, base, offset, step_flows)
    info.update(clock_offset_measured=measured, base_time_ns=base, step_flows=step_flows, flows=o.flows,
                **_inputs_read(span_files, profs, out_path), warnings=warnings, out=os.path.basename(str(out_path)))
    o.events.append(_offset_marker(o, span_files, profs, base, info))
    write_merged(out_path, profs, o.events, base, info)
    return info


def _check_options(step_flows: str, clip_ms: float | None) -> None:
    if step_flows not in STEP_FLOWS:
        raise MergeError(f"step_flows={step_flows!r}: expected 'bounds' or 'all'")
    if clip_ms is not None and clip_ms < 0:
        raise MergeError(f"clip_ms={clip_ms!r}: expected a number of ms >= 0")


def _read_inputs(inputs: list[str], out_path: str) -> tuple[list[SpanFile], list[ProfilerIndex]]:
    """Every span file read whole, every profiler trace indexed (one streaming pass each)."""
    span_paths, prof_paths = find_inputs(inputs, out_path)
    if not span_paths and not prof_paths:
        raise MergeError(f"merge inputs {inputs}: no w2ext-<pid>.pftrace span file and no *.pt.trace.json[.gz|.xz]")
    profs = [index_trace(p) for p in prof_paths]
    for k, ix in enumerate(profs):        # one trace per rank: their flow ids and bookkeeping tracks apart
        ix.renumber(k)
    return [read_span_file(p) for p in span_paths], profs


def _warnings(span_files: list[SpanFile], profs: list[ProfilerIndex], out_path: str, measured: bool) -> list[str]:
    """Inputs cut short, and spans placed without a measured clock offset."""
    warnings = [f"{relative_name(sf.path, out_path)}: cut after {sf.packets} complete packets "
                f"({sf.truncated_bytes} bytes dropped)" for sf in span_files if sf.truncated_bytes]
    warnings += [f"{relative_name(ix.path, out_path)}: profiler trace cut after {ix.events} events"
                 for ix in profs if ix.truncated]
    seen: dict = {}
    for ix in profs:
        for pid, device in ix.gpu_pids.items():
            if pid in seen:
                warnings.append(f"GPU {device} has activities in {relative_name(seen[pid], out_path)} and "
                                f"{relative_name(ix.path, out_path)} (each process saw its GPU as device {device}: "
                                "CUDA_VISIBLE_DEVICES per process?): their kernels share one GPU track")
            seen.setdefault(pid, ix.path)
    if profs and span_files and not measured:
        warnings.append("no span matched a profiler annotation: the clock offset is NOT measured; spans are "
                        "placed with offset 0 (profiled without VLLM_W2EXT=1, or span files from another run?)")
    return warnings


def _our_events(span_files: list[SpanFile], profs: list[ProfilerIndex], base: int, offset: int,
                step_flows: str) -> OurEvents:
    """Our spans (on the profiler's clock) and the flows between them and into the profiler's events,
    after the names and order of every process and thread (tracks.layout)."""
    o = OurEvents(base, offset)
    where = {}
    for sf in span_files:
        where.update(add_spans(o, sf))
    add_flows(o, span_files, where, profs, step_flows)
    o.events[:0] = layout(span_files, profs, o.threads)
    return o


def _inputs_read(span_files: list[SpanFile], profs: list[ProfilerIndex], out_path: str) -> dict:
    """What was read; with several profiler traces (one per rank), each one's own clock offset too: the
    merge places every span with the offset over all of them, these say whether the traces agree."""
    own = [measure_offset(span_files, [ix]) for ix in profs] if len(profs) > 1 and span_files else [{}] * len(profs)
    return {"span_files": [{"path": relative_name(sf.path, out_path), "pid": sf.pid, "roles": sf.roles,
                            "slices": len(sf.slices), "truncated_bytes": sf.truncated_bytes,
                            "open_slices": sf.open_slices} for sf in span_files],
            "profiler_traces": [{"path": relative_name(ix.path, out_path), "events": ix.events,
                                 "truncated": ix.truncated, "base_time_ns": ix.base_ns, "gpu": ix.has_gpu,
                                 "step_annotations": len(ix.annotations), "rank": ix.rank,
                                 **{k: o[k] for k in ("clock_offset_ns", "offset_spread_ns", "matched_annotations")
                                    if k in o}} for ix, o in zip(profs, own)]}


def _offset_marker(o: OurEvents, span_files: list[SpanFile], profs: list[ProfilerIndex], base: int,
                   info: dict) -> dict:
    """A global instant event at the trace's start that carries the clock offset and its spread. It is
    drawn on the trace-wide track; its pid is one the trace has already (else a nameless process appears)."""
    firsts = [e["ts"] for e in o.events if e.get("ph") == "X"]
    firsts += [ns_to_us(ix.base_ns + ix.first_ns - base) for ix in profs if ix.first_ns is not None]
    pid = next((ix.cpu_pids[0] for ix in profs if ix.cpu_pids), span_files[0].pid if span_files else 0)
    return {"ph": "i", "s": "g", "name": "w2ext clock offset", "pid": pid, "tid": pid, "ts": min(firsts, default=0.0),
            "args": {k: info.get(k) for k in ("clock_offset_ns", "offset_spread_ns",
                                              "matched_annotations", "clock_offset_measured")}}
