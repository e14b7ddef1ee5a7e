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


@pytest.mark.parametrize("run", ["throughput", "latency_bs1", "latency_bs32"])
def test_every_w2ext_expression_has_h100_data(h100_prometheus, run):
    prom, ends = h100_prometheus
    queries = [q for q in load_queries(DASHBOARD) if not q["vllm_own"]]
    assert sum(q["cuda_only"] for q in queries) >= 4
    empty = [(q["panel"], q["expr"]) for q in queries if not prom.wait(q["expr"], 5, at=ends[run] - 1)]
    assert empty == []


def test_gpu_busy_ratio_matches_the_report(h100_prometheus):
    prom, ends = h100_prometheus
    res = prom.query('sum(vllm_w2ext_gpu_busy_seconds_total) / (sum(vllm_w2ext_gpu_busy_seconds_total) + '
                     'sum(vllm_w2ext_gpu_idle_seconds_total))', at=ends["throughput"])
    assert float(res[0]["value"][1]) == pytest.approx(0.9918, abs=5e-4)
