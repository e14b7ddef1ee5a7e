"""The breakdown as a JSON-serialisable dict, from an Analyzer that has read a whole trace: one helper
per section of the result (trace, categories, steps, phases, idle, launch, top kernels, notes), so each
section's arithmetic can be read, and changed, on its own. The keys and their order are the format of
``analyze --format json`` (and the CSV/text renderings read them): keep them stable. ``an`` is the
``analyzer.Analyzer`` (not imported here: the analyzer imports this module)."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from vllm_w2ext.analysis.kernels.rules import CATEGORIES, RULES_VERSION
from vllm_w2ext.analysis.kernels.steps import StepAcc

if TYPE_CHECKING:
    from vllm_w2ext.analysis.readers.kineto_events import KinetoEventReader

PHASE_MEANS = (("mean_step_cpu_dur_us", "cpu_dur_us"), ("mean_step_gpu_span_us", "gpu_span_us"),
               ("mean_step_idle_in_step_us", "idle_in_step_us"), ("mean_step_kernel_time_us", "kernel_time_us"),
               ("mean_step_launch_api_us", "launch_api_us"))


def build_result(an, path, reader: KinetoEventReader, top: int) -> dict:
    header = reader.header if isinstance(reader.header, dict) else {}
    gpu_total = sum(v[1] for v in an.cats.values())
    marks = an.steps.describe()
    steps, phase_times, phase_steps = _step_rows(an, marks)
    _add_outside_steps(an, phase_times)
    return {
        "rules_version": RULES_VERSION,
        "trace": _trace_summary(an, path, reader, header),
        "has_gpu_kernels": an.counts["kernel"] > 0,
        "gpu_time_us": round(gpu_total, 3), "kernel_time_us": round(an.kernel_only_us, 3),
        "categories": _cat_table({c: v[1] for c, v in an.cats.items()}, gpu_total,
                                 {c: v[0] for c, v in an.cats.items()}),
        "phases": _phase_table(phase_steps, phase_times), "steps": steps,
        "idle": _idle_summary(an),
        "launch": _launch_summary(an),
        "top_kernels": _top_kernels(an, top, gpu_total),
        "ordering": {"reordered_beyond_window": an.out_of_order, "activities_without_launch": an.no_launch},
        "notes": _notes(an, reader, marks),
    }


def _cat_table(times: dict, total: float, counts: dict | None = None) -> dict:
    """Every category (in report order, zeros included) with its time and share of ``total``."""
    out = {}
    for c in CATEGORIES:
        t = times.get(c, 0.0)
        out[c] = {"time_us": round(t, 3), "share": round(t / total, 6) if total else 0.0}
        if counts is not None:
            out[c]["count"] = counts.get(c, 0)
    return out


def _trace_summary(an, path, reader: KinetoEventReader, header: dict) -> dict:
    return {"file": Path(path).name, "bytes": Path(path).stat().st_size, "parser": reader.parser,
            "devices": [d.get("name") for d in header.get("deviceProperties", []) or []],
            "rank": (header.get("distributedInfo") or {}).get("rank"),
            "events": an.counts["events"], "kernels": an.counts["kernel"],
            "memcpy": an.counts["gpu_memcpy"], "memset": an.counts["gpu_memset"],
            "user_annotations": an.counts["user_annotation"],
            "gpu_user_annotations": an.counts["gpu_user_annotation"]}


# -- steps and phases ------------------------------------------------------------------------------
def _step_rows(an, marks: dict) -> tuple[list[dict], dict, dict]:
    """One row per step (marked, or only seen through its kernels), in CPU start order; with each
    phase's category times and rows, for the phase table."""
    steps: list[dict] = []
    phase_times: dict = defaultdict(lambda: defaultdict(float))
    phase_steps: dict = defaultdict(list)
    t0 = min((d["cpu_start"] for d in marks.values()), default=0.0)
    g0 = min((s[2] for s in an.dev.values()), default=0.0)
    for key in sorted(set(marks) | {k for k in an.by_step if k is not None},
                      key=lambda k: marks.get(k, {}).get("cpu_start", math.inf)):
        mark = marks.get(key, {"step": key[2], "annotation": "", "cpu_start": t0, "cpu_dur": 0.0, "phase": "unknown"})
        acc = an.by_step.get(key) or StepAcc()
        row = _step_row(mark, acc, t0, g0)
        steps.append(row)
        for c, t in acc.cats.items():
            phase_times[mark["phase"]][c] += t
        phase_steps[mark["phase"]].append(row)
    return steps, phase_times, phase_steps


def _step_row(mark: dict, acc: StepAcc, t0: float, g0: float) -> dict:
    """A step's row: its CPU mark (times from the first mark), its GPU span (from the first activity)."""
    span = acc.last - acc.first if acc.kernels else 0.0
    return {"step": mark["step"], "phase": mark["phase"], "annotation": mark["annotation"],
            "cpu_start_ms": round((mark["cpu_start"] - t0) / 1e3, 4), "cpu_dur_us": round(mark["cpu_dur"], 3),
            "gpu_start_ms": round((acc.first - g0) / 1e3, 4) if acc.kernels else None,
            "gpu_span_us": round(span, 3), "gpu_busy_us": round(span - acc.idle_in, 3),
            "idle_in_step_us": round(acc.idle_in, 3),
            "gap_before_us": None if acc.gap_before is None else round(acc.gap_before, 3),
            "kernels": acc.kernels, "kernel_time_us": round(acc.time, 3),
            "launch_api_us": round(acc.launch_api_us, 3),
            "categories": {c: round(t, 3) for c, t in sorted(acc.cats.items(), key=lambda x: -x[1])}}


def _add_outside_steps(an, phase_times: dict) -> None:
    """GPU time no step claimed becomes the pseudo-phase ``outside_steps`` (when there is any)."""
    unattributed = {c: v[1] for c, v in an.cats.items()}
    for p in phase_times.values():
        for c, t in p.items():
            unattributed[c] -= t
    if sum(unattributed.values()) > 1e-6:
        phase_times["outside_steps"] = defaultdict(float, {c: t for c, t in unattributed.items() if t > 1e-9})


def _phase_table(phase_steps: dict, phase_times: dict) -> dict:
    """Per phase: step count, category table and per-step means (phases with steps first)."""
    phases = {}
    for ph in list(phase_steps) + [p for p in phase_times if p not in phase_steps]:
        times = phase_times[ph]
        rows = phase_steps.get(ph, [])
        tot = sum(times.values())
        n = len(rows) or 1
        phases[ph] = {"steps": len(rows), "time_us": round(tot, 3), "categories": _cat_table(times, tot)}
        for out_key, row_key in PHASE_MEANS:
            phases[ph][out_key] = round(sum(r[row_key] for r in rows) / n, 3)
        phases[ph]["mean_gap_before_us"] = round(sum(r["gap_before_us"] or 0.0 for r in rows) / n, 3)
    return phases


# -- device-wide figures ---------------------------------------------------------------------------
def _idle_summary(an) -> dict:
    window = sum(s[0] - s[2] for s in an.dev.values())
    idle_total = sum(an.idle.values())
    return {"gpu_window_us": round(window, 3), "gpu_busy_us": round(window - idle_total, 3),
            "utilization": round((window - idle_total) / window, 6) if window else 0.0,
            "in_steps_us": round(an.idle["in_steps"], 3),
            "between_steps_us": round(an.idle["between_steps"], 3),
            "outside_steps_us": round(an.idle["outside_steps"], 3)}


def _launch_summary(an) -> dict:
    return {"apis": {k: {"count": v[0], "cpu_time_us": round(v[1], 3), "mean_us": round(v[1] / v[0], 3)}
                     for k, v in sorted(an.apis.items(), key=lambda kv: -kv[1][1])},
            "cpu_time_us": round(sum(v[1] for v in an.apis.values()), 3),
            "launch_to_gpu_start": {k: h.summary() for k, h in an.latency.items()}}


def _top_kernels(an, top: int, gpu_total: float) -> list[dict]:
    """The ``top`` kernel names by time; a name split over categories (a GEMM kernel used for several
    projections) is one row, labelled with the category where it spent the most time."""
    per_name: dict = {}
    for (name, cat), (count, t) in an.names.items():
        v = per_name.setdefault(name, [0, 0.0, {}])
        v[0] += count
        v[1] += t
        v[2][cat] = t
    names = sorted(per_name.items(), key=lambda kv: -kv[1][1])[:top]
    return [{"name": n, "category": max(v[2].items(), key=lambda x: x[1])[0], "count": v[0],
             "time_us": round(v[1], 3), "mean_us": round(v[1] / v[0], 3),
             "share": round(v[1] / gpu_total, 6) if gpu_total else 0.0,
             "categories": {c: round(t, 3) for c, t in sorted(v[2].items(), key=lambda x: -x[1])}}
            for n, v in names]


def _notes(an, reader: KinetoEventReader, marks: dict) -> list[str]:
    """What a reader of the numbers must know about this trace (empty, cut short, no step marks)."""
    notes = []
    if not an.counts["kernel"]:
        notes.append("no GPU kernels in this trace (a CPU-only profile?): the kernel breakdown is "
                     "empty; steps are listed with their CPU annotation times only")
    if reader.truncated:
        notes.append(f"the trace file ends inside traceEvents (cut short): analysed its "
                     f"{an.counts['events']} complete events")
    if not marks:
        notes.append("no step annotations (execute_context_* / worker.execute_model #N): "
                     "per-step and per-phase figures are empty; totals are still valid")
    return notes
