"""``analyze`` on a hand-made Kineto trace of one decode step: two launches, a GEMM then attention
kernel, 5 µs idle between them. Every number below is counted by hand from the events."""
from __future__ import annotations

import json

import pytest

from vllm_w2ext.analysis.kernels.analyzer import analyze
from vllm_w2ext.analysis.kernels.steps import LogHistogram, StepTimeline, phase_of

CPU, DEVICE = 1, 0


def _x(cat, name, ts, dur, pid=CPU, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": 1, "ts": ts, "dur": dur, "args": args}


@pytest.fixture
def one_step_trace(tmp_path):
    events = [
        _x("user_annotation", "worker.execute_model #5", 100.0, 50.0),
        _x("user_annotation", "execute_context_0(0)_generation_2(2)", 105.0, 40.0),
        _x("cuda_runtime", "cudaLaunchKernel", 110.0, 5.0, correlation=1),
        _x("cuda_runtime", "cudaLaunchKernel", 120.0, 5.0, correlation=2),
        _x("cpu_op", "aten::mm", 111.0, 1.0),                       # ignored by the breakdown
        _x("kernel", "nvjet_sm90_tst_128x256_64x4", 200.0, 10.0, pid=DEVICE, device=0, correlation=1),
        _x("kernel", "cutlass::device_kernel<flash::FlashAttnFwdSm90>", 215.0, 20.0, pid=DEVICE, device=0,
           correlation=2),
    ]
    path = tmp_path / "one_step.pt.trace.json"
    path.write_text(json.dumps({"deviceProperties": [{"name": "Test GPU"}], "traceEvents": events}))
    return path


def test_categories_and_totals(one_step_trace):
    r = analyze(one_step_trace, top=5)
    assert r["trace"]["events"] == 7 and r["trace"]["kernels"] == 2 and r["trace"]["user_annotations"] == 2
    assert r["trace"]["devices"] == ["Test GPU"]
    assert r["gpu_time_us"] == 30.0 and r["kernel_time_us"] == 30.0
    # the GEMM waits for what follows it: attention next -> it was the QKV projection
    assert r["categories"]["gemm_qkv"] == {"time_us": 10.0, "share": round(10 / 30, 6), "count": 1}
    assert r["categories"]["attention"] == {"time_us": 20.0, "share": round(20 / 30, 6), "count": 1}
    assert [k["name"] for k in r["top_kernels"]] == ["cutlass::device_kernel<flash::FlashAttnFwdSm90>",
                                                     "nvjet_sm90_tst_128x256_64x4"]
    assert r["notes"] == []


def test_step_phase_idle_and_launches(one_step_trace):
    r = analyze(one_step_trace)
    [step] = r["steps"]
    assert step["step"] == 5 and step["phase"] == "decode"
    assert step["annotation"] == "worker.execute_model #5 execute_context_0(0)_generation_2(2)"
    assert (step["kernels"], step["kernel_time_us"], step["gpu_span_us"], step["idle_in_step_us"]) == (2, 30.0, 35.0, 5.0)
    assert (step["cpu_dur_us"], step["launch_api_us"], step["gap_before_us"]) == (50.0, 10.0, None)
    assert r["phases"]["decode"]["steps"] == 1 and r["phases"]["decode"]["time_us"] == 30.0
    assert "outside_steps" not in r["phases"]
    assert r["idle"] == {"gpu_window_us": 35.0, "gpu_busy_us": 30.0, "utilization": round(30 / 35, 6),
                         "in_steps_us": 5.0, "between_steps_us": 0.0, "outside_steps_us": 0.0}
    api = r["launch"]["apis"]["cudaLaunchKernel"]
    assert (api["count"], api["cpu_time_us"]) == (2, 10.0)
    latency = r["launch"]["launch_to_gpu_start"]["cudaLaunchKernel"]     # 200 - 110 and 215 - 120
    assert latency["count"] == 2 and latency["max_us"] == 95.0 and latency["mean_us"] == 92.5


def test_cpu_only_trace_says_so(tmp_path):
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps({"traceEvents": [_x("cpu_op", "aten::mm", 1.0, 2.0)]}))
    r = analyze(path)
    assert r["has_gpu_kernels"] is False and r["gpu_time_us"] == 0.0 and r["steps"] == []
    assert len(r["notes"]) == 2          # no GPU kernels; no step annotations


def test_phase_of():
    assert [phase_of(1, 0), phase_of(0, 3), phase_of(2, 3), phase_of(0, 0)] == ["prefill", "decode", "mixed", "empty"]


def test_step_timeline_numbers_vllm_marks_when_the_plugin_was_off():
    tl = StepTimeline()
    tl.add("execute_context_1(7)_generation_0(0)", 9, 10.0, 5.0)
    tl.add("execute_context_0(0)_generation_1(1)", 9, 20.0, 5.0)
    tl.add("some_other_range", 9, 30.0, 5.0)
    assert tl.step_at(9, 21.0) == (9, "seq", 1) and tl.step_at(9, 5.0) is None
    marks = tl.describe()
    assert [marks[(9, "seq", i)]["phase"] for i in (0, 1)] == ["prefill", "decode"]


def test_log_histogram_percentiles_within_two_percent():
    h = LogHistogram()
    for x in range(1, 101):
        h.add(float(x))
    s = h.summary()
    assert s["count"] == 100 and s["max_us"] == 100.0 and s["mean_us"] == 50.5
    assert s["p50_us"] == pytest.approx(50, rel=0.02) and s["p90_us"] == pytest.approx(90, rel=0.02)
