"""Served load test (CPU, tiny model): `vllm serve` with every exporter on (OTLP/gRPC spans to a local
receiver, per-process Perfetto trace files, the metrics endpoint, NVTX; OTLP and metrics go through the
plugin's export processes unless VLLM_W2EXT_EXPORT_PROCESS=off is set) under `vllm bench serve` at
request rate inf, in several waves.

Records the RSS and open file descriptors of the server's process tree once a second and, settled,
after each wave; then checks: no failed request, exact span counts (`vllm.request`, `engine.request`
and `front.add_request` spans == requests sent; spans received == spans recorded by the processes;
the trace files parse as a Perfetto `Trace` and hold the same slices; nothing dropped, no export
error), and no growth of memory or fds from one wave to the next (during a wave uvicorn holds one
socket per in-flight request, so only the settled values are compared) plus a bound on the peak RSS;
after SIGINT every process of the tree (export processes included) exits within 60 s.

    python benchmarks/served_load.py [--prompts 1000] [--waves 3] [--out benchmarks/results/cpu/served_load.json]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from vllm_w2ext.lab import hide_machine_paths, installed_vllm
from vllm_w2ext.lab.lab_env import cpu_model

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "vllm_w2ext.lab.vllm_cli"]


def tree_usage(pid: int) -> tuple[int, int, int]:
    """(RSS bytes, open fds, processes) of a process and its children."""
    try:
        procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0, 0
    rss = fds = 0
    for p in procs:
        try:
            rss += p.memory_info().rss
            fds += p.num_fds()
        except psutil.Error:
            pass
    return rss, fds, len(procs)


def keep_relative(out: Path, trace_dir: Path) -> None:
    """Committed results name no path of this machine: the repository becomes ``.``, the venv
    ``<venv>``, the temporary trace folder ``<trace_dir>``; the server log is gzipped."""
    files = sorted(out.parent.glob(out.stem + ".bench*.json")) + [out.with_suffix(".server.log")]
    for f in files:
        text = hide_machine_paths(f.read_text(), ROOT, ((str(trace_dir), "<trace_dir>"),))
        if f.suffix == ".log":
            with gzip.open(f.with_suffix(".log.gz"), "wt") as g:
                g.write(text)
            f.unlink()
        else:
            f.write_text(text)


def vllm_version() -> str:
    return " ".join(installed_vllm() or ("?",))


def trace_file_slices(directory: Path) -> dict[str, int]:
    """Slice names counted over every per-process trace file, each parsed whole as a Perfetto Trace."""
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent
    names: dict[str, int] = {}
    for f in sorted(directory.glob("w2ext-*.pftrace")):
        for p in Trace.FromString(f.read_bytes()).packet:
            if p.HasField("track_event") and p.track_event.type == TrackEvent.Type.TYPE_SLICE_BEGIN:
                names[p.track_event.name] = names.get(p.track_event.name, 0) + 1
    return names


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--waves", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/cpu/served_load.json"))
    ap.add_argument("--peak-rss-mib", type=float, default=4096, help="bound on the server tree's sampled RSS")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from vllm_w2ext.lab import free_port
    from vllm_w2ext.lab.model_folders import tiny_llama
    from vllm_w2ext.receiver import OTLPReceiver
    model = tiny_llama(ROOT / ".cache/models/tiny-llama")
    load_before = round(os.getloadavg()[0], 2)      # other jobs on the machine add noise: recorded
    rx = OTLPReceiver().start()
    port, mport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_W2EXT", "OTEL_"))}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    trace_dir = Path(tempfile.mkdtemp(prefix="w2ext-load-traces-"))
    env.update(VLLM_W2EXT="1", VLLM_W2EXT_METRICS_PORT=str(mport), VLLM_CPU_KVCACHE_SPACE="1",
               VLLM_W2EXT_TRACE_DIR=str(trace_dir), OTEL_SERVICE_NAME="w2ext-load", **rx.env("grpc"))
    log = open(out.with_suffix(".server.log"), "w")
    server = subprocess.Popen(CLI + ["serve", str(model), "--port", str(port), "--host", "127.0.0.1", "--dtype",
                                     "float32", "--max-model-len", "512", "--enforce-eager",
                                     "--served-model-name", "tiny"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, cwd=str(ROOT))
    samples, stop = [], threading.Event()
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)

        def sample():
            while not stop.is_set():
                rss, fds, n = tree_usage(server.pid)
                samples.append({"t": round(time.time(), 2), "rss_mib": round(rss / 2**20, 1), "fds": fds, "procs": n,
                                "spans_received": len(rx.requests)})
                stop.wait(1.0)
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.time()
        settled, results = [], []
        for wave in range(a.waves):
            name = out.with_suffix(f".bench{wave}.json").name
            bench = subprocess.run(CLI + ["bench", "serve", "--backend", "vllm", "--model", "tiny", "--tokenizer",
                                          str(model), "--port", str(port), "--dataset-name", "random",
                                          "--random-input-len", "32", "--random-output-len", "16",
                                          "--num-prompts", str(a.prompts), "--request-rate", "inf", "--ignore-eos",
                                          "--save-result", "--result-dir", str(out.parent), "--result-filename",
                                          name],
                                   env={k: v for k, v in env.items() if not k.startswith(("VLLM_W2EXT", "OTEL_"))},
                                   capture_output=True, text=True, timeout=1800, cwd=str(ROOT))
            results.append(json.loads((out.parent / name).read_text()) if bench.returncode == 0 else {})
            time.sleep(5)                 # let connections close and the exporters drain
            rss, fds, n = tree_usage(server.pid)
            settled.append({"wave": wave, "rss_mib": round(rss / 2**20, 1), "fds": fds, "procs": n})
        wall = time.time() - t0
        time.sleep(3)                     # the last export interval
        total = a.prompts * a.waves
        spans = rx.wait_for(lambda s: sum(x.name == "engine.request" for x in s) >= total, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        stop.set()
        th.join()
    finally:
        try:
            tree = [psutil.Process(server.pid)] + psutil.Process(server.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        t_stop = time.monotonic()
        server.send_signal(signal.SIGINT)
        # every process of the tree, the plugin's export processes (own sessions) included, must exit
        _, alive = psutil.wait_procs(tree, timeout=60)
        stop_s = round(time.monotonic() - t_stop, 1)
        for p in alive:
            p.kill()
        final = rx.spans()          # + what the processes flushed while shutting down
        rx.stop()
    from prometheus_client.parser import text_string_to_metric_families
    counters = {}
    for fam in text_string_to_metric_families(metrics):
        for s in fam.samples:
            if s.name in ("vllm_w2ext_spans_recorded_total", "vllm_w2ext_spans_dropped_total",
                          "vllm_w2ext_export_errors_total"):
                counters[f"{s.name}{{{s.labels.get('role')}}}"] = s.value
    names = {}
    for s in spans:
        if s.role:
            names[s.name] = names.get(s.name, 0) + 1
    final_names: dict[str, int] = {}
    for s in final:
        if s.role:
            final_names[s.name] = final_names.get(s.name, 0) + 1
    trace_slices = trace_file_slices(trace_dir)
    shutil.rmtree(trace_dir, ignore_errors=True)
    recorded = sum(v for k, v in counters.items() if "recorded" in k)
    first, last = settled[0], settled[-1]
    peak = max((x["rss_mib"] for x in samples), default=0.0)
    checks = {
        "waves": a.waves, "requests": total,
        "failed": [r.get("failed") for r in results], "completed": [r.get("completed") for r in results],
        "no_failed_requests": all(r.get("failed") == 0 and r.get("completed") == a.prompts for r in results),
        "request_spans_equal_requests": names.get("vllm.request", 0) == total,
        "engine_request_spans_equal_requests": names.get("engine.request", 0) == total,
        "add_request_spans_equal_requests": names.get("front.add_request", 0) == total,
        # engine.request spans are derived on the export thread, not recorded on vLLM's threads
        "spans_received_equal_recorded": sum(names.values()) == recorded + names.get("engine.request", 0),
        # both read after the server exited (shutdown may flush one more idle step)
        "trace_files_parse_and_match_otlp": trace_slices == final_names,
        "nothing_dropped": all(v == 0 for k, v in counters.items() if "dropped" in k or "errors" in k),
        "peak_rss_mib": peak, "peak_rss_bound_mib": a.peak_rss_mib,
        "peak_rss_bounded": 0 < peak < a.peak_rss_mib,
        "settled_after_each_wave": settled,
        "rss_growth_first_to_last_wave_mib": round(last["rss_mib"] - first["rss_mib"], 1),
        "rss_bounded": last["rss_mib"] - first["rss_mib"] < 0.05 * first["rss_mib"],
        "fd_growth_first_to_last_wave": last["fds"] - first["fds"],
        "fds_bounded": last["fds"] - first["fds"] <= 8,
        "stop_s": stop_s, "processes_left_after_stop": len(alive), "all_exited_after_stop": not alive,
    }
    res = results[-1] if results else {}
    report = {"what": __doc__.splitlines()[0], "date": time.strftime("%Y-%m-%d %H:%M %Z"),
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "vllm": vllm_version(),
                          "loadavg_1m_before_after": [load_before, round(os.getloadavg()[0], 2)]},
              "plugin_env": {k: v for k, v in env.items() if k.startswith("VLLM_W2EXT") and "PORT" not in k
                             and "DIR" not in k},
              "prompts_per_wave": a.prompts, "wall_s": round(wall, 1), "checks": checks, "span_counts": names,
              "plugin_counters": counters, "span_counts_after_shutdown": final_names, "trace_file_slices": trace_slices, "samples": samples,
              "bench": {k: res.get(k) for k in ("request_throughput", "output_throughput", "mean_ttft_ms",
                                                 "mean_tpot_ms", "duration")}}
    out.write_text(json.dumps(report, indent=1))
    log.close()
    keep_relative(out, trace_dir)
    print(json.dumps({k: report[k] for k in ("wall_s", "checks", "span_counts", "bench")}, indent=1))
    ok = all(v for v in checks.values() if isinstance(v, bool))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
