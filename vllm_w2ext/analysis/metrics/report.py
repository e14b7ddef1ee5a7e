"""Summarise the plugin's metrics scraped during benchmark runs (``lab/scrape.py`` output) and
compare the GPU busy fraction from CUDA events with NVML utilization sampled over the same run.

    python -m vllm_w2ext.analysis.metrics.report RUN_DIR   # scrape_<run>.prom[.gz], nvml_<run>.csv"""
from __future__ import annotations

import csv
import glob
import json
import os
import sys

from vllm_w2ext.analysis.metrics.scrapes import (STEPS, executed_steps, final_scrape, quantile, read_scrapes, samples,
                                                 self_cost, total)
from vllm_w2ext.vocab import ENGINE, FRONT, WORKER


def nvml_stats(path: str, intervals: list[tuple[float, float]]) -> dict:
    """NVML samples (``lab/gpu_monitor.py`` CSV) that fall inside any of ``intervals``."""
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            t = float(r["time"])
            if any(a <= t <= b for a, b in intervals):
                rows.append(r)
    if not rows:
        return {}
    util = [float(r["util_gpu_pct"]) for r in rows]
    busy_rows = [u for u in util if u > 0]
    return {"samples": len(rows), "seconds": round(sum(b - a for a, b in intervals), 2),
            "util_gpu_mean_pct": round(sum(util) / len(util), 1),
            "util_gpu_mean_when_nonzero_pct": round(sum(busy_rows) / max(len(busy_rows), 1), 1),
            "power_mean_w": round(sum(float(r["power_w"]) for r in rows) / len(rows), 1),
            "mem_used_max_mib": max(int(float(r["mem_used_mib"])) for r in rows)}


def stepping_intervals(scrapes: list[tuple[float, str]]) -> list[tuple[float, float]]:
    """Scrape intervals (t_i, t_i+1) during which the executed-step counter went up."""
    out, prev = [], None
    for t, text in scrapes:
        n = executed_steps(text)
        if prev is not None and n > prev[1]:
            out.append((prev[0], t))
        prev = (t, n)
    return out


def run_summary(run_dir: str, name: str) -> dict:
    path = next(iter(glob.glob(os.path.join(run_dir, f"scrape_{name}.prom*"))), None)
    if path is None:
        return {}
    scrapes = read_scrapes(path)
    if not scrapes:
        return {"error": "no scrape reached the endpoint"}
    t_first, first_text = scrapes[0]
    t_last, text = final_scrape(scrapes)
    ss = samples(text)
    w = {"role": WORKER}
    gap_n = total(ss, "vllm_w2ext_scheduler_gap_seconds_count", **w)
    gap_sum = total(ss, "vllm_w2ext_scheduler_gap_seconds_sum", **w)
    parts = {p: total(ss, "vllm_w2ext_scheduler_gap_part_seconds_total", part=p, **w)
             for p in ("schedule", "update", "engine_idle", "other")}
    busy = total(ss, "vllm_w2ext_gpu_busy_seconds_total")
    idle = total(ss, "vllm_w2ext_gpu_idle_seconds_total")
    steps = total(ss, STEPS, executed="true")
    out = {
        "scrapes": len(scrapes), "window_s": round(t_last - t_first, 2),
        "engine_steps": steps,
        "prefill_tokens": total(ss, "vllm_w2ext_batch_tokens_total", kind="prefill"),
        "decode_tokens": total(ss, "vllm_w2ext_batch_tokens_total", kind="decode"),
        "scheduler_gap": {"count": gap_n, "mean_ms": round(1e3 * gap_sum / gap_n, 3) if gap_n else None,
                          "p50_ms": _ms(quantile(ss, "vllm_w2ext_scheduler_gap_seconds", 0.5, **w)),
                          "p90_ms": _ms(quantile(ss, "vllm_w2ext_scheduler_gap_seconds", 0.9, **w)),
                          "parts_s": {k: round(v, 4) for k, v in parts.items()}},
        "cpu_model_execution_s": round(total(ss, "vllm_w2ext_model_execution_seconds_total", **w), 3),
        "gpu": {"busy_s": round(busy, 3), "idle_between_steps_s": round(idle, 3),
                "busy_ratio": round(busy / (busy + idle), 4) if busy + idle else None,
                "forward_p50_ms": _ms(quantile(ss, "vllm_w2ext_gpu_forward_seconds", 0.5)),
                "gap_p50_ms": _ms(quantile(ss, "vllm_w2ext_gpu_gap_seconds", 0.5)),
                "gap_p90_ms": _ms(quantile(ss, "vllm_w2ext_gpu_gap_seconds", 0.9))},
        "phase_mean_ms": {},
        "self_cost": self_cost(lambda name, **lab: total(ss, name, **lab), steps, ss),
    }
    for role, phase in ((ENGINE, "step"), (ENGINE, "schedule"), (ENGINE, "update_from_output"),
                        (WORKER, "execute_model"), (WORKER, "sample_tokens"), (WORKER, "forward"),
                        (FRONT, "process_outputs")):
        n = total(ss, "vllm_w2ext_phase_duration_seconds_count", role=role, phase=phase)
        s = total(ss, "vllm_w2ext_phase_duration_seconds_sum", role=role, phase=phase)
        if n:
            out["phase_mean_ms"][f"{role}.{phase}"] = round(1e3 * s / n, 3)
    nv = os.path.join(run_dir, f"nvml_{name}.csv")
    if os.path.exists(nv):
        t0 = _read_time(os.path.join(run_dir, f"start_{name}.txt"), t_first)
        t1 = _read_time(os.path.join(run_dir, f"end_{name}.txt"), t_last)
        out["nvml_whole_run"] = nvml_stats(nv, [(t0, t1)])
        # only the scrape intervals in which engine steps ran (no start-up, compile, warm-up gaps)
        out["nvml_while_stepping"] = nvml_stats(nv, stepping_intervals(scrapes))
    return out


def self_cost_text(c: dict) -> str:
    """The plugin's cost to this run, in words (``analysis.metrics.scrapes.self_cost``)."""
    per, flush = c.get("us_per_step"), c.get("engine_core_gil_hold_per_flush_ms")
    out = "Plugin self-cost, from its own metrics (every process): "
    if per:
        hooks = (f"{per['hooks_direct']:.1f} µs per executed engine step in the calls their C fronts took, every "
                 f"one timed ({per['hooks']:.1f} by the sampled counter, every hook)" if per.get("hooks_direct") else
                 f"{per['hooks']:.1f} µs per executed engine step (sampled)")
        out += (f"its hooks took {hooks}, its export threads "
                f"{per['export_thread_cpu']:.1f} µs of CPU, holding the GIL for {per['export_thread_gil_hold']:.1f} µs. ")
    if flush:
        out += (f"The EngineCore's export thread held the GIL {flush['p50']:.2f} ms per flush at the median and "
                f"{flush['p99']:.2f} ms at p99 ({flush['flushes']:.0f} flushes): at most how long one step waited for it at once. ")
    return out + (f"{c['spans_recorded']:.0f} spans recorded, {c['spans_dropped']:.0f} dropped, "
                  f"{c['hook_errors']:.0f} hook faults.")


def _ms(v: float | None) -> float | None:
    return None if v is None else round(1e3 * v, 3)


def _read_time(path: str, default: float) -> float:
    try:
        with open(path) as f:
            return float(f.read().strip())
    except (OSError, ValueError):
        return default


def main(argv: list[str] | None = None) -> int:
    run_dir = (argv or sys.argv[1:])[0]
    names = sorted({os.path.basename(p).split(".")[0][len("scrape_"):]
                    for p in glob.glob(os.path.join(run_dir, "scrape_*.prom*"))})
    report = {n: run_summary(run_dir, n) for n in names}
    with open(os.path.join(run_dir, "metrics_summary.json"), "w") as f:
        json.dump(report, f, indent=1)
    for n, r in report.items():
        g, gap = r.get("gpu", {}), r.get("scheduler_gap", {})
        print(f"{n}: steps {r.get('engine_steps')} gap mean {gap.get('mean_ms')} ms p50 {gap.get('p50_ms')} "
              f"p90 {gap.get('p90_ms')} | GPU busy ratio {g.get('busy_ratio')} (busy {g.get('busy_s')} s, idle "
              f"{g.get('idle_between_steps_s')} s) | NVML {r.get('nvml_while_stepping', {}).get('util_gpu_mean_pct')} %"
              f" | self {r.get('self_cost')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
