"""Batch-1 latency A/B on this machine: stock vLLM vs the plugin with every exporter on, exporting
in-process (``VLLM_W2EXT_EXPORT_PROCESS=off``) vs through the export process (``on``, the default).

Each run is one ``vllm bench latency`` (its own engine start) with OTLP/gRPC spans to a loopback
receiver and the metrics endpoint scraped every second; configurations are interleaved, ``--reps``
rounds. Writes the raw bench JSON of every run and a summary with the machine and vLLM version.

    python benchmarks/export_process_ab.py [--reps 3] [--out benchmarks/results/cpu/export_process_ab]

The CPU build of vLLM is used here (2 cores: the engine, the export processes and the receiver all
share them, so this is a worst case for running more processes, not the H100's picture); on the
H100 use benchmarks/gpu/overhead_ab.sh.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vllm_w2ext.lab import free_port, hide_machine_paths, installed_vllm
from vllm_w2ext.lab.model_folders import tiny_llama
from vllm_w2ext.receiver import OTLPReceiver

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"stock": {}, "plugin_in_process": {"VLLM_W2EXT_EXPORT_PROCESS": "off"},
           "plugin_export_process": {"VLLM_W2EXT_EXPORT_PROCESS": "on"}}


def run(name: str, model: Path, out: Path, args, rx: OTLPReceiver) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_W2EXT", "OTEL_"))}
    env.update(VLLM_CPU_KVCACHE_SPACE="1", TOKENIZERS_PARALLELISM="false", VLLM_LOGGING_LEVEL="WARNING")
    scraper = None
    if name != "stock":
        port = free_port()
        env.update(VLLM_W2EXT="1", VLLM_W2EXT_METRICS_PORT=str(port), **rx.env("grpc"), **CONFIGS[name])
        scraper = subprocess.Popen([sys.executable, "-m", "vllm_w2ext.lab.scrape", f"http://127.0.0.1:{port}/metrics",
                                    str(out / f"{name}.prom"), "--interval", "1"])
    result = out / f"{name}.json"
    cmd = [sys.executable, "-m", "vllm_w2ext.lab.vllm_cli", "bench", "latency", "--model", str(model),
           "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", "--input-len", str(args.input_len),
           "--output-len", str(args.output_len), "--batch-size", "1", "--num-iters-warmup", "2",
           "--num-iters", str(args.iters), "--output-json", str(result)]
    with open(out / f"{name}.log", "w") as log:
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=str(ROOT))
    if scraper is not None:
        scraper.terminate()
        scraper.wait(10)
    logf = out / f"{name}.log"              # committed: no path of the machine it ran on
    logf.write_text(hide_machine_paths(logf.read_text(errors="replace"), ROOT, ((sys.base_prefix, "<python>"),)))
    return json.loads(result.read_text())["avg_latency"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--input-len", type=int, default=64)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/cpu/export_process_ab"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = tiny_llama(ROOT / "tests/.cache/models/tiny-llama")
    rx = OTLPReceiver().start()
    results: dict[str, list[float]] = {k: [] for k in CONFIGS}
    load_before = os.getloadavg()[0]
    for rep in range(1, args.reps + 1):
        order = list(CONFIGS) if rep % 2 else list(reversed(CONFIGS))
        rep_dir = out / f"rep{rep}"
        rep_dir.mkdir(exist_ok=True)
        for name in order:
            lat = run(name, model, rep_dir, args, rx)
            results[name].append(lat)
            print(f"rep {rep} {name}: {lat * 1000:.1f} ms", flush=True)
    rx.stop()
    stock = statistics.mean(results["stock"])
    summary = {
        "what": "vllm bench latency, batch 1, tiny Llama (float32, eager), every exporter on in plugin runs",
        "input_len": args.input_len, "output_len": args.output_len, "iters": args.iters, "reps": args.reps,
        "avg_latency_s": results,
        "vs_stock_mean": {k: round(statistics.mean(v) / stock - 1, 4) for k, v in results.items()},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)},
        "vllm": " ".join(installed_vllm() or ("?",)),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["vs_stock_mean"]))
    return 0



if __name__ == "__main__":
    sys.exit(main())
