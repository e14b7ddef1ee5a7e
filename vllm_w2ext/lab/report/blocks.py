"""The lab report as a list of blocks, ``("h1"|"h2"|"p", text)``, ``("img", file or None)`` and
``("table", header, rows)``, rendered alike to markdown and HTML by markup.py. One function per section
of the report, in report order, each reading the summary dict (summary.py) and the chart files."""
from __future__ import annotations

from vllm_w2ext.lab.report.summary import FLAG_PCT, stock_or_plugin

Blocks = list[tuple]


def blocks(s: dict, charts: dict[str, str | None]) -> Blocks:
    """The whole report: header, comparison, then the lab's sections 1 to 7."""
    return (_header(s) + _comparison(s) + _model_folders(s) + _throughput(s, charts) + _latency(s, charts)
            + _profile(s, charts) + _gpu_monitor(s) + _online(s) + _plugin_metrics(s, charts)
            + _overhead(s, charts) + _sglang(s))


def _f(v, nd=1):
    """A table cell: — for missing, thousands separators, ``nd`` decimals for floats."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _header(s: dict) -> Blocks:
    """Title and what ran: versions, CPU, GPU, commit, size, model; failed sessions, if any."""
    env = s["env"]
    gpu = env.get("gpu", {})
    gpu_s = ", ".join(d["name"] for d in gpu.get("devices", [])) + f" (driver {gpu.get('driver')})" \
        if gpu.get("status") == "ok" else f"no GPU ({gpu.get('status', 'unknown')})"
    b: Blocks = [("h1", f"The lab on {s.get('gpu') or s['target']}: results"),
                 ("p", f"vLLM {env.get('vllm')}, torch {env.get('torch')}, Python {env.get('python')}; "
                       f"CPU {env.get('cpu', {}).get('model')} ({env.get('cpu', {}).get('cores')} cores); GPU {gpu_s}; "
                       f"commit {env.get('git_commit', '?')[:12]}; size {env.get('lab_args', {}).get('size')}, "
                       f"plugin {env.get('lab_args', {}).get('plugin')}. Model: "
                       f"{env.get('lab_args', {}).get('model', '?').rsplit('/', 1)[-1]}"
                       + (" (dummy weights)" if s["models"].get("target_model", {}).get("dummy_weights") else "")
                       + ". The ShareGPT-format prompts are SYNTHETIC (vllm_w2ext.lab.sharegpt_sample), not ShareGPT.")]
    if s["errors"]:
        b.append(("p", "FAILED sessions (see raw/*.error.txt): " + ", ".join(s["errors"])))
    return b


def _comparison(s: dict) -> Blocks:
    """Our numbers against the lab's for the same GPU (its H100 column beside them), then the
    hand-written notes that explain differences."""
    ref_gpu = s.get("reference_gpu") or "H100"
    same = s.get("gpu") == ref_gpu
    beside = [] if ref_gpu == "H100" else ["lab H100"]
    b: Blocks = [("h2", f"Comparison with the lab's {ref_gpu} numbers"),
                 ("p", "Source: benchmarks/lab_data/lab_reference_h100.json (the lab's H100 table and its other-GPU "
                       "columns). Differences over 10 % are flagged."
                       + ("" if same else f" This run is not on an {ref_gpu} ({s.get('gpu') or 'no GPU'}): every "
                                          "difference is expected.")),
                 ("table", ["metric", f"lab {ref_gpu}", "ours", "diff", "flag"] + beside,
                  [[r["metric"], _f(r.get("lab"), 2), _f(r["ours"], 2),
                    "—" if r["diff_pct"] is None else f"{r['diff_pct']:+.1f} %",
                    "**> 10 %**" if r["flag"] else ""] + ([_f(r["lab_h100"], 2)] if beside else [])
                   for r in s["comparison"]])]
    if s.get("beside"):
        b += _beside(s)
    if s.get("notes"):
        b += [("h2", "Why the numbers differ (notes.md)")] + [("p", para) for para in s["notes"]]
    return b


def _beside(s: dict) -> Blocks:
    """This run beside ours on another GPU: ratios, the lab's ratios, and whether decode follows HBM."""
    bs = s["beside"]
    me, other = s.get("gpu") or "this run", bs.get("gpu") or "the other run"
    rows = [[r["what"], _f(r["this"], 2), _f(r["other"], 2), _f(r["ratio"], 3), _f(r["lab_ratio"], 3)]
            for r in bs["rows"]]
    out: Blocks = [("h2", f"Beside our {other} run"),
                   ("table", ["measure", f"ours {me}", f"ours {other}", "ratio", "lab's ratio"], rows)]
    pt = next((r for r in bs["rows"] if r["metric"] == "per_token_latency_bs1_ms"), None)
    if bs.get("bandwidth_ratio") and pt and pt["ratio"]:
        off = 100 * (pt["ratio"] / bs["bandwidth_ratio"] - 1)
        out.append(("p", f"Batch-1 decode reads every weight once per token, so its per-token time should scale "
                         f"with HBM bandwidth: {other} / {me} peaks predict a ratio of {bs['bandwidth_ratio']:.3f}; "
                         f"measured {pt['ratio']:.3f} ({off:+.1f} %"
                         + ("; within 10 %)." if abs(off) <= FLAG_PCT else "; more than 10 % off: see the notes).")))
    return out


def _model_folders(s: dict) -> Blocks:
    m = s["models"]
    if not m:
        return []
    rows = [[k, _f(v["weights"]["params"]), v["weights"]["dtype"], f"{v['weights']['bytes'] / 1e9:.3f} GB",
             str(v["tokenizer"]["vocab"]), "yes" if v["tokenizer"]["roundtrip_ok"] else "NO"]
            for k, v in m.items() if isinstance(v, dict) and "weights" in v]
    return [("h2", "1. Model folders"),
            ("table", ["folder", "params", "dtype", "weight bytes", "vocab", "ids round-trip"], rows)]


def _throughput(s: dict, charts: dict) -> Blocks:
    return [("h2", "2. Offline throughput (and 6. online)"), ("img", charts.get("Figure 1: throughput")),
            ("table", ["run", "mode", "req/s", "total tok/s", "output tok/s"],
             [[k, v["mode"], _f(v["req_s"], 2), _f(v["total_tok_s"]), _f(v["output_tok_s"])]
              for k, v in s["throughput"].items()])]


def _latency(s: dict, charts: dict) -> Blocks:
    """Latency per batch size, per-token latency and the weight bandwidth it implies, and the growth."""
    rows = [[mode, str(bs), _f(1e3 * v["avg_latency_s"]), _f(v.get("per_token_ms"), 3),
             _f(v.get("achieved_tb_s"), 3), "—" if "hbm_fraction" not in v else f"{100 * v['hbm_fraction']:.1f} %"]
            for mode, pts in s["latency"].items() for bs, v in sorted(pts.items())]
    growth = [f"{mode}: {pts[max(pts)]['avg_latency_s'] / pts[min(pts)]['avg_latency_s']:.2f}x from batch {min(pts)} to {max(pts)}"
              for mode, pts in s["latency"].items() if len(pts) > 1]
    return [("h2", "3. Latency vs batch size"), ("img", charts.get("Figure 2: latency vs batch")),
            ("table", ["mode", "batch", "latency ms", "per-token ms", "weights/per-token TB/s",
                       f"of {s['hbm_tb_s']} TB/s" if s.get("hbm_tb_s") else "of HBM peak"], rows),
            ("p", "Growth: " + ("; ".join(growth) or "—") + f". Weight bytes from the model config: "
                  f"{(s['weight_bytes'] or 0) / 1e9:.3f} GB"
                  + (f" (bandwidth vs the {s['gpu']}'s {s['hbm_tb_s']} TB/s HBM peak)." if s.get("hbm_tb_s")
                     else " (no HBM peak: CPU or a GPU not in vllm_w2ext/lab/gpus.py)."))]


def _profile(s: dict, charts: dict) -> Blocks:
    """Each profiled run: merge/analyze status, the files it found, its top five kernel categories."""
    rows = [[k, str(v["batch_size"]), v["merge"] or "—", v["analyze"] or "—", str(len(v["torch_traces"] or [])),
             str(len(v["plugin_trace_files"] or [])), {True: "yes", False: "no (CPU trace)"}.get(v["gpu_kernels"], "—"),
             ", ".join(f"{c} {100 * x:.0f} %" for c, x in sorted(v["shares"].items(), key=lambda t: -t[1])[:5]) or "—"]
            for k, v in s["profile"].items()]
    b: Blocks = [("h2", "4. Profiled forward pass"), ("img", charts.get("Kernel breakdown")),
                 ("table", ["run", "batch", "merge", "analyze", "torch traces", "plugin trace files", "GPU kernels",
                            "top categories"], rows)]
    # Where the time went, as `vllm-w2ext explain` says it. The profiled runs share one engine and one trace
    # folder, so explain's spans cover that whole session: shown once, then each other run's kernel mix.
    runs = list(s["profile"].items())
    if runs:
        first, v = runs[0]
        b.append(("h3", f"Where the time went: vllm-w2ext explain on the profile session (every run on its engine: "
                        f"span files + metrics scrape) with {first}'s kernel trace"))
        b.append(("pre", v["explain"]) if v.get("explain") else
                 ("p", f"explain did not run: {v.get('explain_status') or 'no result (older lab run)'}"))
        mixes = [f"{k}: " + next((ln for ln in (o.get("explain") or "").splitlines() if ln.startswith("Kernel mix")),
                                 "no kernel mix") for k, o in runs[1:]]
        if mixes:
            b.append(("p", "With the other runs' kernel traces: " + "; ".join(mixes)))
    return b


def _gpu_monitor(s: dict) -> Blocks:
    rows = [[ph, str(v["samples"]), _f(v["seconds"]), _f(v["util_gpu_mean_pct"]), _f(v["power_mean_w"]),
             str(v["mem_used_max_mib"])] for ph, v in s["nvml"].items()]
    return [("h2", "5. GPU monitor (NVML)"),
            ("table", ["session", "samples", "s", "util mean %", "power W", "mem max MiB"], rows) if rows else
            ("p", "Needs CUDA/NVML: no NVML samples in this run (the sampler's summary logic is checked on the "
                  "committed H100 CSVs in raw/gpu_monitor.json).")]


def _online(s: dict) -> Blocks:
    """Online runs per request rate, and online at rate inf over offline (random lengths)."""
    rows = [[k, v["rate"], _f(v["req_s"], 2), _f(v["total_tok_s"]), _f(v["output_tok_s"]), _f(v["mean_ttft_ms"]),
             _f(v["mean_tpot_ms"], 2), str(v["completed"])] for k, v in s["online"].items()]
    b: Blocks = [("h2", "6. Online vs offline"),
                 ("table", ["run", "rate", "req/s", "total tok/s", "output tok/s", "TTFT ms", "TPOT ms", "completed"], rows)]
    off = stock_or_plugin(s["throughput"], "thr_random", "total_tok_s")
    inf = next((v for v in s["online"].values() if v["rate"] == "inf"), None)
    if off and inf and inf["total_tok_s"]:
        b.append(("p", f"Online at rate inf / offline (random lengths, same model): {inf['total_tok_s'] / off:.2f}."))
    return b


def _plugin_metrics(s: dict, charts: dict) -> Blocks:
    """Where the time went per run, from the plugin's counters between the first and last scrape: the device's
    idle time between forwards by cause first, the CPU timeline (scheduler gap parts) second."""
    dev = [[k, "—" if d.get("busy_share") is None else f"{100 * d['busy_share']:.1f} %", _f(d.get("idle_s"), 3),
            ", ".join(f"{c} {x:.3f}" for c, x in list(d.get("idle_by_cause_s", {}).items())[:4]) or "—"]
           for k, v in s["plugin_metrics"].items() if (d := v.get("device") or {}).get("busy_s")]
    dev_blocks: Blocks = [("p", "Device idle between forwards, by cause (the plugin's metrics, first to last scrape of "
                                "each run; GPU: CUDA events, CPU build: the worker's forwards; idle in s, largest "
                                "causes first):"),
                          ("table", ["run", "device busy", "idle s", "idle by cause s"], dev)] if dev else []
    rows = [[k, _f(v.get("engine_steps"), 0), _f(v.get("mean_requests_per_step"), 2), _f(v.get("gap", {}).get("mean_ms"), 3),
             ", ".join(f"{p} {x:.3f}" for p, x in v.get("gap", {}).get("parts_s", {}).items()),
             "—" if v.get("gpu_busy_ratio") is None else f"{100 * v['gpu_busy_ratio']:.1f} %"]
            for k, v in s["plugin_metrics"].items() if v.get("engine_steps")]
    return dev_blocks + [("p", "The CPU timeline: the scheduler gap between two model executions on the worker "
                               "(the plugin's metrics; gap parts in s; `wait_device`: the thread waited for the GPU):"),
            ("table", ["run", "steps", "requests/step", "gap mean ms", "gap parts s", "GPU busy"], rows),
            ("img", charts.get("Scheduler gap and GPU busy"))]


def _overhead(s: dict, charts: dict) -> Blocks:
    rows = [[k, str(v.get("reps")), f"{v['cost_pct']:+.2f} %", ", ".join(f"{x:+.2f}" for x in v["pair_cost_pct"]),
             f"{v['stock_spread_pct']:.2f} %", "yes" if v["within_budget"] else "NO"]
            for k, v in s["overhead"].items() if "cost_pct" in v]
    return [("h2", "7. Plugin overhead (interleaved A/B)"), ("img", charts.get("Plugin overhead (A/B)")),
            ("table", ["measure", "pairs", "plugin cost", "per pair %", "stock spread", "within 0.5 %"], rows)]


def _sglang(s: dict) -> Blocks:
    """8. SGLang's bench_one_batch beside vLLM at the same batch sizes and lengths (or why it did not run)."""
    sg = s.get("sglang")
    if not sg:
        return []
    b: Blocks = [("h2", "8. SGLang bench_one_batch vs vLLM")]
    if sg.get("skipped"):
        b.append(("p", f"SGLang skipped: {sg['skipped']}. vLLM's side ran (below)."))
    b.append(("p", "Per batch size, same input/output lengths. vLLM: prefill = a run with output 1; decode step = "
                   "(full run - prefill run) / (output - 1). SGLang: its prefill and median decode step."))
    rows = []
    for r in sg["rows"]:
        for engine in ("vllm", "sglang"):
            v = r.get(engine)
            if v:
                rows.append([str(r["batch_size"]), engine, _f(1e3 * v["prefill_latency_s"] if v["prefill_latency_s"] else None),
                             _f(v["prefill_tok_s"]), _f(1e3 * v["decode_step_s"] if v["decode_step_s"] else None, 2),
                             _f(v["decode_tok_s"]), _f(v["total_latency_s"], 3)])
    b.append(("table", ["batch", "engine", "prefill ms", "prefill tok/s", "decode step ms", "decode tok/s", "total s"],
              rows))
    return b
