"""PNG of the dashboard's main panels, drawn from scraped metrics (for machines where Grafana cannot
run): per scrape interval, EngineCore phase means, running / waiting requests, tokens/s by kind, the
device's busy share (CUDA events on a GPU, next to NVML utilization; on the CPU build the worker's
forwards are the device timeline: ``vllm_w2ext_device_busy_seconds_total`` and
``vllm_w2ext_device_idle_seconds_total``), the device's idle time by cause, and the CPU scheduler gap by
part. A panel without data says so in the panel (and why), instead of drawing an empty axis.

    python -m vllm_w2ext.analysis.metrics.charts RUN_DIR   # writes panels_<run>.png (+ .json: what each panel drew)"""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import sys

from vllm_w2ext.analysis.metrics.scrapes import read_scrapes, run_scrapes, samples, total
from vllm_w2ext.vocab import ENGINE, GAP_PARTS, IDLE_CAUSES, WORKER

ENGINE_PHASES = ("schedule", "execute_model", "sample_tokens", "update_from_output")
GAUGES = ("t", "running", "waiting")


def series(scrapes):
    rows = []
    for t, text in scrapes:
        ss = samples(text)
        r = {"t": t}
        for ph in ENGINE_PHASES + ("step",):
            r[f"{ph}_sum"] = total(ss, "vllm_w2ext_phase_duration_seconds_sum", role=ENGINE, phase=ph)
            r[f"{ph}_n"] = total(ss, "vllm_w2ext_phase_duration_seconds_count", role=ENGINE, phase=ph)
        for p in GAP_PARTS:
            r[f"gap_{p}"] = total(ss, "vllm_w2ext_scheduler_gap_part_seconds_total", role=WORKER, part=p)
        r["gap_n"] = total(ss, "vllm_w2ext_scheduler_gap_seconds_count", role=WORKER)
        r["busy"] = total(ss, "vllm_w2ext_gpu_busy_seconds_total")
        r["idle"] = total(ss, "vllm_w2ext_gpu_idle_seconds_total")
        r["dev_busy"] = total(ss, "vllm_w2ext_device_busy_seconds_total")
        for c in IDLE_CAUSES:
            r[f"idle_{c}"] = total(ss, "vllm_w2ext_device_idle_seconds_total", cause=c)
        r["running"] = total(ss, "vllm_w2ext_scheduler_running_requests")
        r["waiting"] = total(ss, "vllm_w2ext_scheduler_waiting_requests")
        for k in ("prefill", "decode"):
            r[k] = total(ss, "vllm_w2ext_batch_tokens_total", kind=k)
        rows.append(r)
    return rows


def _empty(ax, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="#555", wrap=True)
    ax.set_yticks([])
    ax.w2ext_note = why


def _has(values) -> bool:
    return any(v and not (isinstance(v, float) and math.isnan(v)) for v in values)


def render(run_dir: str, name: str, marks: list[tuple[str, float, float]] | None = None) -> str | None:
    """``panels_<name>.png`` in ``run_dir`` from ``scrape_<name>.prom[.gz]``; ``marks``: (label, start,
    end) unix times of the run's phases, shaded on every panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = next(iter(glob.glob(os.path.join(run_dir, f"scrape_{name}.prom*"))), None)
    if path is None:
        return None
    rows = series(run_scrapes(read_scrapes(path)))
    first = next((i for i, r in enumerate(rows) if r["step_n"] > 0), None)
    if first is None:
        return None
    rows = rows[max(0, first - 4):]        # from ~2 s before the first step (not the engine's start-up)
    if len(rows) < 2:
        return None
    t0 = rows[0]["t"]
    x = []
    phase = {p: [] for p in ENGINE_PHASES}
    gaps = {p: [] for p in GAP_PARTS}
    idle = {c: [] for c in IDLE_CAUSES}
    gpu_busy, dev_busy, running, waiting = [], [], [], []
    tok = {"prefill": [], "decode": []}
    for a, b in zip(rows, rows[1:]):
        dt = b["t"] - a["t"]
        if dt <= 0 or any(b[k] < a[k] for k in a if k not in GAUGES):
            continue                       # a counter went back: processes exited (their series are gone)
        x.append(b["t"] - t0)
        for p in ENGINE_PHASES:
            d = b[f"{p}_n"] - a[f"{p}_n"]
            phase[p].append(1e3 * (b[f"{p}_sum"] - a[f"{p}_sum"]) / d if d > 0 else float("nan"))
        gn = b["gap_n"] - a["gap_n"]
        for p in GAP_PARTS:
            gaps[p].append(1e3 * (b[f"gap_{p}"] - a[f"gap_{p}"]) / gn if gn > 0 else 0.0)
        db, di = b["busy"] - a["busy"], b["idle"] - a["idle"]
        gpu_busy.append(100 * db / (db + di) if db + di > 0 else float("nan"))
        dd = b["dev_busy"] - a["dev_busy"]
        didle = {c: b[f"idle_{c}"] - a[f"idle_{c}"] for c in IDLE_CAUSES}
        tot = dd + sum(didle.values())
        dev_busy.append(100 * dd / tot if tot > 0 else float("nan"))
        for c in IDLE_CAUSES:
            idle[c].append(1e3 * didle[c] / dt)
        running.append(b["running"])
        waiting.append(b["waiting"])
        for k in tok:
            tok[k].append((b[k] - a[k]) / dt)
    if not x:
        return None
    # the device's own timeline leads (idle by cause, busy), the CPU's views follow
    fig, ax = plt.subplots(2, 3, figsize=(18, 8.5))
    a = ax[1][0]
    if _has(v for p in ENGINE_PHASES for v in phase[p]):
        a.stackplot(x, *[[0.0 if math.isnan(v) else v for v in phase[p]] for p in ENGINE_PHASES], labels=ENGINE_PHASES)
        a.legend(loc="upper right", fontsize=8)
    else:
        _empty(a, "no EngineCore step in this run")
    a.set(title="EngineCore step time by phase (mean per step)", ylabel="ms")
    a = ax[1][1]
    a.plot(x, running, label="running")
    a.plot(x, waiting, label="waiting")
    a.set(title="Requests running / waiting after each schedule", ylabel="requests")
    a.legend(loc="upper right", fontsize=8)
    a = ax[1][2]
    for k, v in tok.items():
        a.plot(x, v, label=k)
    a.set(title="Scheduled tokens/s by kind", ylabel="tokens/s")
    a.legend(loc="upper right", fontsize=8)
    a = ax[0][1]
    cuda = _has(gpu_busy)
    if cuda:
        a.plot(x, gpu_busy, label="GPU busy between forwards (CUDA events)")
    if _has(dev_busy):
        a.plot(x, dev_busy, label="device busy (" + ("CUDA events" if cuda else "the worker's forwards") + ")",
               linestyle="--" if cuda else "-")
    nv = os.path.join(run_dir, f"nvml_{name}.csv")
    if os.path.exists(nv):
        with open(nv) as f:
            pts = [(float(r["time"]) - t0, float(r["util_gpu_pct"])) for r in csv.DictReader(f)]
        pts = [p for p in pts if x[0] - 1 <= p[0] <= x[-1] + 1]
        a.plot([p[0] for p in pts], [p[1] for p in pts], alpha=0.6, label="NVML utilization.gpu")
    if cuda or _has(dev_busy):
        a.legend(loc="lower right", fontsize=8)
        a.set_ylim(0, 105)
    else:
        _empty(a, "no device timeline in this run")
    a.set(title="Device busy % of the stepping time" + ("" if cuda else " (no CUDA: CPU build)"), ylabel="%")
    a = ax[0][0]
    causes = [c for c in IDLE_CAUSES if _has(idle[c])]
    if causes:
        a.stackplot(x, *[idle[c] for c in causes], labels=causes)
        a.legend(loc="upper right", fontsize=8)
    elif _has(dev_busy):
        _empty(a, "the device was never idle between forwards")
    else:
        _empty(a, "no vllm_w2ext_device_idle_seconds_total in these scrapes\n(no forward ran, or a plugin older than it)")
    a.set(title="Device idle between forwards, by cause", ylabel="ms idle per s")
    a = ax[0][2]
    parts = [p for p in GAP_PARTS if _has(gaps[p])]
    if parts:
        a.stackplot(x, *[gaps[p] for p in parts], labels=parts)
        a.legend(loc="upper right", fontsize=8)
    else:
        _empty(a, "no gap between model executions was measured")
    a.set(title="Scheduler gap (CPU, between model executions) by part", ylabel="ms per gap")
    for a in ax.flat:
        a.set_xlabel("s since the first step")
        a.set_xlim(0, x[-1])
        for i, (label, s, e) in enumerate(marks or ()):
            a.axvspan(s - t0, e - t0, color=("#f2f2f2", "#e6eef8")[i % 2], zorder=0)
            a.text((s + e) / 2 - t0, 1.0, label, transform=a.get_xaxis_transform(), ha="center", va="bottom",
                   fontsize=7, color="#666")
    fig.suptitle(f"vllm-w2ext metrics: {name} ({len(rows)} scrapes from 2 s before the first step)")
    fig.tight_layout()
    out = os.path.join(run_dir, f"panels_{name}.png")
    fig.savefig(out, dpi=80)
    panels = [{"title": a.get_title(), "lines": len(a.lines), "areas": len(a.collections),
               "note": getattr(a, "w2ext_note", None)} for a in ax.flat]
    with open(os.path.join(run_dir, f"panels_{name}.json"), "w") as f:
        json.dump({"scrapes": len(rows), "panels": panels}, f, indent=1)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    run_dir = (argv or sys.argv[1:])[0]
    for p in sorted(glob.glob(os.path.join(run_dir, "scrape_*.prom*"))):
        name = os.path.basename(p).split(".")[0][len("scrape_"):]
        print(render(run_dir, name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
