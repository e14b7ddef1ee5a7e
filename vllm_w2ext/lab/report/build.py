"""The lab's report from a results folder: ``python -m vllm_w2ext.lab.report DIR [--reference F]``
writes ``DIR/report.md``, ``DIR/report.html`` (static, images relative) and the PNG charts, plus
``DIR/summary.json``; ``DIR/notes.md`` (paragraphs), when present, is placed under the comparison.
Compares with the lab's H100 numbers (``benchmarks/lab_data/lab_reference_h100.json``) and flags every
difference over 10 %. Never imports vLLM."""
from __future__ import annotations

import argparse
import glob
import html
import json
import os
from pathlib import Path

from vllm_w2ext.lab.report import charts as lab_charts
from vllm_w2ext.lab.report.results import llama_weights, load_raw, nvml_by_phase, overhead, per_token, scrape_delta

REFERENCE = Path(__file__).resolve().parents[3] / "benchmarks" / "lab_data" / "lab_reference_h100.json"
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
    s = {"target": target, "env": env, "runs": {k: v["status"] for k, v in runs.items()}, "throughput": {},
         "online": {}, "latency": {}, "profile": {}, "overhead": {}, "plugin_metrics": {}, "nvml": {},
         "errors": sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "raw", "*.error.txt")))}
    refm = ref.get("metrics", {})
    s["reference"] = {"offline_throughput_sharegpt_tok_s": refm.get("offline_throughput_sharegpt_tok_s", {}).get("value"),
                      "latency_ms": {b: refm[f"latency_bs{b}_ms"]["value"] for b in (1, 4, 16, 32)
                                     if f"latency_bs{b}_ms" in refm}}
    models = runs.get("models", {}).get("result", {}).get("target_model", {})
    s["models"] = runs.get("models", {}).get("result", {})
    wbytes = models.get("weights", {}).get("bytes")
    if wbytes is None and target == "h100":      # models step not run: the 8B-shaped config is known
        from vllm_w2ext.lab.model_folders import LLAMA31_8B_CONFIG
        wbytes = llama_weights(LLAMA31_8B_CONFIG)["bytes"]
    s["weight_bytes"] = wbytes
    for name, r in runs.items():
        res = r["result"]
        if r["experiment"] == "throughput" and r["status"] == "ok":
            s["throughput"][name] = {"total_tok_s": res["tokens_per_second"], "req_s": res["requests_per_second"],
                                     "output_tok_s": res.get("output_tokens_per_second"), "mode": r["mode"],
                                     "dataset": r["params"]["dataset"], "elapsed_s": res["elapsed_time"]}
        elif r["experiment"] == "online" and r["status"] == "ok":
            s["online"][name] = {"total_tok_s": res.get("total_token_throughput"), "output_tok_s": res.get("output_throughput"),
                                 "req_s": res.get("request_throughput"), "rate": r["params"]["rate"],
                                 "completed": res.get("completed"), "failed": res.get("failed", 0),
                                 **{k: res.get(k) for k in ("mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "duration")}}
        elif r["experiment"] == "latency" and r["status"] == "ok":
            pt = per_token(res["avg_latency"], res["output_len"], wbytes) if wbytes else {}
            s["latency"].setdefault(r["mode"], {})[res["batch_size"]] = {"avg_latency_s": res["avg_latency"], **pt}
        elif r["experiment"] == "profile":
            a = r.get("analysis", {})
            s["profile"][name] = {"merge": a.get("merge", {}).get("status"), "analyze": a.get("analyze", {}).get("status"),
                                  "torch_traces": a.get("torch_traces"), "plugin_trace_files": a.get("plugin_trace_files"),
                                  "shares": category_shares(a.get("breakdown") or {}),
                                  "gpu_kernels": (a.get("breakdown") or {}).get("has_gpu_kernels"),
                                  "batch_size": r["params"]["batch_size"]}
    for kind, key, better in (("thr", "tokens_per_second", True), ("lat", "avg_latency", False)):
        vals: dict[str, list] = {}
        for name in sorted(runs, key=lambda n: runs[n]["params"].get("rep", 0)):
            r = runs[name]
            if r["experiment"] == "overhead" and name.startswith(f"ab_{kind}_") and r["status"] == "ok":
                vals.setdefault(r["mode"], []).append(r["result"][key])
        if vals:
            s["overhead"]["offline throughput" if kind == "thr" else "batch-1 latency"] = dict(
                overhead(vals, better), unit="tok/s" if kind == "thr" else "s")
    for p in sorted(glob.glob(os.path.join(out, "metrics", "scrape_*.prom*"))):
        s["plugin_metrics"][os.path.basename(p).split(".")[0][len("scrape_"):]] = scrape_delta(p)
    for c in sorted(glob.glob(os.path.join(out, "metrics", "nvml_*.csv"))):
        s["nvml"].update(nvml_by_phase(c))
    s["comparison"] = compare(s, ref)
    notes = Path(out, "notes.md")              # hand-written explanations committed next to the results
    s["notes"] = [" ".join(x.split()) for x in notes.read_text().split("\n\n") if x.strip()] if notes.exists() else []
    return s


def compare(s: dict, ref: dict) -> list[dict]:
    """Our numbers next to the lab's H100 table; |difference| > 10 % is flagged."""
    ours = {}
    thr = _pick_val(s["throughput"], "thr_sharegpt", "total_tok_s")
    if thr is not None:
        ours["offline_throughput_sharegpt_tok_s"] = thr
    lat = s["latency"].get("stock") or s["latency"].get("plugin") or {}
    for b, v in lat.items():
        ours[f"latency_bs{b}_ms"] = 1e3 * v["avg_latency_s"]
    if 1 in lat and "per_token_ms" in lat[1]:
        ours["per_token_latency_bs1_ms"] = lat[1]["per_token_ms"]
        ours["hbm_bandwidth_fraction_bs1"] = lat[1]["hbm_fraction"]
    inf = next((v for v in s["online"].values() if v["rate"] == "inf"), None)
    if inf and inf["total_tok_s"]:
        ours["online_throughput_rate_inf_tok_s"] = inf["total_tok_s"]
    rows = []
    for k, m in ref.get("metrics", {}).items():
        v = ours.get(k)
        diff = None if v is None else 100 * (v - m["value"]) / m["value"]
        rows.append({"metric": k, "what": m["what"], "lab_h100": m["value"], "ours": v, "diff_pct": diff,
                     "flag": diff is not None and abs(diff) > FLAG_PCT})
    return rows


def _pick_val(d: dict, prefix: str, key: str):
    for mode in ("stock", "plugin"):
        if f"{prefix}_{mode}" in d:
            return d[f"{prefix}_{mode}"][key]
    return None


def _f(v, nd=1):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def blocks(s: dict, charts: dict[str, str | None]) -> list[tuple]:
    """The report as ("h"|"p"|"table"|"img", ...) blocks, rendered to markdown and HTML alike."""
    env = s["env"]
    gpu = env.get("gpu", {})
    gpu_s = ", ".join(d["name"] for d in gpu.get("devices", [])) + f" (driver {gpu.get('driver')})" \
        if gpu.get("status") == "ok" else f"no GPU ({gpu.get('status', 'unknown')})"
    b: list[tuple] = [("h1", f"The lab on {s['target']}: results"),
                      ("p", f"vLLM {env.get('vllm')}, torch {env.get('torch')}, Python {env.get('python')}; "
                            f"CPU {env.get('cpu', {}).get('model')} ({env.get('cpu', {}).get('cores')} cores); GPU {gpu_s}; "
                            f"commit {env.get('git_commit', '?')[:12]}; size {env.get('lab_args', {}).get('size')}, "
                            f"plugin {env.get('lab_args', {}).get('plugin')}. Model: "
                            f"{env.get('lab_args', {}).get('model', '?').rsplit('/', 1)[-1]}"
                            + (" (dummy weights)" if s["models"].get("target_model", {}).get("dummy_weights") else "")
                            + ". The ShareGPT-format prompts are SYNTHETIC (vllm_w2ext.lab.sharegpt_sample), not ShareGPT.")]
    if s["errors"]:
        b.append(("p", "FAILED sessions (see raw/*.error.txt): " + ", ".join(s["errors"])))
    b += [("h2", "Comparison with the lab's H100 numbers"),
          ("p", "Source: benchmarks/lab_data/lab_reference_h100.json. Differences over 10 % are flagged."
                + ("" if s["target"] == "h100" else " This run is not on an H100: every difference is expected.")),
          ("table", ["metric", "lab H100", "ours", "diff", "flag"],
           [[r["metric"], _f(r["lab_h100"], 2), _f(r["ours"], 2), "—" if r["diff_pct"] is None else f"{r['diff_pct']:+.1f} %",
             "**> 10 %**" if r["flag"] else ""] for r in s["comparison"]])]
    if s.get("notes"):
        b += [("h2", "Why the numbers differ (notes.md)")] + [("p", para) for para in s["notes"]]
    m = s["models"]
    if m:
        rows = [[k, _f(v["weights"]["params"]), v["weights"]["dtype"], f"{v['weights']['bytes'] / 1e9:.3f} GB",
                 str(v["tokenizer"]["vocab"]), "yes" if v["tokenizer"]["roundtrip_ok"] else "NO"]
                for k, v in m.items() if isinstance(v, dict) and "weights" in v]
        b += [("h2", "1. Model folders"), ("table", ["folder", "params", "dtype", "weight bytes", "vocab", "ids round-trip"], rows)]
    b += [("h2", "2. Offline throughput (and 6. online)"), ("img", charts.get("Figure 1: throughput")),
          ("table", ["run", "mode", "req/s", "total tok/s", "output tok/s"],
           [[k, v["mode"], _f(v["req_s"], 2), _f(v["total_tok_s"]), _f(v["output_tok_s"])] for k, v in s["throughput"].items()])]
    lat_rows = [[mode, str(bs), _f(1e3 * v["avg_latency_s"]), _f(v.get("per_token_ms"), 3),
                 _f(v.get("achieved_tb_s"), 3), "—" if "hbm_fraction" not in v else f"{100 * v['hbm_fraction']:.1f} %"]
                for mode, pts in s["latency"].items() for bs, v in sorted(pts.items())]
    growth = [f"{mode}: {pts[max(pts)]['avg_latency_s'] / pts[min(pts)]['avg_latency_s']:.2f}x from batch {min(pts)} to {max(pts)}"
              for mode, pts in s["latency"].items() if len(pts) > 1]
    b += [("h2", "3. Latency vs batch size"), ("img", charts.get("Figure 2: latency vs batch")),
          ("table", ["mode", "batch", "latency ms", "per-token ms", "weights/per-token TB/s", "of 3.35 TB/s"], lat_rows),
          ("p", "Growth: " + ("; ".join(growth) or "—") + f". Weight bytes from the model config: "
                f"{(s['weight_bytes'] or 0) / 1e9:.3f} GB (bandwidth vs the H100's 3.35 TB/s; meaningless on CPU).")]
    prow = [[k, str(v["batch_size"]), v["merge"] or "—", v["analyze"] or "—", str(len(v["torch_traces"] or [])),
             str(len(v["plugin_trace_files"] or [])), {True: "yes", False: "no (CPU trace)"}.get(v["gpu_kernels"], "—"),
             ", ".join(f"{c} {100 * x:.0f} %" for c, x in sorted(v["shares"].items(), key=lambda t: -t[1])[:5]) or "—"]
            for k, v in s["profile"].items()]
    b += [("h2", "4. Profiled forward pass"), ("img", charts.get("Kernel breakdown")),
          ("table", ["run", "batch", "merge", "analyze", "torch traces", "plugin trace files", "GPU kernels",
                     "top categories"], prow)]
    nv = [[ph, str(v["samples"]), _f(v["seconds"]), _f(v["util_gpu_mean_pct"]), _f(v["power_mean_w"]), str(v["mem_used_max_mib"])]
          for ph, v in s["nvml"].items()]
    b += [("h2", "5. GPU monitor (NVML)"),
          ("table", ["session", "samples", "s", "util mean %", "power W", "mem max MiB"], nv) if nv else
          ("p", "Needs CUDA/NVML: no NVML samples in this run (the sampler's summary logic is checked on the "
                "committed H100 CSVs in raw/gpu_monitor.json).")]
    on = [[k, v["rate"], _f(v["req_s"], 2), _f(v["total_tok_s"]), _f(v["output_tok_s"]), _f(v["mean_ttft_ms"]),
           _f(v["mean_tpot_ms"], 2), str(v["completed"])] for k, v in s["online"].items()]
    b += [("h2", "6. Online vs offline"),
          ("table", ["run", "rate", "req/s", "total tok/s", "output tok/s", "TTFT ms", "TPOT ms", "completed"], on)]
    off = _pick_val(s["throughput"], "thr_random", "total_tok_s")
    inf = next((v for v in s["online"].values() if v["rate"] == "inf"), None)
    if off and inf and inf["total_tok_s"]:
        b.append(("p", f"Online at rate inf / offline (random lengths, same model): {inf['total_tok_s'] / off:.2f}."))
    pm = [[k, _f(v.get("engine_steps"), 0), _f(v.get("mean_requests_per_step"), 2), _f(v.get("gap", {}).get("mean_ms"), 3),
           ", ".join(f"{p} {x:.3f}" for p, x in v.get("gap", {}).get("parts_s", {}).items()),
           "—" if v.get("gpu_busy_ratio") is None else f"{100 * v['gpu_busy_ratio']:.1f} %"]
          for k, v in s["plugin_metrics"].items() if v.get("engine_steps")]
    b += [("p", "Where the time went (the plugin's metrics, first to last scrape of each run; gap parts in s):"),
          ("table", ["run", "steps", "requests/step", "gap mean ms", "gap parts s", "GPU busy"], pm),
          ("img", charts.get("Scheduler gap and GPU busy"))]
    oh = [[k, str(v.get("reps")), f"{v['cost_pct']:+.2f} %", ", ".join(f"{x:+.2f}" for x in v["pair_cost_pct"]),
           f"{v['stock_spread_pct']:.2f} %", "yes" if v["within_budget"] else "NO"] for k, v in s["overhead"].items()
          if "cost_pct" in v]
    b += [("h2", "7. Plugin overhead (interleaved A/B)"), ("img", charts.get("Plugin overhead (A/B)")),
          ("table", ["measure", "pairs", "plugin cost", "per pair %", "stock spread", "within 0.5 %"], oh)]
    return b


def to_markdown(bs: list[tuple]) -> str:
    out = []
    for blk in bs:
        k = blk[0]
        if k in ("h1", "h2"):
            out += ["#" * int(k[1]) + " " + blk[1], ""]
        elif k == "p":
            out += [blk[1], ""]
        elif k == "img" and blk[1]:
            out += [f"![{blk[1]}]({blk[1]})", ""]
        elif k == "table":
            out += ["| " + " | ".join(blk[1]) + " |", "|" + "---|" * len(blk[1])]
            out += ["| " + " | ".join(r) + " |" for r in blk[2]] or ["| (no runs) |"]
            out.append("")
    return "\n".join(out)


def to_html(bs: list[tuple], title: str) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
           "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}"
           "th{background:#eef}img{max-width:100%;border:1px solid #ddd}.flag{color:#b00;font-weight:bold}"
           "</style></head><body>"]
    for blk in bs:
        k = blk[0]
        if k in ("h1", "h2"):
            out.append(f"<{k}>{e(blk[1])}</{k}>")
        elif k == "p":
            out.append(f"<p>{e(blk[1])}</p>")
        elif k == "img" and blk[1]:
            out.append(f"<p><img src='{e(blk[1])}' alt='{e(blk[1])}'></p>")
        elif k == "table":
            out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in blk[1]) + "</tr>")
            for r in blk[2]:
                out.append("<tr>" + "".join(f"<td class='flag'>{e(c.strip('*'))}</td>" if c.startswith("**")
                                            else f"<td>{e(c)}</td>" for c in r) + "</tr>")
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def build(out: str, reference: str | Path = REFERENCE) -> dict:
    ref = json.loads(Path(reference).read_text())
    s = summarise(out, ref)
    charts = {}
    for title, fn in lab_charts.ALL.items():
        try:
            charts[title] = fn(s, out)
        except ImportError:                       # matplotlib is in the `lab` extra
            charts[title] = None
    bs = blocks(s, charts)
    Path(out, "report.md").write_text(to_markdown(bs))
    Path(out, "report.html").write_text(to_html(bs, f"vllm-w2ext lab ({s['target']})"))
    s["charts"] = charts
    Path(out, "summary.json").write_text(json.dumps(s, indent=1, default=str))
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--reference", default=str(REFERENCE))
    a = ap.parse_args(argv)
    if not Path(a.results, "raw").is_dir():
        ap.error(f"RESULTS_DIR {a.results!r} has no raw/ folder (run benchmarks/lab.py --out {a.results} first)")
    s = build(a.results, a.reference)
    print(f"wrote {a.results}/report.md, report.html, summary.json and charts: "
          + ", ".join(c for c in s["charts"].values() if c))
    return 0

