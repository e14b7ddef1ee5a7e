"""PNG of the dashboard's main panels, drawn from scraped metrics (for machines where Grafana cannot
run): per scrape interval, EngineCore phase means, the scheduler gap by part, GPU busy (CUDA events)
next to NVML utilization, and tokens/s by kind.

    python -m vllm_w2ext.analysis.metrics.charts RUN_DIR   # writes panels_<run>.png"""
from __future__ import annotations

import csv
import glob
import os
import sys

from vllm_w2ext.analysis.metrics.scrapes import read_scrapes, samples, total
from vllm_w2ext.vocab import ENGINE, WORKER

ENGINE_PHASES = ("schedule", "execute_model", "sample_tokens", "update_from_output")
GAP_PARTS = ("schedule", "update", "engine_idle", "other")


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
        for k in ("prefill", "decode"):
            r[k] = total(ss, "vllm_w2ext_batch_tokens_total", kind=k)
        rows.append(r)
    return rows


def render(run_dir: str, name: str) -> str | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path = next(iter(glob.glob(os.path.join(run_dir, f"scrape_{name}.prom*"))), None)
    if path is None:
        return None
    rows = series(read_scrapes(path))
    if len(rows) < 2:
        return None
    t0 = rows[0]["t"]
    x, phase, gaps, busy, tok = [], {p: [] for p in ENGINE_PHASES}, {p: [] for p in GAP_PARTS}, [], {"prefill": [], "decode": []}
    for a, b in zip(rows, rows[1:]):
        dn = b["step_n"] - a["step_n"]
        if dn <= 0:
            continue
        dt = b["t"] - a["t"]
        x.append(b["t"] - t0)
        for p in ENGINE_PHASES:
            d = b[f"{p}_n"] - a[f"{p}_n"]
            phase[p].append(1e3 * (b[f"{p}_sum"] - a[f"{p}_sum"]) / d if d else 0.0)
        gn = max(b["gap_n"] - a["gap_n"], 1)
        for p in GAP_PARTS:
            gaps[p].append(1e3 * (b[f"gap_{p}"] - a[f"gap_{p}"]) / gn)
        db, di = b["busy"] - a["busy"], b["idle"] - a["idle"]
        busy.append(100 * db / (db + di) if db + di > 0 else float("nan"))
        for k in tok:
            tok[k].append((b[k] - a[k]) / dt)
    if not x:
        return None
    fig, ax = plt.subplots(2, 2, figsize=(13, 8))
    ax[0][0].stackplot(x, *[phase[p] for p in ENGINE_PHASES], labels=ENGINE_PHASES)
    ax[0][0].set(title="EngineCore step time by phase (mean per step)", ylabel="ms")
    ax[0][0].legend(loc="upper right", fontsize=8)
    ax[0][1].stackplot(x, *[gaps[p] for p in GAP_PARTS], labels=GAP_PARTS)
    ax[0][1].set(title="Scheduler gap (CPU, between model executions) by part", ylabel="ms per gap")
    ax[0][1].legend(loc="upper right", fontsize=8)
    ax[1][0].plot(x, busy, label="GPU busy between forwards (CUDA events)")
    nv = os.path.join(run_dir, f"nvml_{name}.csv")
    if os.path.exists(nv):
        with open(nv) as f:
            pts = [(float(r["time"]) - t0, float(r["util_gpu_pct"])) for r in csv.DictReader(f)]
        pts = [p for p in pts if x[0] - 1 <= p[0] <= x[-1] + 1]
        ax[1][0].plot([p[0] for p in pts], [p[1] for p in pts], alpha=0.6, label="NVML utilization.gpu")
    ax[1][0].set(title="GPU busy %", ylabel="%", ylim=(0, 105))
    ax[1][0].legend(loc="lower right", fontsize=8)
    for k, v in tok.items():
        ax[1][1].plot(x, v, label=k)
    ax[1][1].set(title="Scheduled tokens/s by kind", ylabel="tokens/s")
    ax[1][1].legend(fontsize=8)
    for a in ax.flat:
        a.set_xlabel("s since first scrape")
    fig.suptitle(f"vllm-w2ext metrics: {name}")
    fig.tight_layout()
    out = os.path.join(run_dir, f"panels_{name}.png")
    fig.savefig(out, dpi=90)
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
