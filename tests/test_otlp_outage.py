"""The collector is down: `vllm serve` with the plugin exporting to a port that refuses connections
(HTTP/protobuf) or to one that accepts TCP and never answers (gRPC, black hole). Under `vllm bench serve`
load: no request fails, each process logs at most one exporter line, the lost spans are counted in
the metrics, and the server still shuts down promptly."""
from __future__ import annotations

import re
import subprocess
import time
import urllib.request

import pytest
from conftest import ROOT, clean_env, concurrently
from support.collectors import BlackHole
from support.prometheus import metric_sum
from support.vllm_server import CLI, free_port, vllm_serve


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


KINDS = ("refused-http", "blackhole-grpc")


def serve_through_outage(kind: str, tiny_model, tmp):
    hole = BlackHole() if kind.startswith("blackhole") else None
    target = hole.port if hole else free_port()          # a free port nobody listens on: refused
    otel = ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{target}",
             "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true"}
            if hole else
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{target}/v1/traces",
             "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"})
    mport = free_port()
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_METRICS_PORT=str(mport), OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="3",
                    **otel)
    log = tmp / "server.log"
    t_stop = None
    try:
        with vllm_serve(tiny_model, env, log, ROOT) as port:
            bench = subprocess.run(CLI + ["bench", "serve", "--backend", "vllm", "--model", "tiny", "--tokenizer",
                                          str(tiny_model), "--port", str(port), "--dataset-name", "random",
                                          "--random-input-len", "16", "--random-output-len", "8",
                                          "--num-prompts", "60", "--ignore-eos"],
                                   env=clean_env(), capture_output=True, text=True, timeout=300, cwd=str(ROOT))
            # wait until the exporters have given up on some batches (timeouts + retries)
            deadline = time.monotonic() + 60
            text = scrape(mport)
            while metric_sum(text, "vllm_w2ext_export_errors_total") < 1 and time.monotonic() < deadline:
                time.sleep(1)
                text = scrape(mport)
            t_stop = time.monotonic()
        stop_s = time.monotonic() - t_stop
    finally:
        if hole:
            hole.close()
    print(f"{kind}: stopped in {stop_s:.1f} s")
    return bench, text, log.read_text(), stop_s


@pytest.fixture(scope="module")
def outages(tiny_model, tmp_path_factory) -> dict:
    """Both servers side by side: nothing asserted depends on timing but the shutdown bound, an upper
    bound that a busier machine can only make harder to meet."""
    tmp = {kind: tmp_path_factory.mktemp(kind) for kind in KINDS}
    return dict(zip(KINDS, concurrently(*[lambda kind=kind: serve_through_outage(kind, tiny_model, tmp[kind])
                                          for kind in KINDS])))


@pytest.fixture(scope="module", params=KINDS)
def outage(request, outages):
    return outages[request.param]


def test_no_request_fails(outage):
    bench, _, _, _ = outage
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert "Successful requests:                     60" in bench.stdout
    assert "Failed requests:                         0" in bench.stdout or "Failed requests" not in bench.stdout


def test_losses_are_counted_not_logged(outage):
    _, text, log, _ = outage
    assert metric_sum(text, "vllm_w2ext_export_errors_total") >= 1
    assert metric_sum(text, "vllm_w2ext_spans_dropped_total") >= 1
    lines = log.splitlines()
    suffix = "further messages of this exporter are suppressed"
    # at most one exporter line per process: the plugin's export processes (one per vLLM process) and
    # vLLM 0.32's own start-up tracer in EngineCore/worker (it exports when OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    # is set; the plugin's filter limits it to one line too). The line names its pid.
    said = [line for line in lines if suffix in line]
    pids = [int(m.group(1)) for line in said for m in [re.search(r"vllm_w2ext, pid (\d+):", line)] if m]
    assert len(pids) == len(said) and 1 <= len(said) <= 6, "\n".join(line[:150] for line in said)
    assert len(set(pids)) == len(pids), said
    # ... and no other one: no per-retry, per-batch or per-span messages
    noisy = [line for line in lines if any(k in line for k in ("Transient error", "Failed to export", "Queue full",
                                                                 "Exception while exporting")) and suffix not in line]
    assert noisy == [], noisy[:5]


def test_shutdown_is_bounded(outage):
    _, _, _, stop_s = outage
    assert stop_s < 45, f"server took {stop_s:.1f}s to stop with the collector down"
