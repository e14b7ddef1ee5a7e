"""Step metrics and scheduler gaps, scraped by a real Prometheus from a real vLLM CPU run.

One offline run (LLM.generate, three processes) serves every process's metrics at one endpoint; a
scheduler that sleeps a known time while a flag is set (vLLM's own ``scheduler_cls`` option) shows
the gap metric moving by that amount. Every PromQL expression of the Grafana dashboard (except the
CUDA-only row and vLLM's own request metrics, which need `vllm serve`) returns data."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TESTS, clean_env
from support.prometheus import Prometheus, metric_sum
from support.vllm_server import free_port, stop

sys.path.insert(0, str(ROOT))
from grafana.dashboard_queries import load_queries  # noqa: E402

DELAY_S = 0.05
DASHBOARD = ROOT / "grafana" / "dashboards" / "vllm-w2ext.json"


@pytest.fixture(scope="module")
def offline_metrics(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics-offline")
    port = free_port()
    prom = Prometheus(tmp, {"vllm-w2ext": f"127.0.0.1:{port}"}).start()
    out, hold = tmp / "out.json", tmp / "hold"
    params = {"prompts": 4, "max_tokens": 8, "metrics_port": port, "slow_flag": str(tmp / "slow"),
              "scheduler_cls": "slow_scheduler.SlowScheduler", "hold_file": str(hold),
              "phases": [{"slow": False, "rounds": 3}, {"slow": True, "rounds": 3}]}
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_METRICS_PORT=str(port), W2EXT_TEST_SLOW_FLAG=str(tmp / "slow"),
                    W2EXT_TEST_SLOW_S=str(DELAY_S), PYTHONPATH=str(TESTS / "drivers"))
    proc = subprocess.Popen([sys.executable, str(TESTS / "drivers" / "offline.py"), str(tiny_model), str(out),
                             json.dumps(params)], env=env, cwd=str(ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (tmp / "out.json.ready").exists():
            assert proc.poll() is None, proc.stdout.read()[-5000:]
            assert time.monotonic() < deadline, "offline driver did not finish its phases"
            time.sleep(0.5)
        result = json.loads((tmp / "out.json.ready").read_text())
        # the endpoint stays up (hold file) while Prometheus scrapes it
        assert prom.wait('vllm_w2ext_engine_steps_total{role="engine_core"} > 0', 60), "no scrape"
        time.sleep(3)
        yield result, prom
    finally:
        hold.touch()               # the driver shuts its engine down and exits
        stop(proc, None, 120)
        prom.stop()


def test_one_endpoint_serves_all_processes(offline_metrics):
    result, prom = offline_metrics
    text = result["phases"][-1]["metrics"]
    roles = {r["metric"]["role"] for r in prom.query("vllm_w2ext_spans_recorded_total")}
    assert roles == {"frontend", "engine_core", "worker"}
    for role, phase in (("engine_core", "schedule"), ("engine_core", "update_from_output"),
                        ("worker", "forward"), ("worker", "execute_model"), ("frontend", "process_outputs")):
        assert metric_sum(text, "vllm_w2ext_phase_duration_seconds_count", role=role, phase=phase) > 0
    assert "vllm:" not in text        # vLLM's own registry is not mixed in (it stays on vLLM's /metrics)
    for role in roles:                # each export thread's GIL hold: some, and within its wall time (CPU + wait)
        hold = metric_sum(text, "vllm_w2ext_export_thread_gil_hold_seconds_total", role=role)
        wall = sum(metric_sum(text, f"vllm_w2ext_export_thread_{m}_seconds_total", role=role)
                   for m in ("cpu", "gil_wait"))
        assert 0 < hold <= wall + 1e-6, (role, hold, wall)
        # its flushes one by one (the last ones of each report): some, each a part of that hold
        flushes = metric_sum(text, "vllm_w2ext_export_thread_gil_hold_per_flush_seconds_count", role=role)
        held = metric_sum(text, "vllm_w2ext_export_thread_gil_hold_per_flush_seconds_sum", role=role)
        assert flushes > 0 and 0 < held <= hold + 1e-6, (role, flushes, held, hold)
    dec = metric_sum(text, "vllm_w2ext_batch_tokens_total", kind="decode")
    assert dec == 7 * 4 * 7           # 7 generate calls x 4 requests x (8 - 1) decode tokens


def test_gap_moves_by_injected_delay(offline_metrics):
    result, _ = offline_metrics
    fast, slow = result["phases"]

    def part(text, name):
        return metric_sum(text, "vllm_w2ext_scheduler_gap_part_seconds_total", role="worker", part=name)

    def count(text):
        return metric_sum(text, "vllm_w2ext_scheduler_gap_seconds_count", role="worker")

    def busy_gap(text):    # the gap without the time the engine had no work (between generate calls)
        return sum(part(text, p) for p in ("schedule", "update", "other"))

    n_fast, n_slow = count(fast["metrics"]), count(slow["metrics"]) - count(fast["metrics"])
    assert n_fast > 10 and n_slow > 10
    total = metric_sum(slow["metrics"], "vllm_w2ext_scheduler_gap_seconds_sum", role="worker")
    assert total == pytest.approx(busy_gap(slow["metrics"]) + part(slow["metrics"], "engine_idle"), rel=1e-6)
    mean_fast = busy_gap(fast["metrics"]) / n_fast
    mean_slow = (busy_gap(slow["metrics"]) - busy_gap(fast["metrics"])) / n_slow
    # every step of the slow phase slept DELAY_S before scheduling: the mean gap moves by that much
    assert mean_slow - mean_fast == pytest.approx(DELAY_S, abs=0.3 * DELAY_S), (mean_fast, mean_slow)
    # the sleep sits inside vLLM's Scheduler.schedule: it lands in the gap's "schedule" part
    d_sched = (part(slow["metrics"], "schedule") - part(fast["metrics"], "schedule")) / n_slow \
        - part(fast["metrics"], "schedule") / n_fast
    assert d_sched == pytest.approx(DELAY_S, abs=0.3 * DELAY_S)

    # and in device idle, the CPU build's forwards being the device timeline, under cause "schedule"
    def idle(text, cause):
        return metric_sum(text, "vllm_w2ext_device_idle_seconds_total", role="worker", cause=cause)
    d_idle = (idle(slow["metrics"], "schedule") - idle(fast["metrics"], "schedule")) / n_slow \
        - idle(fast["metrics"], "schedule") / n_fast
    assert d_idle == pytest.approx(DELAY_S, abs=0.3 * DELAY_S)


def test_every_dashboard_expression_returns_data_offline(offline_metrics):
    _, prom = offline_metrics
    queries = [q for q in load_queries(DASHBOARD) if not q["cuda_only"] and not q["vllm_own"]]
    assert len(queries) >= 10
    empty = [(q["panel"], q["expr"]) for q in queries if not prom.wait(q["expr"], timeout=10)]
    assert empty == []


def test_the_direct_hook_counter_times_the_hooks_not_vllms_scheduler(offline_metrics):
    """The direct counter (every C-front call timed) in a real run: the EngineCore's and the worker's fronts took
    calls, and the slow phase's sleep inside vLLM's Scheduler.schedule, a hooked method (DELAY_S a step, >10 steps),
    is not in the EngineCore's figure: its growth over that phase stays far below the sleeps it spans."""
    result, _ = offline_metrics
    fast, slow = result["phases"]

    def direct(text, role):
        return (metric_sum(text, "vllm_w2ext_hook_direct_seconds_total", role=role),
                metric_sum(text, "vllm_w2ext_hook_direct_calls_total", role=role))

    for role in ("engine_core", "worker"):
        seconds, calls = direct(slow["metrics"], role)
        assert calls > 0 and 0 < seconds < calls * 0.005, (role, seconds, calls)   # < 5 ms a call
    n_slow = metric_sum(slow["metrics"], "vllm_w2ext_scheduler_gap_seconds_count", role="worker") - \
        metric_sum(fast["metrics"], "vllm_w2ext_scheduler_gap_seconds_count", role="worker")
    grown = direct(slow["metrics"], "engine_core")[0] - direct(fast["metrics"], "engine_core")[0]
    assert n_slow > 10 and grown < 0.1 * n_slow * DELAY_S, (grown, n_slow)
