"""The main job on an embedded default: ``python -m vllm_w2ext.lab.demo [--out out/demo]``.

Builds the tiny CPU model, runs ``vllm bench throughput`` on it with the plugin enabled, a local OTLP
receiver and the metrics endpoint scraped every 0.5 s, and writes the spans, the scraped metrics, a
span report (counts per process role, an engine-step excerpt, per-phase step time, scheduler gap), a
panel PNG, a Perfetto trace of the three processes (`trace.json.gz`, merged from their trace files)
and a markdown summary to the output folder."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vllm_w2ext.analysis.metrics.charts import render
from vllm_w2ext.analysis.merge.merger import merge
from vllm_w2ext.analysis.metrics.report import run_summary
from vllm_w2ext.analysis.spans.records import write_jsonl
from vllm_w2ext.analysis.spans.tree import SpanSet
from vllm_w2ext.lab import free_port, installed_vllm
from vllm_w2ext.lab.model_folders import tiny_llama
from vllm_w2ext.receiver import OTLPReceiver

PHASES = ("engine.schedule", "engine.execute_model", "engine.sample_tokens", "engine.update_from_output",
          "worker.execute_model", "worker.forward", "worker.sample_tokens", "front.process_outputs")


def phase_table(ss: SpanSet) -> list[dict]:
    rows = []
    for name in ("engine.step",) + PHASES:
        d = [s.dur_us for s in ss.named(name)]
        if d:
            rows.append({"span": name, "count": len(d), "median_us": round(statistics.median(d), 1),
                         "p90_us": round(sorted(d)[int(0.9 * (len(d) - 1))], 1)})
    return rows


def markdown(bench: dict, report: dict, phases: list[dict], args) -> str:
    lines = ["# vllm-w2ext demo: `vllm bench throughput` on the tiny CPU model",
             "", f"{args.prompts} prompts, random {args.input_len} in / {args.output_len} out; "
             f"vLLM {report['vllm_version']} on CPU.", "",
             f"Throughput: {bench.get('tokens_per_second', 0):.1f} tok/s, "
             f"{bench.get('requests_per_second', 0):.2f} req/s (elapsed {bench.get('elapsed_time', 0):.2f} s)", "",
             "## Spans per process role", "", "| role | span | count |", "|---|---|---|"]
    for role, names in report["summary"]["span_counts"].items():
        lines += [f"| {role} | `{n}` | {c} |" for n, c in names.items()]
    lines += ["", "## Step phases (wall time)", "", "| span | count | median µs | p90 µs |", "|---|---|---|---|"]
    lines += [f"| `{r['span']}` | {r['count']} | {r['median_us']} | {r['p90_us']} |" for r in phases]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--model", help="model folder (default: the tiny Llama, built if missing)")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--input-len", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=64)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else tiny_llama(Path(".cache/models/tiny-llama"))
    rx = OTLPReceiver().start()
    mport = free_port()
    trace_dir = out / "trace_files"
    shutil.rmtree(trace_dir, ignore_errors=True)
    env = dict(os.environ, VLLM_W2EXT="1", OTEL_SERVICE_NAME="vllm-w2ext-demo", VLLM_W2EXT_METRICS_PORT=str(mport),
               VLLM_W2EXT_METRICS_INTERVAL_MS="250", VLLM_W2EXT_TRACE_DIR=str(trace_dir), **rx.env("grpc"))
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cmd = [sys.executable, "-m", "vllm_w2ext.lab.vllm_cli", "bench", "throughput", "--model", str(model),
           "--dataset-name", "random", "--random-input-len", str(args.input_len), "--random-output-len",
           str(args.output_len), "--num-prompts", str(args.prompts), "--dtype", "float32", "--max-model-len",
           "512", "--enforce-eager", "--output-json", str(out / "throughput.json")]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.time()
    scraper = subprocess.Popen([sys.executable, "-m", "vllm_w2ext.lab.scrape", f"http://127.0.0.1:{mport}/metrics",
                                str(out / "scrape_demo.prom"), "--interval", "0.5"])
    with open(out / "bench.log", "w") as log:
        rc = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    scraper.terminate()
    scraper.wait(10)
    if rc != 0:
        print(f"benchmark failed (rc={rc}); see {out / 'bench.log'}")
        return rc
    rx.wait_for(lambda s: any(x.name == "engine.request" for x in s), timeout=15)
    time.sleep(1.0)                       # let the last export batches land
    spans = rx.spans()
    rx.stop()
    write_jsonl(spans, str(out / "spans.jsonl"))
    ss = SpanSet(spans)
    bench = json.loads((out / "throughput.json").read_text())
    steps = ss.steps()
    mid = steps[len(steps) // 2].step if steps else 1
    version = (installed_vllm() or ("", "?"))[1]
    report = {"vllm_version": version, "wall_s": round(time.time() - t0, 1), "summary": ss.summary(),
              "phases": phase_table(ss), "step_excerpt": ss.step_excerpt(mid, 3)}
    report["metrics"] = run_summary(str(out), "demo")
    (out / "span_report.json").write_text(json.dumps(report, indent=1))
    md_text = markdown(bench, report, report["phases"], args) + metrics_markdown(report["metrics"])
    try:
        png = render(str(out), "demo")
        if png:
            md_text += f"\n![panels]({os.path.basename(png)})\n"
    except ImportError:                      # matplotlib is in the `lab` extra
        md_text += "\n(install the `lab` extra for panel PNGs)\n"
    info = merge([str(trace_dir)], str(out / "trace.json.gz"))
    md_text += (f"\n## Perfetto trace\n\n`trace.json.gz`: the spans of {len(info['span_files'])} processes "
                f"({info['events']} events, flows request -> steps -> worker) merged from `trace_files/` with "
                "`vllm-w2ext merge`; open it in https://ui.perfetto.dev (or add a torch-profiler trace to the "
                "merge to see kernels/ops under the steps).\n")
    (out / "report.md").write_text(md_text)
    print((out / "report.md").read_text())
    print(f"wrote {out}/: report.md, trace.json.gz (Perfetto), trace_files/, throughput.json, spans.jsonl, "
          "span_report.json, scrape_demo.prom, panels_demo.png, bench.log")
    return 0


def metrics_markdown(m: dict) -> str:
    if not m or "scheduler_gap" not in m:
        return "\n(no metrics scraped)\n"
    g = m["scheduler_gap"]
    lines = ["", "## Scheduler gap and step metrics (one endpoint, all processes)", "",
             f"Engine steps: {m['engine_steps']:.0f}; prefill tokens {m['prefill_tokens']:.0f}, decode tokens "
             f"{m['decode_tokens']:.0f}.", "",
             f"CPU gap between model executions: mean {g['mean_ms']} ms, p50 {g['p50_ms']} ms, p90 {g['p90_ms']} ms "
             f"over {g['count']:.0f} gaps; split (s): " + ", ".join(f"{k} {v}" for k, v in g["parts_s"].items()) + ".",
             "", "Mean phase time (ms): " + ", ".join(f"{k} {v}" for k, v in m["phase_mean_ms"].items()) + ".",
             "", f"Plugin self-cost: {m['self_cost']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
