"""PNG charts of the lab report (matplotlib, ``lab`` extra): Figure 1 throughput, Figure 2 latency
vs batch, kernel-time breakdown, scheduler gap / GPU busy, plugin overhead. Each function takes the
report's summary dict (``summary.summarise``) and returns the PNG's file name or None."""
from __future__ import annotations

import os

from vllm_w2ext.vocab import GAP_PARTS


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out_dir: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=90)
    _plt().close(fig)
    return name


def throughput(s: dict, out_dir: str) -> str | None:
    rows = [(k, v) for k, v in s["throughput"].items()] + [(k, v) for k, v in s["online"].items()]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4))
    names = [k for k, _ in rows]
    ax.bar(names, [v["total_tok_s"] for _, v in rows], label="total tok/s")
    ax.bar(names, [v["output_tok_s"] or 0 for _, v in rows], label="output tok/s", alpha=0.8)
    ref = s.get("reference", {}).get("offline_throughput_sharegpt_tok_s")
    if ref and s.get("gpu"):
        ax.axhline(ref, color="k", ls="--", lw=1, label=f"lab {s['reference_gpu']} ShareGPT ({ref:,.0f})")
    ax.set(title=f"Figure 1: offline and online throughput ({s['target']})", ylabel="tokens/s")
    ax.tick_params(axis="x", rotation=25)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "fig1_throughput.png")


def latency(s: dict, out_dir: str) -> str | None:
    if not s["latency"]:
        return None
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for mode, pts in s["latency"].items():
        bs = sorted(pts)
        ax[0].plot(bs, [1e3 * pts[b]["avg_latency_s"] for b in bs], "o-", label=mode)
        ax[1].plot(bs, [pts[b]["per_token_ms"] for b in bs], "o-", label=mode)
    ref = s.get("reference", {})
    if s.get("gpu") and ref.get("latency_ms"):
        bs, ms = zip(*sorted(ref["latency_ms"].items()))
        ax[0].plot(bs, ms, "k--", label=f"lab {s['reference_gpu']}")
    ax[0].set(title="Figure 2: latency vs batch size", xlabel="batch size", ylabel="ms per batch", xscale="log")
    ax[1].set(title="per-token latency (batch latency / output tokens)", xlabel="batch size", ylabel="ms",
              xscale="log")
    for a in ax:
        a.legend(fontsize=8)
    return _save(fig, out_dir, "fig2_latency.png")


def kernels(s: dict, out_dir: str) -> str | None:
    runs = {k: v["shares"] for k, v in s["profile"].items() if v.get("shares")}
    if not runs:
        return None
    plt = _plt()
    cats = sorted({c for sh in runs.values() for c in sh})
    fig, ax = plt.subplots(figsize=(9, 4))
    bottom = [0.0] * len(runs)
    for c in cats:
        vals = [100 * runs[r].get(c, 0.0) for r in runs]
        ax.bar(list(runs), vals, bottom=bottom, label=c)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set(title="Kernel time by category (profiled decode)", ylabel="% of kernel time")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1, 1))
    return _save(fig, out_dir, "kernel_breakdown.png")


def gaps(s: dict, out_dir: str) -> str | None:
    rows = {k: v for k, v in s["plugin_metrics"].items() if v.get("gap", {}).get("count")}
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    parts = tuple(GAP_PARTS)
    names = list(rows)
    bottom = [0.0] * len(names)
    for p in parts:
        vals = [1e3 * rows[n]["gap"]["parts_s"].get(p, 0.0) / rows[n]["gap"]["count"] for n in names]
        ax[0].bar(names, vals, bottom=bottom, label=p)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax[0].set(title="Scheduler gap per model execution, by part", ylabel="ms per gap")
    ax[0].legend(fontsize=8)
    busy = {n: rows[n].get("gpu_busy_ratio") for n in names}
    nvml = s.get("nvml", {})
    xs = range(len(names))
    ax[1].bar([x - 0.2 for x in xs], [100 * (busy[n] or 0) for n in names], width=0.4, label="GPU busy (CUDA events)")
    ax[1].bar([x + 0.2 for x in xs], [nvml.get(n, {}).get("util_gpu_mean_pct", 0) for n in names], width=0.4,
              label="NVML utilization (session mean)")
    ax[1].set_xticks(list(xs), names)
    ax[1].set(title="GPU busy (0 where no CUDA)", ylabel="%", ylim=(0, 105))
    ax[1].legend(fontsize=8)
    for a in ax:
        a.tick_params(axis="x", rotation=30)
    return _save(fig, out_dir, "gap_gpu_busy.png")


def overhead(s: dict, out_dir: str) -> str | None:
    ab = {k: v for k, v in s["overhead"].items() if "stock" in v}
    if not ab:
        return None
    plt = _plt()
    fig, ax = plt.subplots(1, len(ab), figsize=(5.5 * len(ab), 4), squeeze=False)
    for a, (k, v) in zip(ax[0], ab.items()):
        for mode, mk in (("stock", "o"), ("plugin", "s")):
            a.plot(range(1, len(v[mode]) + 1), v[mode], mk + "-", label=mode)
        a.set_title(f"{k}\nplugin cost {v['cost_pct']:+.2f} %", fontsize=9)
        a.set(xlabel="repetition", ylabel=v.get("unit", ""))
        a.legend(fontsize=8)
    return _save(fig, out_dir, "overhead.png")


ALL = {"Figure 1: throughput": throughput, "Figure 2: latency vs batch": latency, "Kernel breakdown": kernels,
       "Scheduler gap and GPU busy": gaps, "Plugin overhead (A/B)": overhead}
