"""Scrape files read back, the sample queries (labelled sum, histogram quantile) and the OpenMetrics
conversion for backfilling, on exposition text written here."""
from __future__ import annotations

import gzip

import pytest

from vllm_w2ext.analysis.metrics.openmetrics import scrapes_to_openmetrics
from vllm_w2ext.analysis.metrics.report import run_summary
from vllm_w2ext.analysis.metrics.scrapes import final_scrape, run_scrapes, quantile, read_scrapes, samples, total

EXPOSITION = """# HELP steps_total Engine steps.
# TYPE steps_total counter
steps_total{executed="true",role="engine_core"} 10.0
steps_total{executed="false",role="engine_core"} 2.0
steps_created{executed="true",role="engine_core"} 1.7e9
# HELP gap_seconds Scheduler gap.
# TYPE gap_seconds histogram
gap_seconds_bucket{le="0.001",role="worker"} 2.0
gap_seconds_bucket{le="0.01",role="worker"} 6.0
gap_seconds_bucket{le="+Inf",role="worker"} 10.0
gap_seconds_count{role="worker"} 10.0
gap_seconds_sum{role="worker"} 0.2
"""


def test_read_scrapes_plain_and_gzip(tmp_path):
    body = f"# SCRAPE 100.500\n{EXPOSITION}# SCRAPE 101.000\nsteps_total 1.0\n"
    plain, gz = tmp_path / "scrape_a.prom", tmp_path / "scrape_a.prom.gz"
    plain.write_text(body)
    gz.write_bytes(gzip.compress(body.encode()))
    for path in (plain, gz):
        got = read_scrapes(str(path))
        assert [t for t, _ in got] == [100.5, 101.0]
        assert got[0][1] == EXPOSITION and got[1][1] == "steps_total 1.0\n"


def _engine_scrape(steps: float, hook_s: float) -> str:
    return ("# TYPE vllm_w2ext_engine_steps_total counter\n"
            f'vllm_w2ext_engine_steps_total{{executed="true",role="engine_core"}} {steps}\n'
            "# TYPE vllm_w2ext_hook_self_seconds_total counter\n"
            f'vllm_w2ext_hook_self_seconds_total{{role="engine_core"}} {hook_s}\n'
            "# TYPE vllm_w2ext_spans_recorded_total counter\n"
            'vllm_w2ext_spans_recorded_total{role="front_end"} 7.0\n')


def test_a_run_is_read_from_its_last_complete_scrape(tmp_path):
    # Planted: at shutdown the endpoint answered once more after the EngineCore's snapshot was gone
    # (the front end removes the metrics folder on exit): that scrape has the front end's series only.
    gone = '# TYPE vllm_w2ext_spans_recorded_total counter\nvllm_w2ext_spans_recorded_total{role="front_end"} 9.0\n'
    scrapes = [(100.0, _engine_scrape(50, 0.001)), (101.0, _engine_scrape(200, 0.004)),
               (102.0, _engine_scrape(200, 0.004)), (103.0, gone)]
    assert final_scrape(scrapes)[0] == 102.0          # the latest of the scrapes at the counter's maximum
    assert [t for t, _ in run_scrapes(scrapes)] == [100.0, 101.0, 102.0]     # the charts' rows end there too
    assert final_scrape([(5.0, gone)])[0] == 5.0      # no step counter anywhere: the last scrape
    assert final_scrape([]) is None
    (tmp_path / "scrape_run.prom").write_text("".join(f"# SCRAPE {t}\n{x}" for t, x in scrapes))
    got = run_summary(str(tmp_path), "run")
    assert got["engine_steps"] == 200 and got["window_s"] == 2.0
    assert got["self_cost"]["us_per_step"]["hooks"] == 20.0     # 4 ms over 200 steps


def test_total_and_quantile():
    ss = samples(EXPOSITION)
    assert total(ss, "steps_total") == 12.0
    assert total(ss, "steps_total", executed="true") == 10.0
    assert total(ss, "steps_total", role="worker") == 0.0
    # rank 5 of 10 falls in (0.001, 0.01] holding samples 3..6: 0.001 + 0.009 * (5 - 2) / 4
    assert quantile(ss, "gap_seconds", 0.5, role="worker") == pytest.approx(0.001 + 0.009 * 3 / 4)
    # rank 9 falls in the +Inf bucket: Prometheus answers the highest finite bound
    assert quantile(ss, "gap_seconds", 0.9, role="worker") == 0.01
    assert quantile(ss, "no_such_histogram", 0.5) is None


def test_openmetrics_for_backfilling():
    text = scrapes_to_openmetrics([(100.0, EXPOSITION), (160.25, EXPOSITION)], {"job": "w2"})
    lines = text.splitlines()
    assert lines[0] == "# TYPE steps counter" and lines[-1] == "# EOF"
    assert lines[1] == 'steps_total{executed="true",job="w2",role="engine_core"} 10.0 100.000'
    assert 'steps_total{executed="true",job="w2",role="engine_core"} 10.0 160.250' in lines
    # no _created samples (promtool rejects them out of order); their family keeps only its TYPE line
    assert not any("_created" in line for line in lines if not line.startswith("#"))
    assert "# TYPE gap_seconds histogram" in lines
    assert 'gap_seconds_bucket{job="w2",le="+Inf",role="worker"} 10.0 100.000' in lines
