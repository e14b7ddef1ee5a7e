"""``vllm-w2ext merge``: the plugin's per-process span files and the torch-profiler traces of one run
as ONE Chrome/Kineto JSON trace on ONE clock (the profiler's), which Perfetto opens and HTA loads.

- The profiler's events are copied unchanged (byte for byte when there is one profiler trace or all
  share ``baseTimeNanoseconds``); its top-level keys (``distributedInfo``, ``deviceProperties``, ...)
  are kept.
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
- Partial runs: a span file cut mid-packet (SIGKILL) gives its complete packets; processes without
  a profiler trace are merged as they are; with no profiler trace the output is the spans alone (on
  their own clock), with no span file the profiler trace plus step -> kernel flows."""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
from pathlib import Path

from vllm_w2ext.analysis.readers.kineto_raw import KinetoRawReader
from vllm_w2ext.analysis.merge.profiler_index import ProfilerIndex, index_trace
from vllm_w2ext.analysis.readers.pftrace import REQUEST_ID, ROLE_NAMES, SPAN_FILE, SpanFile, read_span_file

PROFILER_SUFFIXES = (".pt.trace.json", ".pt.trace.json.gz", ".pt.trace.json.xz")
OUR_TID_BASE = 10_000_000          # above any Linux thread id (PID_MAX_LIMIT is 4,194,304)
FLOW_ID_BASE = 1_000_000_000_000   # clear of the profiler's ac2g correlation ids
CAT, FLOW_CAT = "w2ext", "w2ext.flow"


class MergeError(Exception):
    pass


def find_inputs(inputs: list[str], out_path: str | None = None) -> tuple[list[str], list[str]]:
    """(span files, profiler traces) named by the inputs: files, or folders searched recursively.
    A file reached twice (the same folder given twice, or through a symlink) counts once."""
    spans, profs = set(), set()
    out = os.path.realpath(out_path) if out_path else None
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in p.rglob("*"):
                if f.is_file() and SPAN_FILE.match(f.name):
                    spans.add(os.path.realpath(f))
                elif f.is_file() and f.name.endswith(PROFILER_SUFFIXES):
                    profs.add(os.path.realpath(f))
        elif p.is_file():
            if p.name.endswith(".pftrace"):
                spans.add(os.path.realpath(p))
            elif p.name.endswith((".json", ".json.gz", ".json.xz")):
                profs.add(os.path.realpath(p))
            else:
                raise MergeError(f"merge input {item!r}: expected a w2ext-<pid>.pftrace span file, a torch-profiler "
                                 "trace (*.pt.trace.json[.gz|.xz]) or a folder of them")
        else:
            raise MergeError(f"merge input {item!r}: no such file or folder")
    profs.discard(out)
    return sorted(spans), sorted(profs)


def _us(ns: int) -> float:
    """ns as a Chrome-JSON µs value; printed with the same 3 decimals Kineto writes."""
    return ns / 1000


def measure_offset(span_files: list[SpanFile], profs: list[ProfilerIndex]) -> dict:
    """Offset (ns) to add to our time.time_ns() stamps to land on the profiler's clock, from every
    annotation that matches a span of the same name, step and process."""
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


class _Out:
    """Our events (metadata, spans, flows) in the output's time base."""

    def __init__(self, base_ns: int, offset_ns: int):
        self.base, self.offset = base_ns, offset_ns
        self.events: list[dict] = []
        self.next_tid = OUR_TID_BASE
        self.next_flow = FLOW_ID_BASE
        self.flows = 0

    def ts(self, our_ns: int) -> float:
        return _us(our_ns + self.offset - self.base)

    def flow(self, name: str, src: tuple, dst: tuple) -> None:
        """Flow from the slice at src (pid, tid, ts) to the slice at dst."""
        fid, self.next_flow = self.next_flow, self.next_flow + 1
        self.events.append({"ph": "s", "id": fid, "pid": src[0], "tid": src[1], "ts": src[2],
                            "cat": FLOW_CAT, "name": name})
        self.events.append({"ph": "f", "bp": "e", "id": fid, "pid": dst[0], "tid": dst[1], "ts": dst[2],
                            "cat": FLOW_CAT, "name": name})
        self.flows += 1


def _lanes(slices) -> list[tuple[int, object]]:
    """(lane, slice) so that the slices of each lane nest strictly (Chrome-JSON complete events). A
    slice starting at the same ns as the one it would nest in takes another lane: a flow binds to the
    innermost slice open at its ts, so slices of one lane must not share a start (the requests first
    scheduled in one step all start with that step)."""
    stacks: list[list[tuple[int, int]]] = []
    out = []
    for s in sorted(slices, key=lambda s: (s.start_ns, -s.end_ns)):
        for i, st in enumerate(stacks):
            while st and st[-1][1] <= s.start_ns:
                st.pop()
            if not st or (s.end_ns <= st[-1][1] and s.start_ns > st[-1][0]):
                st.append((s.start_ns, s.end_ns))
                out.append((i, s))
                break
        else:
            stacks.append([(s.start_ns, s.end_ns)])
            out.append((len(stacks) - 1, s))
    return out


def _add_spans(o: _Out, sf: SpanFile, named_pids: set) -> dict:
    """Complete events of one span file; returns {id(slice): (pid, tid, ts)} for flows."""
    where = {}
    if sf.pid not in named_pids:
        roles = "+".join(ROLE_NAMES.get(r, r) for r in sf.roles) or "?"
        o.events.append({"ph": "M", "name": "process_name", "pid": sf.pid, "tid": 0,
                         "args": {"name": f"vLLM {roles} (pid {sf.pid})"}})
    groups: dict[str, list] = {}
    for s in sf.slices:
        groups.setdefault(s.track if s.track in ROLE_NAMES else s.name, []).append(s)
    for group, slices in sorted(groups.items()):
        tids: dict[int, int] = {}
        label = f"w2ext {ROLE_NAMES[group]}" if group in ROLE_NAMES else f"w2ext {group}"
        for lane, s in _lanes(slices):
            tid = tids.get(lane)
            if tid is None:
                tid = tids[lane] = o.next_tid
                o.next_tid += 1
                o.events.append({"ph": "M", "name": "thread_name", "pid": sf.pid, "tid": tid,
                                 "args": {"name": label + (f" #{lane}" if lane else "")}})
            ts = o.ts(s.start_ns)
            args = {**s.args, "w2ext.role": s.role, "w2ext.track": s.track}
            o.events.append({"ph": "X", "cat": CAT, "name": s.name, "pid": sf.pid, "tid": tid, "ts": ts,
                             "dur": _us(s.end_ns - s.start_ns), "args": args})
            where[id(s)] = (sf.pid, tid, ts)
    return where


def _add_flows(o: _Out, span_files: list[SpanFile], where: dict, profs: list[ProfilerIndex],
               step_flows: str) -> None:
    by_start, by_end, by_step, workers = {}, {}, {}, {}
    for sf in span_files:
        for s in sf.slices:
            if s.name == "engine.step":
                by_start[(sf.pid, s.start_ns)] = by_end[(sf.pid, s.end_ns)] = s
                by_step.setdefault(s.step, s)         # one EngineCore (several would repeat step ids)
            elif s.name == "worker.execute_model":
                workers.setdefault(s.step, []).append((sf.pid, s))
    engine_reqs = {s.args[REQUEST_ID]: s for sf in span_files for s in sf.slices
                   if s.name == "engine.request" and REQUEST_ID in s.args}
    for sf in span_files:               # front-end request -> the EngineCore's request of the same id
        for s in sf.slices:
            er = engine_reqs.get(s.args.get(REQUEST_ID)) if s.name == "vllm.request" else None
            if er is not None:
                o.flow("front->engine", where[id(s)], where[id(er)])
    for sf in span_files:               # request -> its first and last step (same start / end stamps)
        for s in sf.slices:
            if s.name == "engine.request":
                first, last = by_start.get((sf.pid, s.start_ns)), by_end.get((sf.pid, s.end_ns))
                for st in dict.fromkeys(x for x in (first, last) if x is not None):
                    o.flow("request->step", where[id(s)], where[id(st)])
    for step, ws in workers.items():                             # step -> worker
        st = by_step.get(step)
        for _, w in ws:
            if st is not None:
                o.flow("step->worker", where[id(st)], where[id(w)])
    for ix in profs:                                             # step -> profiler annotation -> kernels
        has_ours = any(a.ours for a in ix.annotations)
        for a in ix.annotations:
            if a.ours != has_ours or (a.ours and a.name != "worker.execute_model"):
                continue                  # one annotation per step: ours where the plugin was on
            dst = (a.pid, a.tid, a.ts)
            # Perfetto drops a v1 flow whose end precedes its start: the engine step began well
            # before its worker ran; our own worker span only where it starts first after the shift.
            st = by_step.get(a.step) if a.ours else None
            ws = [w for pid, w in workers.get(a.step, ()) if pid == a.pid] if a.ours else []
            src = where[id(st)] if st is not None else next(
                (where[id(w)] for w in ws if where[id(w)][2] <= a.ts), None)
            if src is not None:
                o.flow("step->profiler", src, dst)
            targets = ix.step_targets(a)
            if step_flows == "bounds":
                targets = list(dict.fromkeys(targets[:1] + targets[-1:]))
            for t in targets:
                o.flow("step->kernel" if ix.has_gpu else "step->op", dst, t[:3])


def _profiler_events(ix: ProfilerIndex, shift_ns: int):
    """Raw event texts of a profiler trace, re-serialized only when its time base differs."""
    for raw, e in KinetoRawReader(ix.path):
        if shift_ns and "ts" in e:
            e["ts"] = _us(round(float(e["ts"]) * 1000) + shift_ns)
            yield json.dumps(e)
        else:
            yield raw


def _clip(span_files: list[SpanFile], profs: list[ProfilerIndex], offset_ns: int, margin_ns: int) -> int:
    """Keep only the spans that overlap the profilers' recorded windows (± margin); how many went."""
    windows = [(ix.base_ns + ix.first_ns - offset_ns - margin_ns, ix.base_ns + ix.last_ns - offset_ns + margin_ns)
               for ix in profs if ix.first_ns is not None]
    dropped = 0
    for sf in span_files:
        keep = [s for s in sf.slices if any(s.start_ns <= b and s.end_ns >= a for a, b in windows)]
        dropped += len(sf.slices) - len(keep)
        sf.slices = keep
    return dropped



def _rel(path: str, out_path) -> str:
    """Inputs as the merged file names them: relative to its folder (a shared trace carries no machine paths)."""
    try:
        return os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(str(out_path))))
    except ValueError:                    # another drive (Windows)
        return os.path.basename(path)

def merge(inputs: list[str], out_path: str, step_flows: str = "bounds", clip_ms: float | None = None) -> dict:
    """Merge the span files and profiler traces found in ``inputs`` into ``out_path`` (.json or .json.gz).
    ``clip_ms``: keep only spans within that many ms of a profiler trace's recorded window."""
    if step_flows not in ("bounds", "all"):
        raise MergeError(f"step_flows={step_flows!r}: expected 'bounds' or 'all'")
    if clip_ms is not None and clip_ms < 0:
        raise MergeError(f"clip_ms={clip_ms!r}: expected a number of ms >= 0")
    span_paths, prof_paths = find_inputs(inputs, out_path)
    if not span_paths and not prof_paths:
        raise MergeError(f"merge inputs {inputs}: no w2ext-<pid>.pftrace span file and no *.pt.trace.json[.gz|.xz]")
    span_files = [read_span_file(p) for p in span_paths]
    profs = [index_trace(p) for p in prof_paths]
    info = measure_offset(span_files, profs)
    measured = info["clock_offset_ns"] is not None
    if profs:
        base = profs[0].base_ns
    else:
        first = min((s.start_ns for sf in span_files for s in sf.slices), default=0)
        base = first // 1_000_000_000 * 1_000_000_000
    warnings = [f"{_rel(sf.path, out_path)}: cut after {sf.packets} complete packets ({sf.truncated_bytes} bytes dropped)"
                for sf in span_files if sf.truncated_bytes]
    warnings += [f"{_rel(ix.path, out_path)}: profiler trace cut after {ix.events} events" for ix in profs if ix.truncated]
    if profs and span_files and not measured:
        warnings.append("no span matched a profiler annotation: the clock offset is NOT measured; spans are "
                        "placed with offset 0 (profiled without VLLM_W2EXT=1, or span files from another run?)")
    if clip_ms is not None and profs:
        info["clipped_spans"] = _clip(span_files, profs, info["clock_offset_ns"] or 0, round(clip_ms * 1e6))
    o = _Out(base, info["clock_offset_ns"] or 0)
    named = set().union(*(ix.named_pids for ix in profs)) if profs else set()
    where = {}
    for sf in span_files:
        where.update(_add_spans(o, sf, named))
    _add_flows(o, span_files, where, profs, step_flows)
    info.update(
        clock_offset_measured=measured, base_time_ns=base, step_flows=step_flows, flows=o.flows,
        span_files=[{"path": _rel(sf.path, out_path), "pid": sf.pid, "roles": sf.roles, "slices": len(sf.slices),
                     "truncated_bytes": sf.truncated_bytes, "open_slices": sf.open_slices} for sf in span_files],
        profiler_traces=[{"path": _rel(ix.path, out_path), "events": ix.events, "truncated": ix.truncated,
                          "base_time_ns": ix.base_ns, "gpu": ix.has_gpu,
                          "step_annotations": len(ix.annotations)} for ix in profs],
        warnings=warnings, out=os.path.basename(str(out_path)))
    firsts = [e["ts"] for e in o.events if e.get("ph") == "X"]      # the offset marker at the trace's start
    firsts += [_us(ix.base_ns + ix.first_ns - base) for ix in profs if ix.first_ns is not None]
    first_ts = min(firsts, default=0.0)
    o.events.append({"ph": "i", "s": "g", "name": "w2ext clock offset", "pid": "", "tid": "", "ts": first_ts,
                     "args": {k: info.get(k) for k in ("clock_offset_ns", "offset_spread_ns",
                                                       "matched_annotations", "clock_offset_measured")}})
    meta = dict(profs[0].meta) if profs else {"displayTimeUnit": "ms"}
    meta["baseTimeNanoseconds"] = base
    n = 0
    opener = gzip.open if str(out_path).endswith(".gz") else open
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with opener(out_path, "wt", encoding="utf-8", **({"compresslevel": 5} if opener is gzip.open else {})) as f:
        f.write('{"traceEvents": [\n')
        for ix in profs:
            for raw in _profiler_events(ix, ix.base_ns - base):
                f.write(",\n" if n else "")
                f.write(raw)
                n += 1
        for e in o.events:
            f.write(",\n" if n else "")
            f.write(json.dumps(e))
            n += 1
        f.write("\n]")
        info["events"] = n
        info["added_events"] = len(o.events)
        for k, v in meta.items():
            if k != "traceEvents":
                f.write(f",\n{json.dumps(k)}: {json.dumps(v)}")
        f.write(f',\n"w2extMerge": {json.dumps(info)}\n}}\n')
    return info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="merged trace to write (.json.gz or .json)")
    p.add_argument("--step-flows", choices=("bounds", "all"), default="bounds",
                   help="flows from each step to the first and last kernel/op it launched (bounds), or to all")
    p.add_argument("--clip-ms", type=float, default=None, metavar="MS",
                   help="keep only spans within MS ms of the profiled window(s) (an excerpt); default: all spans")
    p.add_argument("inputs", nargs="+", help="span files, profiler traces, or folders searched recursively")


def run(args: argparse.Namespace) -> int:
    try:
        info = merge(args.inputs, args.out, args.step_flows, args.clip_ms)
    except MergeError as e:
        print(f"vllm-w2ext merge: {e}")
        return 2
    for w in info["warnings"]:
        print(f"warning: {w}")
    if "clipped_spans" in info:
        print(f"clipped: {info['clipped_spans']} spans outside the profiled window(s) left out")
    print(f"span files: {len(info['span_files'])}, profiler traces: {len(info['profiler_traces'])}, "
          f"events written: {info['events']} ({info['added_events']} added, {info['flows']} flows)")
    if info["clock_offset_measured"]:
        print(f"clock offset (profiler - time.time_ns): {info['clock_offset_ns'] / 1e3:+.3f} us, spread (IQR) "
              f"{info['offset_spread_ns'] / 1e3:.3f} us, min/max {info['offset_min_ns'] / 1e3:+.3f}/"
              f"{info['offset_max_ns'] / 1e3:+.3f} us over {info['matched_annotations']} matched annotations")
    else:
        print("clock offset: not measured (" + ("no profiler trace" if not info["profiler_traces"] else
                                                "no span file" if not info["span_files"] else
                                                "no annotation matched") + ")")
    print(f"wrote {args.out}")
    return 0
