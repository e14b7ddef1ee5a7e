"""The lab's results folder summed up as one dict (``summary.json``): per experiment the numbers the
report shows, the plugin's metrics and NVML per session, and the comparison with the lab's H100 table
(every difference over FLAG_PCT flagged). Reads JSON/CSV only; never imports vLLM."""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from vllm_w2ext.lab.model_folders import LLAMA31_8B_CONFIG
from vllm_w2ext.lab import gpus
from vllm_w2ext.lab.report.results import llama_weights, load_raw, nvml_by_phase, overhead, per_token, scrape_delta

FLAG_PCT = 10.0


def category_shares(bd: dict) -> dict[str, float]:
    """Category -> share of kernel time, from ``analyze`` JSON (``categories`` as a dict or a list)."""
    cats = bd.get("categories") or {}
    items = cats.items() if isinstance(cats, dict) else [(c.get("category") or c.get("name"), c) for c in cats]
    times = {}
    for name, v in items:
        if isinstance(v, (int, float)):
            times[name] = float(v)
        elif isinstance(v, dict):
            t = next((v[k] for k in ("time_us", "total_us", "dur_us", "time_ns", "time_s", "share", "pct", "percent")
                      if isinstance(v.get(k), (int, float))), None)
            if t is not None:
                times[name] = float(t)
    tot = sum(times.values())
    return {k: t / tot for k, t in times.items()} if tot else {}


def summarise(out: str, ref: dict) -> dict:
    runs = load_raw(out)
    env = json.loads(Path(out, "env.json").read_text()) if Path(out, "env.json").exists() else {}
    target = next((r["target"] for r in runs.values()), "?")
    # the GPU named by env.json (results of the H100 lab, --target h100, have no other source than that)
    gpu = gpus.gpu_of(env) or (gpus.known("H100") if target == "h100" else None)
    s = {"target": target, "gpu": gpu[0] if gpu else None, "hbm_tb_s": gpu[1] if gpu else None, "env": env, "runs": {k: v["status"] for k, v in runs.items()}, "throughput": {},
         "online": {}, "latency": {}, "profile": {}, "overhead": {}, "plugin_metrics": {}, "nvml": {},
         "errors": sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "raw", "*.error.txt")))}
    # the lab's numbers for this GPU (its H100 table when it did not measure this one)
    lab = gpus.lab_metrics(ref, s["gpu"]) if s["gpu"] else {}
    s["reference_gpu"] = s["gpu"] if lab else ref.get("gpu_key")
    lab = lab or gpus.lab_metrics(ref, ref.get("gpu_key"))
    s["reference"] = {"gpu": s["reference_gpu"], "offline_throughput_sharegpt_tok_s": lab.get("offline_throughput_sharegpt_tok_s"),
                      "latency_ms": {b: lab[f"latency_bs{b}_ms"] for b in (1, 4, 16, 32) if f"latency_bs{b}_ms" in lab}}
    models = runs.get("models", {}).get("result", {}).get("target_model", {})
    s["models"] = runs.get("models", {}).get("result", {})
    wbytes = models.get("weights", {}).get("bytes")
    if wbytes is None and target in ("h100", "gpu"):   # models step not run: the 8B-shaped config is known
        wbytes = llama_weights(LLAMA31_8B_CONFIG)["bytes"]
    s["weight_bytes"] = wbytes
    for name, r in runs.items():
        _add_run(s, name, r, wbytes, s["hbm_tb_s"])
    _add_overheads(s, runs)
    s["sglang"] = sglang_vs_vllm(runs)
    for p in sorted(glob.glob(os.path.join(out, "metrics", "scrape_*.prom*"))):
        s["plugin_metrics"][os.path.basename(p).split(".")[0][len("scrape_"):]] = scrape_delta(p)
    for c in sorted(glob.glob(os.path.join(out, "metrics", "nvml_*.csv"))):
        s["nvml"].update(nvml_by_phase(c))
    s["comparison"] = compare(s, ref, lab)
    notes = Path(out, "notes.md")              # hand-written explanations committed next to the results
    s["notes"] = [" ".join(x.split()) for x in notes.read_text().split("\n\n") if x.strip()] if notes.exists() else []
    return s


def _add_run(s: dict, name: str, r: dict, wbytes: int | None, hbm_tb_s: float | None) -> None:
    """One raw run's numbers into its experiment's section (failed runs are left out)."""
    res = r["result"]
    if r["experiment"] == "throughput" and r["status"] == "ok":
        s["throughput"][name] = {"total_tok_s": res["tokens_per_second"], "req_s": res["requests_per_second"],
                                 "output_tok_s": res.get("output_tokens_per_second"), "mode": r["mode"],
                                 "dataset": r["params"]["dataset"], "elapsed_s": res["elapsed_time"]}
    elif r["experiment"] == "online" and r["status"] == "ok" and "hooks" not in r["params"]:
        s["online"][name] = {"total_tok_s": res.get("total_token_throughput"), "output_tok_s": res.get("output_throughput"),
                             "req_s": res.get("request_throughput"), "rate": r["params"]["rate"],
                             "completed": res.get("completed"), "failed": res.get("failed", 0),
                             **{k: res.get(k) for k in ("mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "duration")}}
    elif r["experiment"] == "latency" and r["status"] == "ok":
        pt = per_token(res["avg_latency"], res["output_len"], wbytes, hbm_tb_s) if wbytes else {}
        s["latency"].setdefault(r["mode"], {})[res["batch_size"]] = {"avg_latency_s": res["avg_latency"], **pt}
    elif r["experiment"] == "profile":
        a = r.get("analysis", {})
        s["profile"][name] = {"merge": a.get("merge", {}).get("status"), "analyze": a.get("analyze", {}).get("status"),
                              "torch_traces": a.get("torch_traces"), "plugin_trace_files": a.get("plugin_trace_files"),
                              "shares": category_shares(a.get("breakdown") or {}),
                              "gpu_kernels": (a.get("breakdown") or {}).get("has_gpu_kernels"),
                              "batch_size": r["params"]["batch_size"],
                              "explain": a.get("explain", {}).get("text"),
                              "explain_status": a.get("explain", {}).get("status")}


# The served A/B: one `vllm serve`, the EngineCore's and workers' hooks paused ("stock" side) and resumed
# through vLLM's /collective_rpc between `bench serve` runs; the front end's hooks stay on.
SERVED_TOGGLE = "served throughput (one server, engine hooks paused vs on)"


def _add_overheads(s: dict, runs: dict) -> None:
    """The interleaved A/B runs (``ab_thr_*``, ``ab_lat_*``) as plugin cost per measure, in rep order."""
    for kind, key, better in (("thr", "tokens_per_second", True), ("lat", "avg_latency", False)):
        vals: dict[str, list] = {}
        for name in sorted(runs, key=lambda n: runs[n]["params"].get("rep", 0)):
            r = runs[name]
            if r["experiment"] == "overhead" and name.startswith(f"ab_{kind}_") and r["status"] == "ok":
                vals.setdefault(r["mode"], []).append(r["result"][key])
        if vals:
            s["overhead"]["offline throughput" if kind == "thr" else "batch-1 latency"] = dict(
                overhead(vals, better), unit="tok/s" if kind == "thr" else "s")
    served: dict[str, list] = {}                 # one server, the engine's hooks paused and on (ABBA)
    for name in sorted(runs, key=lambda n: runs[n]["params"].get("rep", 0)):
        r = runs[name]
        if r["experiment"] == "online" and "hooks" in r["params"] and r["status"] == "ok":
            served.setdefault("plugin" if r["params"]["hooks"] else "stock", []).append(
                r["result"]["total_token_throughput"])
    if served:
        s["overhead"][SERVED_TOGGLE] = dict(overhead(served, True), unit="tok/s")


def compare(s: dict, ref: dict, lab: dict[str, float]) -> list[dict]:
    """Our numbers next to the lab's for the same GPU (``lab``: gpus.lab_metrics), with the lab's H100
    column beside them; |difference| > 10 % from the lab's same-GPU number is flagged."""
    ours = {}
    thr = stock_or_plugin(s["throughput"], "thr_sharegpt", "total_tok_s")
    if thr is not None:
        ours["offline_throughput_sharegpt_tok_s"] = thr
    lat = s["latency"].get("stock") or s["latency"].get("plugin") or {}
    for b, v in lat.items():
        ours[f"latency_bs{b}_ms"] = 1e3 * v["avg_latency_s"]
    if 1 in lat and "per_token_ms" in lat[1]:
        ours["per_token_latency_bs1_ms"] = lat[1]["per_token_ms"]
        if "hbm_fraction" in lat[1]:                      # a GPU with a known HBM peak
            ours["hbm_bandwidth_fraction_bs1"] = lat[1]["hbm_fraction"]
    inf = next((v for v in s["online"].values() if v["rate"] == "inf"), None)
    if inf and inf["total_tok_s"]:
        ours["online_throughput_rate_inf_tok_s"] = inf["total_tok_s"]
    rows = []
    for k, m in ref.get("metrics", {}).items():
        v, want = ours.get(k), lab.get(k)
        diff = None if v is None or want is None else 100 * (v - want) / want
        rows.append({"metric": k, "what": m["what"], "lab": want, "lab_h100": m["value"], "ours": v, "diff_pct": diff,
                     "flag": diff is not None and abs(diff) > FLAG_PCT})
    return rows


def stock_or_plugin(d: dict, prefix: str, key: str):
    """``d["<prefix>_stock"][key]``, else the plugin run's, else None."""
    for mode in ("stock", "plugin"):
        if f"{prefix}_{mode}" in d:
            return d[f"{prefix}_{mode}"][key]
    return None


# The measures set beside another of our runs: (summary key, name, lower is better).
BESIDE = (("latency_bs1_ms", "batch-1 latency (ms)"), ("per_token_latency_bs1_ms", "batch-1 per-token latency (ms)"),
          ("latency_bs32_ms", "batch-32 latency (ms)"), ("offline_throughput_sharegpt_tok_s", "offline throughput (tok/s)"),
          ("online_throughput_rate_inf_tok_s", "online throughput at rate inf (tok/s)"))


def beside(s: dict, other: dict, ref: dict) -> dict:
    """This run set beside another of ours on a different GPU (``other``: its summary): each measure's
    ratio this / other, the lab's ratio for the same two GPUs, and for batch-1 decode the ratio the HBM
    peaks predict (a batch-1 decode step reads every weight once: its time follows bandwidth)."""
    ours = {r["metric"]: r["ours"] for r in s["comparison"]}
    theirs = {r["metric"]: r["ours"] for r in other["comparison"]}
    lab_this = gpus.lab_metrics(ref, s["gpu"]) if s.get("gpu") else {}
    lab_other = gpus.lab_metrics(ref, other["gpu"]) if other.get("gpu") else {}
    rows = []
    for key, name in BESIDE:
        a, b = ours.get(key), theirs.get(key)
        la, lb = lab_this.get(key), lab_other.get(key)
        rows.append({"metric": key, "what": name, "this": a, "other": b,
                     "ratio": a / b if a and b else None, "lab_ratio": la / lb if la and lb else None})
    bw = (other["hbm_tb_s"] / s["hbm_tb_s"]) if s.get("hbm_tb_s") and other.get("hbm_tb_s") else None
    return {"gpu": other.get("gpu"), "rows": rows, "bandwidth_ratio": bw}


def sglang_vs_vllm(runs: dict) -> dict | None:
    """SGLang's bench_one_batch rows beside vLLM at the same batch size and lengths, per batch size:
    prefill latency and tok/s, decode latency per step and tok/s. vLLM's prefill is its output-1 run;
    its decode step is (full run - prefill run) / (output - 1). None when the experiment did not run."""
    bench = runs.get("sglang_bench_one_batch")
    vllm = {r["result"]["batch_size"]: r for n, r in runs.items()
            if r["experiment"] == "sglang" and n.startswith("sgl_vllm_") and r["status"] == "ok"}
    if bench is None and not vllm:
        return None
    res = (bench or {}).get("result", {})
    out = {"skipped": res.get("skipped"), "rows": []}
    sgl = {row["batch_size"]: row for row in res.get("rows", [])}
    for b in sorted({*sgl, *(r["result"]["batch_size"] for r in vllm.values())}):
        row: dict = {"batch_size": b}
        pre = runs.get(f"sgl_vllm_prefill_bs{b}", {}).get("result")
        full = runs.get(f"sgl_vllm_bs{b}", {}).get("result")
        if pre and full:
            step = (full["avg_latency"] - pre["avg_latency"]) / max(1, full["output_len"] - 1)
            row["vllm"] = {"prefill_latency_s": pre["avg_latency"],
                           "prefill_tok_s": b * pre["input_len"] / pre["avg_latency"],
                           "decode_step_s": step, "decode_tok_s": b / step if step > 0 else None,
                           "total_latency_s": full["avg_latency"]}
        g = sgl.get(b)
        if g:
            row["sglang"] = {"prefill_latency_s": g.get("prefill_latency"), "prefill_tok_s": g.get("prefill_throughput"),
                             "decode_step_s": g.get("median_decode_latency"),
                             "decode_tok_s": g.get("median_decode_throughput"), "total_latency_s": g.get("total_latency")}
        out["rows"].append(row)
    return out
