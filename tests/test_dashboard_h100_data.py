"""The dashboard's CUDA-only row against real H100 data: the metrics scraped from vLLM 0.26.0 on an
H100 (committed under benchmarks/results/h100/metrics/) are backfilled into a real Prometheus with
`promtool tsdb create-blocks-from openmetrics`, and every dashboard expression - the GPU row included -
is evaluated at the end of each run and must return data."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT
from support.prometheus import Prometheus, promtool

sys.path.insert(0, str(ROOT))
from grafana.dashboard_queries import load_queries  # noqa: E402

from vllm_w2ext.analysis.metrics.scrapes import read_scrapes  # noqa: E402
from vllm_w2ext.analysis.metrics.openmetrics import scrapes_to_openmetrics  # noqa: E402

RUNS = ROOT / "benchmarks" / "results" / "h100" / "metrics"
DASHBOARD = ROOT / "grafana" / "dashboards" / "vllm-w2ext.json"


@pytest.fixture(scope="module")
def h100_prometheus(tmp_path_factory):
    tool = promtool()
    assert tool, "promtool missing (.ci/setup-extras installs Debian's prometheus)"
    tmp = tmp_path_factory.mktemp("h100-backfill")
    ends = {}
    for path in sorted(RUNS.glob("scrape_*.prom.gz")):
        run = path.name[len("scrape_"):].split(".")[0]
        scrapes = read_scrapes(str(path))
        ends[run] = scrapes[-1][0]
        om = tmp / f"{run}.om"
        om.write_text(scrapes_to_openmetrics(scrapes, {"job": "vllm-w2ext", "instance": "h100:9464"}))
        p = subprocess.run([tool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(tmp / "data")],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
    assert set(ends) == {"throughput", "latency_bs1", "latency_bs32"}
    prom = Prometheus(tmp, {}, storage=tmp / "data").start()
    assert prom.wait("count(vllm_w2ext_gpu_busy_seconds_total)", 60, at=ends["throughput"])
    yield prom, ends
    prom.stop()


# Metrics the plugin gained after the H100 scrapes were recorded (device idle by cause, request
# phases): their panels cannot have H100 data; every other expression must.
NEWER_THAN_H100_DATA = ("vllm_w2ext_device_idle_seconds_total", "vllm_w2ext_device_busy_seconds_total",
                        "vllm_w2ext_device_idle_per_step_seconds", "vllm_w2ext_request_phase_seconds",
                        "vllm_w2ext_request_preemptions_total", "vllm_w2ext_hook_cpu_seconds_total",
                        "vllm_w2ext_hook_gil_wait_seconds_total", "vllm_w2ext_export_thread_gil_wait_seconds_total",
                        "vllm_w2ext_export_process_cpu_seconds_total", "vllm_w2ext_sample_every",
                        "vllm_w2ext_export_thread_gil_hold_seconds_total",
                        "vllm_w2ext_export_thread_gil_hold_per_flush_seconds", "vllm_w2ext_hook_direct_seconds_total",
                        "vllm_w2ext_hook_direct_by_hook_seconds_total", "vllm_w2ext_python_gc_seconds_total",
                        "vllm_w2ext_python_gc_collections_total")


def _newer(expr: str) -> bool:
    return any(m in expr for m in NEWER_THAN_H100_DATA)


@pytest.mark.parametrize("run", ["throughput", "latency_bs1", "latency_bs32"])
def test_every_w2ext_expression_has_h100_data(h100_prometheus, run):
    prom, ends = h100_prometheus
    queries = [q for q in load_queries(DASHBOARD) if not q["vllm_own"] and not _newer(q["expr"])]
    assert sum(q["cuda_only"] for q in queries) >= 4
    empty = [(q["panel"], q["expr"]) for q in queries if not prom.wait(q["expr"], 5, at=ends[run] - 1)]
    assert empty == []


def test_only_the_newer_metrics_lack_h100_data(h100_prometheus):
    """The exclusion above hides nothing else: each newer metric is really absent from the H100 data."""
    prom, ends = h100_prometheus
    for m in NEWER_THAN_H100_DATA:
        assert not prom.query(f'count({{__name__=~"{m}.*"}})', at=ends["throughput"]), m
    assert prom.query('count({__name__=~"vllm_w2ext_gpu_busy_seconds.*"})', at=ends["throughput"])   # the query works


def test_gpu_busy_ratio_matches_the_report(h100_prometheus):
    prom, ends = h100_prometheus
    res = prom.query('sum(vllm_w2ext_gpu_busy_seconds_total) / (sum(vllm_w2ext_gpu_busy_seconds_total) + '
                     'sum(vllm_w2ext_gpu_idle_seconds_total))', at=ends["throughput"])
    assert float(res[0]["value"][1]) == pytest.approx(0.9918, abs=5e-4)
