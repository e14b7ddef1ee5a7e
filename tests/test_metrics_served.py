"""`vllm serve` with the plugin under `vllm bench serve` load, scraped by a real Prometheus: our
endpoint (all processes) and vLLM's own /metrics side by side; every non-CUDA dashboard expression,
including the vLLM request-latency row, returns data; vLLM's /metrics is unchanged by the plugin."""
from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from conftest import ROOT, clean_env
from support.prometheus import Prometheus
from support.vllm_server import CLI, free_port, vllm_serve

sys.path.insert(0, str(ROOT))
from grafana.dashboard_queries import load_queries  # noqa: E402

DASHBOARD = ROOT / "grafana" / "dashboards" / "vllm-w2ext.json"


@pytest.fixture(scope="module")
def served_metrics(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics-served")
    mport = free_port()
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_METRICS_PORT=str(mport))
    with vllm_serve(tiny_model, env, tmp / "server.log", ROOT) as port:
        prom = Prometheus(tmp, {"vllm-w2ext": f"127.0.0.1:{mport}", "vllm": f"127.0.0.1:{port}"}).start()
        try:
            yield _load_and_scrape(prom, port, tiny_model)
        finally:
            prom.stop()


def _load_and_scrape(prom, port, tiny_model):
    """`vllm bench serve` load, then wait until Prometheus has both jobs' data."""
    bench = subprocess.run(CLI + ["bench", "serve", "--backend", "vllm", "--model", "tiny", "--tokenizer",
                                  str(tiny_model), "--port", str(port), "--dataset-name", "random",
                                  "--random-input-len", "16", "--random-output-len", "8", "--num-prompts",
                                  "48", "--request-rate", "8", "--ignore-eos"],
                           env=clean_env(), capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    assert prom.wait('vllm:e2e_request_latency_seconds_count > 0', 60)
    assert prom.wait('vllm_w2ext_engine_steps_total > 0', 30)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        vllm_metrics = r.read().decode()
    return prom, vllm_metrics, bench.stdout


def test_bench_serve_completes(served_metrics):
    _, _, out = served_metrics
    assert "Successful requests:                     48" in out


def test_vllm_own_metrics_endpoint_unchanged(served_metrics):
    _, text, _ = served_metrics
    assert "vllm:e2e_request_latency_seconds_bucket" in text
    assert "vllm_w2ext" not in text     # ours live on their own port, never in vLLM's registry


def test_every_dashboard_expression_returns_data_served(served_metrics):
    prom, _, _ = served_metrics
    queries = [q for q in load_queries(DASHBOARD) if not q["cuda_only"]]
    assert any(q["vllm_own"] for q in queries)
    empty = [(q["panel"], q["expr"]) for q in queries if not prom.wait(q["expr"], timeout=10)]
    assert empty == []
