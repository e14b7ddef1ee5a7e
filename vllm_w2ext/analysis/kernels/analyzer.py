"""``vllm-w2ext analyze TRACE``: kernel-time breakdown of a torch-profiler (Kineto) or merged trace.

One streaming pass (readers/kineto_events.py); what is kept in memory does not grow with the JSON size:
- step marks: vLLM's ``execute_context_N(tok)_generation_M(tok)`` user annotations (phase) and the
  plugin's ``worker.execute_model #<step>`` / ``worker.sample_tokens #<step>`` annotations (step id);
- one small tuple per CUDA launch call (time, process, API) to join kernels to launches by ``correlation``;
- GPU activities waiting for their launch call (Kineto writes a CUDA graph's kernels before its
  ``cudaGraphLaunch``: at most one graph's worth) and a start-time reorder window of REORDER_WINDOW;
- per step, per category and per kernel-name totals.

A GPU activity (kernel, memcpy, memset) belongs to the step whose annotation, on the launching process,
is the latest to start at or before its launch call (so a step's sampling, launched after
``execute_model`` returned, stays with its step). Categories: rules.py (name rules) then
sequence.py (GEMM split by position). Idle: per device, gaps in the union of busy intervals,
split into inside a step (both neighbours in the same step), between steps, and outside any step.
"""
from __future__ import annotations

import argparse
import gc
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

from vllm_w2ext.analysis.readers.errors import UnreadableTrace
from vllm_w2ext.analysis.readers.kineto_events import NO_ARGS, KinetoEventReader
from vllm_w2ext.analysis.kernels.rules import CATEGORIES, RULES_VERSION, classify_activity
from vllm_w2ext.analysis.kernels.sequence import LayerSequence
from vllm_w2ext.analysis.kernels.steps import LogHistogram, StepTimeline

GPU_CATS = frozenset(("kernel", "gpu_memcpy", "gpu_memset"))
RUNTIME_CATS = frozenset(("cuda_runtime", "cuda_driver"))
ANNOTATION_CATS = frozenset(("user_annotation", "gpu_user_annotation"))
LAUNCH_RX = re.compile(r"Launch|Memcpy|Memset")
REORDER_WINDOW = 4096          # GPU activities held (up to twice this) to restore start-time order per device
MAX_WAITING = 200_000          # GPU activities held waiting for their launch call (then: no step)


def _start(item: tuple) -> float:
    return item[0][0]


class StepAcc:
    """What one step's GPU activities add up to."""
    __slots__ = ("kernels", "time", "cats", "first", "last", "idle_in", "gap_before", "launch_api_us")

    def __init__(self) -> None:
        self.kernels, self.time, self.cats = 0, 0.0, defaultdict(float)
        self.first, self.last, self.idle_in, self.gap_before, self.launch_api_us = math.inf, -math.inf, 0.0, None, 0.0


class Analyzer:
    def __init__(self) -> None:
        self.steps = StepTimeline()
        self.launches: dict[int, list] = {}       # correlation -> [ts, pid, api, matched]
        self.waiting: dict[int, list] = defaultdict(list)
        self.n_waiting = 0
        self.buffers: dict = {}                    # device -> [(record, step)] not yet in start order
        self.layer: dict = defaultdict(LayerSequence)
        self.dev: dict = {}                        # device -> [busy_until, last_step, first_ts]
        self.cats: dict = defaultdict(lambda: [0, 0.0])
        self.kernel_only_us = 0.0
        self.by_step: dict = defaultdict(StepAcc)
        self.names: dict = {}                      # (kernel name, category) -> [count, time]
        self.idle = {"in_steps": 0.0, "between_steps": 0.0, "outside_steps": 0.0}
        self.apis: dict = defaultdict(lambda: [0, 0.0])
        self.latency: dict = defaultdict(LogHistogram)
        self.counts: dict = defaultdict(int)
        self.out_of_order = 0
        self.no_launch = 0

    # -- events ---------------------------------------------------------------------------------
    def feed(self, e) -> None:
        """One kineto_events.Event (analyze() inlines this dispatch for speed)."""
        self.counts["events"] += 1
        cat = e.cat
        if cat in GPU_CATS:
            self.gpu(e)
        elif cat in RUNTIME_CATS:
            self.runtime(e)
        elif cat in ANNOTATION_CATS:
            self.annotation(e)

    def annotation(self, e) -> None:
        self.counts[e.cat] += 1
        if e.cat == "user_annotation":
            self.steps.add(e.name, e.pid, e.ts, e.dur)

    def gpu(self, e) -> None:
        if e.ph != "X":
            return
        a = e.args or NO_ARGS
        corr = a.correlation
        rec = (e.ts, e.dur, e.name, e.cat, e.pid if a.device is None else a.device, corr)
        self.counts[e.cat] += 1
        launch = self.launches.get(corr)
        if launch is not None or corr is None:
            self._release((rec,), launch)
        else:
            self.waiting[corr].append(rec)
            self.n_waiting += 1
            if self.n_waiting > MAX_WAITING:
                first = next(iter(self.waiting))
                recs = self.waiting.pop(first)
                self.n_waiting -= len(recs)
                self._release(recs, None)

    def runtime(self, e) -> None:
        name = e.name
        if not LAUNCH_RX.search(name):
            return
        ts, dur, pid = e.ts, e.dur, e.pid
        a = self.apis[name]
        a[0] += 1
        a[1] += dur
        step = self.steps.step_at(pid, ts)
        if step is not None:
            self.by_step[step].launch_api_us += dur
        corr = (e.args or NO_ARGS).correlation
        if corr is None:
            return
        launch = self.launches[corr] = [ts, pid, name, False]
        recs = self.waiting.pop(corr, None)
        if recs is not None:
            self.n_waiting -= len(recs)
            self._release(recs, launch)

    def _release(self, recs, launch) -> None:
        step = None
        if launch is not None:
            step = self.steps.step_at(launch[1], launch[0])
            if not launch[3]:
                launch[3] = True
                self.latency[launch[2]].add(max(0.0, min(r[0] for r in recs) - launch[0]))
        else:
            self.no_launch += len(recs)
        for rec in recs:
            buf = self.buffers.get(rec[4])
            if buf is None:
                buf = self.buffers[rec[4]] = []
            buf.append((rec, step))
            if len(buf) >= 2 * REORDER_WINDOW:
                self._drain(buf, REORDER_WINDOW)

    def _drain(self, buf: list, keep: int) -> None:
        """Process all but the ``keep`` latest-starting activities of a device, in start order (the list
        is nearly sorted already, which Python's sort handles in about linear time)."""
        buf.sort(key=_start)
        process = self._process
        for rec, step in buf[:len(buf) - keep]:
            process(rec, step)
        del buf[:len(buf) - keep]

    # -- ordered per device ---------------------------------------------------------------------
    def _process(self, rec: tuple, step) -> None:
        ts, dur, name, cat, device, _ = rec
        end = ts + dur
        st = self.dev.get(device)
        if st is None:
            st = self.dev[device] = [ts, None, ts, ts]   # busy_until, last_step, first_ts, last_ts
        if ts < st[3]:
            self.out_of_order += 1
        else:
            st[3] = ts
        gap = ts - st[0]
        s = None if step is None else self.by_step[step]
        if gap > 0:
            if s is not None and step == st[1]:
                self.idle["in_steps"] += gap
                s.idle_in += gap
            elif s is not None and st[1] is not None:
                self.idle["between_steps"] += gap
                if s.gap_before is None:
                    s.gap_before = gap
            else:
                self.idle["outside_steps"] += gap
        if end > st[0]:
            st[0] = end
        st[1] = step
        if s is not None:
            if ts < s.first:
                s.first = ts
            if end > s.last:
                s.last = end
        for r, category in self.layer[device].feed(rec, step, classify_activity(cat, name)):
            self._account(r, category, s)

    def _account(self, rec: tuple, category: str, s) -> None:
        dur = rec[1]
        c = self.cats[category]
        c[0] += 1
        c[1] += dur
        if rec[3] == "kernel":
            self.kernel_only_us += dur
        if s is not None:
            s.kernels += 1
            s.time += dur
            s.cats[category] += dur
        key = (rec[2], category)
        n = self.names.get(key)
        if n is None:
            self.names[key] = [1, dur]
        else:
            n[0] += 1
            n[1] += dur

    def finish(self) -> None:
        for recs in list(self.waiting.values()):
            self._release(recs, None)
        self.waiting.clear()
        for buf in self.buffers.values():
            self._drain(buf, 0)
        for device, seq in self.layer.items():
            for r, category in seq.flush():
                self._account(r, category, None if seq.step is None else self.by_step[seq.step])


def _cat_table(times: dict, total: float, counts: dict | None = None) -> dict:
    out = {}
    for c in CATEGORIES:
        t = times.get(c, 0.0)
        out[c] = {"time_us": round(t, 3), "share": round(t / total, 6) if total else 0.0}
        if counts is not None:
            out[c]["count"] = counts.get(c, 0)
    return out


def analyze(path: str | Path, top: int = 20) -> dict:
    """Breakdown of one trace as a JSON-serialisable dict (see module docstring and the README)."""
    reader = KinetoEventReader(path)
    an = Analyzer()
    gc_was_on = gc.isenabled()
    gc.disable()                      # millions of short-lived tuples, no cycles: collection is wasted time
    try:
        gpu, runtime, annotation = an.gpu, an.runtime, an.annotation
        n = 0
        for block in reader.blocks():
            n += len(block)
            for e in block:
                cat = e.cat
                if cat in GPU_CATS:
                    gpu(e)
                elif cat in RUNTIME_CATS:
                    runtime(e)
                elif cat in ANNOTATION_CATS:
                    annotation(e)
        an.counts["events"] += n
        an.finish()
    finally:
        if gc_was_on:
            gc.enable()
    return build_result(an, path, reader, top)


def build_result(an: Analyzer, path, reader, top: int) -> dict:
    header = reader.header if isinstance(reader.header, dict) else {}
    gpu_total = sum(v[1] for v in an.cats.values())
    marks = an.steps.describe()
    steps, phase_times, phase_steps = [], defaultdict(lambda: defaultdict(float)), defaultdict(list)
    t0 = min((d["cpu_start"] for d in marks.values()), default=0.0)
    g0 = min((s[2] for s in an.dev.values()), default=0.0)
    for key in sorted(set(marks) | {k for k in an.by_step if k is not None},
                      key=lambda k: marks.get(k, {}).get("cpu_start", math.inf)):
        d = marks.get(key, {"step": key[2], "annotation": "", "cpu_start": t0, "cpu_dur": 0.0, "phase": "unknown"})
        s = an.by_step.get(key) or StepAcc()
        span = s.last - s.first if s.kernels else 0.0
        row = {"step": d["step"], "phase": d["phase"], "annotation": d["annotation"],
               "cpu_start_ms": round((d["cpu_start"] - t0) / 1e3, 4), "cpu_dur_us": round(d["cpu_dur"], 3),
               "gpu_start_ms": round((s.first - g0) / 1e3, 4) if s.kernels else None,
               "gpu_span_us": round(span, 3), "gpu_busy_us": round(span - s.idle_in, 3),
               "idle_in_step_us": round(s.idle_in, 3),
               "gap_before_us": None if s.gap_before is None else round(s.gap_before, 3),
               "kernels": s.kernels, "kernel_time_us": round(s.time, 3),
               "launch_api_us": round(s.launch_api_us, 3),
               "categories": {c: round(t, 3) for c, t in sorted(s.cats.items(), key=lambda x: -x[1])}}
        steps.append(row)
        for c, t in s.cats.items():
            phase_times[d["phase"]][c] += t
        phase_steps[d["phase"]].append(row)
    unattributed = {c: v[1] for c, v in an.cats.items()}
    for p in phase_times.values():
        for c, t in p.items():
            unattributed[c] -= t
    if sum(unattributed.values()) > 1e-6:
        phase_times["outside_steps"] = defaultdict(float, {c: t for c, t in unattributed.items() if t > 1e-9})
    phases = {}
    for ph in list(phase_steps) + [p for p in phase_times if p not in phase_steps]:
        times = phase_times[ph]
        rows = phase_steps.get(ph, [])
        tot = sum(times.values())
        n = len(rows) or 1
        phases[ph] = {"steps": len(rows), "time_us": round(tot, 3), "categories": _cat_table(times, tot),
                      "mean_step_cpu_dur_us": round(sum(r["cpu_dur_us"] for r in rows) / n, 3),
                      "mean_step_gpu_span_us": round(sum(r["gpu_span_us"] for r in rows) / n, 3),
                      "mean_step_idle_in_step_us": round(sum(r["idle_in_step_us"] for r in rows) / n, 3),
                      "mean_step_kernel_time_us": round(sum(r["kernel_time_us"] for r in rows) / n, 3),
                      "mean_step_launch_api_us": round(sum(r["launch_api_us"] for r in rows) / n, 3),
                      "mean_gap_before_us": round(sum(r["gap_before_us"] or 0.0 for r in rows) / n, 3)}
    window = sum(s[0] - s[2] for s in an.dev.values())
    idle_total = sum(an.idle.values())
    per_name: dict = {}
    for (name, cat), (count, t) in an.names.items():
        v = per_name.setdefault(name, [0, 0.0, {}])
        v[0] += count
        v[1] += t
        v[2][cat] = t
    names = sorted(per_name.items(), key=lambda kv: -kv[1][1])[:top]
    top_kernels = [{"name": n, "category": max(v[2].items(), key=lambda x: x[1])[0], "count": v[0],
                    "time_us": round(v[1], 3), "mean_us": round(v[1] / v[0], 3),
                    "share": round(v[1] / gpu_total, 6) if gpu_total else 0.0,
                    "categories": {c: round(t, 3) for c, t in sorted(v[2].items(), key=lambda x: -x[1])}}
                   for n, v in names]
    result = {
        "rules_version": RULES_VERSION,
        "trace": {"file": Path(path).name, "bytes": Path(path).stat().st_size, "parser": reader.parser,
                  "devices": [d.get("name") for d in header.get("deviceProperties", []) or []],
                  "rank": (header.get("distributedInfo") or {}).get("rank"),
                  "events": an.counts["events"], "kernels": an.counts["kernel"],
                  "memcpy": an.counts["gpu_memcpy"], "memset": an.counts["gpu_memset"],
                  "user_annotations": an.counts["user_annotation"],
                  "gpu_user_annotations": an.counts["gpu_user_annotation"]},
        "has_gpu_kernels": an.counts["kernel"] > 0,
        "gpu_time_us": round(gpu_total, 3), "kernel_time_us": round(an.kernel_only_us, 3),
        "categories": _cat_table({c: v[1] for c, v in an.cats.items()}, gpu_total,
                                 {c: v[0] for c, v in an.cats.items()}),
        "phases": phases, "steps": steps,
        "idle": {"gpu_window_us": round(window, 3), "gpu_busy_us": round(window - idle_total, 3),
                 "utilization": round((window - idle_total) / window, 6) if window else 0.0,
                 "in_steps_us": round(an.idle["in_steps"], 3),
                 "between_steps_us": round(an.idle["between_steps"], 3),
                 "outside_steps_us": round(an.idle["outside_steps"], 3)},
        "launch": {"apis": {k: {"count": v[0], "cpu_time_us": round(v[1], 3), "mean_us": round(v[1] / v[0], 3)}
                            for k, v in sorted(an.apis.items(), key=lambda kv: -kv[1][1])},
                   "cpu_time_us": round(sum(v[1] for v in an.apis.values()), 3),
                   "launch_to_gpu_start": {k: h.summary() for k, h in an.latency.items()}},
        "top_kernels": top_kernels,
        "ordering": {"reordered_beyond_window": an.out_of_order, "activities_without_launch": an.no_launch},
        "notes": [],
    }
    if not result["has_gpu_kernels"]:
        result["notes"].append("no GPU kernels in this trace (a CPU-only profile?): the kernel breakdown is "
                               "empty; steps are listed with their CPU annotation times only")
    if reader.truncated:
        result["notes"].append(f"the trace file ends inside traceEvents (cut short): analysed its "
                               f"{an.counts['events']} complete events")
    if not marks:
        result["notes"].append("no step annotations (execute_context_* / worker.execute_model #N): "
                               "per-step and per-phase figures are empty; totals are still valid")
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", help="Kineto / Chrome JSON trace (.json, .json.gz, .json.xz) or a merged trace")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("--out", help="write here instead of standard output")
    p.add_argument("--top", type=int, default=20, help="how many kernels in the top-N table (default 20)")


def run(args: argparse.Namespace) -> int:
    from vllm_w2ext.analysis.kernels.report import render
    if args.top < 0:
        print("vllm-w2ext analyze: --top must be >= 0", file=sys.stderr)
        return 2
    try:
        result = analyze(args.trace, top=args.top)
    except UnreadableTrace as e:
        print(f"vllm-w2ext analyze: {e}", file=sys.stderr)
        return 2
    text = render(result, args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vllm-w2ext analyze")
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
