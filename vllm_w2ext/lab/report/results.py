"""Numbers the lab derives from its raw JSON (no vLLM, no torch): weight bytes from a model config,
per-token latency and achieved HBM bandwidth, NVML summaries per phase, plugin-metric deltas
between the first and last scrape of a run, and the A/B overhead ratio with its spread."""
from __future__ import annotations

import csv
import glob
import json
import os
import statistics

from vllm_w2ext.analysis.metrics.scrapes import STEPS, final_scrape, quantile, read_scrapes, samples, self_cost, total
from vllm_w2ext.vocab import ENGINE, FRONT, GAP_PARTS, IDLE_CAUSES, WORKER

DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "fp8": 1}


def llama_weights(cfg: dict, dtype: str | None = None) -> dict:
    """Parameter count and bytes of a Llama-architecture config (embedding, attention, MLP, norms,
    LM head unless tied). ``bytes_per_decode_step`` leaves out the embedding table, of which a decode
    step reads only one row per sequence; the lab's "~16 GB per step" counts all weights."""
    h, i, v, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    heads = cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or h // heads
    kv = cfg.get("num_key_value_heads", heads)
    attn = h * heads * hd + 2 * h * kv * hd + heads * hd * h
    per_layer = attn + 3 * h * i + 2 * h
    embed = v * h
    head = 0 if cfg.get("tie_word_embeddings") else v * h
    params = embed + n * per_layer + h + head
    dt = dtype or cfg.get("torch_dtype") or "bfloat16"
    if dt not in DTYPE_BYTES:
        raise ValueError(f"llama_weights: unknown dtype {dt!r}; expected one of {sorted(DTYPE_BYTES)}")
    b = DTYPE_BYTES[dt]
    return {"params": params, "dtype": dt, "bytes": params * b, "bytes_per_decode_step": (params - embed) * b,
            "embedding_params": embed}


def per_token(avg_latency_s: float, output_len: int, weight_bytes: int, hbm_tb_s: float | None) -> dict:
    """The lab's definitions: per-token latency = batch latency / output tokens (prefill included);
    achieved bandwidth = weight bytes / per-token time, as a fraction of the GPU's HBM peak (``hbm_tb_s``,
    lab.gpus; None on CPU or an unknown GPU: no fraction)."""
    t = avg_latency_s / output_len
    bw = weight_bytes / t
    out = {"per_token_ms": 1e3 * t, "achieved_tb_s": bw / 1e12}
    if hbm_tb_s:
        out["hbm_fraction"] = bw / (hbm_tb_s * 1e12)
    return out


def nvml_by_phase(path: str) -> dict:
    """``gpu_monitor`` CSV -> per phase: samples, seconds, utilization mean/p50/p90, memory, power, SM clock."""
    rows: dict[str, list[dict]] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            rows.setdefault(r.get("phase") or "(none)", []).append(r)
    out = {}
    for ph, rs in rows.items():
        util = sorted(float(r["util_gpu_pct"]) for r in rs)
        ts = [float(r["time"]) for r in rs]
        out[ph] = {"samples": len(rs), "seconds": round(max(ts) - min(ts), 2),
                   "util_gpu_mean_pct": round(statistics.fmean(util), 1),
                   "util_gpu_p50_pct": util[len(util) // 2], "util_gpu_p90_pct": util[int(0.9 * (len(util) - 1))],
                   "util_gpu_busy_share": round(sum(u > 0 for u in util) / len(util), 3),
                   "mem_used_max_mib": max(int(float(r["mem_used_mib"])) for r in rs),
                   "power_mean_w": round(statistics.fmean(float(r["power_w"]) for r in rs), 1),
                   "sm_clock_mean_mhz": round(statistics.fmean(float(r["sm_clock_mhz"]) for r in rs))}
    return out


def scrape_delta(path: str) -> dict:
    """What the plugin's counters say happened between the first and last scrape of a file."""
    sc = read_scrapes(path)
    if len(sc) < 2:
        return {"scrapes": len(sc)}
    (t0, a), (t1, b) = sc[0], final_scrape(sc)
    sa, sb = samples(a), samples(b)
    d = lambda name, **lab: total(sb, name, **lab) - total(sa, name, **lab)  # noqa: E731
    w = {"role": WORKER}
    steps = d(STEPS, executed="true")
    gap_n, gap_s = d("vllm_w2ext_scheduler_gap_seconds_count", **w), d("vllm_w2ext_scheduler_gap_seconds_sum", **w)
    busy, idle = d("vllm_w2ext_gpu_busy_seconds_total"), d("vllm_w2ext_gpu_idle_seconds_total")
    req_n, req_s = d("vllm_w2ext_batch_requests_count"), d("vllm_w2ext_batch_requests_sum")
    dev_busy = d("vllm_w2ext_device_busy_seconds_total")
    by_cause = {c: d("vllm_w2ext_device_idle_seconds_total", cause=c) for c in IDLE_CAUSES}
    dev_idle = sum(by_cause.values())
    phases = {}
    for role, ph in ((ENGINE, "step"), (ENGINE, "schedule"), (ENGINE, "update_from_output"),
                     (WORKER, "execute_model"), (FRONT, "process_outputs")):
        n = d("vllm_w2ext_phase_duration_seconds_count", role=role, phase=ph)
        if n:
            phases[f"{role}.{ph}"] = {"count": n, "total_s": round(d("vllm_w2ext_phase_duration_seconds_sum",
                                                                       role=role, phase=ph), 4)}
    return {"scrapes": len(sc), "window_s": round(t1 - t0, 2), "engine_steps": steps,
            "decode_tokens": d("vllm_w2ext_batch_tokens_total", kind="decode"),
            "prefill_tokens": d("vllm_w2ext_batch_tokens_total", kind="prefill"),
            "mean_requests_per_step": round(req_s / req_n, 2) if req_n else None,
            "gap": {"count": gap_n, "total_s": round(gap_s, 4), "mean_ms": round(1e3 * gap_s / gap_n, 3) if gap_n else None,
                    "p50_ms": _ms(quantile(sb, "vllm_w2ext_scheduler_gap_seconds", 0.5, **w)),
                    "parts_s": {p: round(d("vllm_w2ext_scheduler_gap_part_seconds_total", part=p, **w), 4)
                                for p in GAP_PARTS}},
            # the device's own timeline first (GPU: CUDA events; CPU build: the forwards), idle by cause
            "device": {"busy_s": round(dev_busy, 4), "idle_s": round(dev_idle, 4),
                       "busy_share": round(dev_busy / (dev_busy + dev_idle), 4) if dev_busy + dev_idle else None,
                       "idle_by_cause_s": {c: round(v, 4) for c, v in sorted(by_cause.items(), key=lambda kv: -kv[1])
                                           if v > 0}},
            "model_execution_s": round(d("vllm_w2ext_model_execution_seconds_total", **w), 4),
            "gpu_busy_ratio": round(busy / (busy + idle), 4) if busy + idle else None,
            "phases": phases,
            "self_cost": self_cost(d, steps, sb)}


def _ms(v):
    return None if v is None else round(1e3 * v, 3)


def overhead(pairs: dict[str, list[float]], higher_is_better: bool) -> dict:
    """``{"stock": [...], "plugin": [...]}`` -> plugin cost in % of the stock mean (positive = slower),
    with the spread of each side and the range over pairs (rep i stock vs rep i plugin)."""
    s, p = pairs.get("stock", []), pairs.get("plugin", [])
    if not s or not p:
        return {"status": "needs both stock and plugin runs"}
    ms, mp = statistics.fmean(s), statistics.fmean(p)
    cost = (ms - mp) / ms if higher_is_better else (mp - ms) / ms
    per_pair = [((a - b) / a if higher_is_better else (b - a) / a) for a, b in zip(s, p)]
    spread = lambda xs: 100 * (max(xs) - min(xs)) / statistics.fmean(xs)  # noqa: E731
    return {"stock": s, "plugin": p, "stock_mean": ms, "plugin_mean": mp, "cost_pct": round(100 * cost, 3),
            "pair_cost_pct": [round(100 * x, 3) for x in per_pair],
            "stock_spread_pct": round(spread(s), 3), "plugin_spread_pct": round(spread(p), 3),
            "within_stock_spread": len(s) > 1 and min(s) <= mp <= max(s), "reps": min(len(s), len(p)),
            "budget_pct": 0.5, "within_budget": abs(cost) * 100 <= 0.5}


def load_raw(out_dir: str) -> dict[str, dict]:
    runs = {}
    for p in sorted(glob.glob(os.path.join(out_dir, "raw", "*.json"))):
        name = os.path.basename(p)[:-5]
        if name.endswith((".bench", ".result")):
            continue
        with open(p) as f:
            runs[name] = json.load(f)
    return runs
