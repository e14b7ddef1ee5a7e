"""explain end to end without vLLM: a span folder written here with the perfetto protobuf classes (the
plugin's file format, attributes as debug annotations) through ``vllm-w2ext explain`` in text and
JSON; a scrape for ``--metrics``; a hand-made Kineto trace for ``--profile`` (kernel mix per phase and a
launch-bound step)."""
from __future__ import annotations

import json

import pytest
from explain_slices import Run, steady
from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
    TracePacket,
    TrackEvent,
)

from vllm_w2ext import cli
from vllm_w2ext.analysis.explain.report import explain
from vllm_w2ext.telemetry.trace_file import annotations, frame
from vllm_w2ext.vocab import FRONT, IDLE_CAUSES, Attr, Span, trace_file_name


def write_span_file(folder, pid: int, role: str, slices) -> None:
    """One process's file: its track, one role track, a begin/end pair per slice (nested order does not
    matter to the reader: each begin/end pair is on its own lane track here)."""
    out = bytearray()
    p = TracePacket(trusted_packet_sequence_id=1)
    p.track_descriptor.uuid = pid << 8
    p.track_descriptor.process.pid = pid
    p.track_descriptor.process.process_name = f"vLLM {role} (pid {pid})"
    out += frame(p)
    for i, s in enumerate(slices):
        uuid = (pid << 8) + 1 + i
        t = TracePacket(trusted_packet_sequence_id=1)
        t.track_descriptor.uuid, t.track_descriptor.parent_uuid, t.track_descriptor.name = uuid, pid << 8, s.role
        b = TracePacket(trusted_packet_sequence_id=1, timestamp=s.start_ns)
        b.track_event.type, b.track_event.track_uuid, b.track_event.name = TrackEvent.TYPE_SLICE_BEGIN, uuid, s.name
        b.track_event.debug_annotations.extend(annotations(s.args))
        e = TracePacket(trusted_packet_sequence_id=1, timestamp=s.end_ns)
        e.track_event.type, e.track_event.track_uuid = TrackEvent.TYPE_SLICE_END, uuid
        out += frame(t) + frame(b) + frame(e)
    (folder / trace_file_name(pid)).write_bytes(bytes(out))


@pytest.fixture
def folder(tmp_path):
    run = Run()
    run.generate(0, 105)
    run.add(FRONT, Span.ADD_REQUEST, 0, 1)
    steady(run, 10, busy=2, causes={"schedule": 8, "ipc": 1}, t0=2)
    run.request("req-1", 2, 100, first_step=1, **{Attr.QUEUE_S: 0.001, Attr.PREFILL_S: 0.01, Attr.DECODE_S: 0.08,
                                                   Attr.FINISH_REASON: "length", Attr.OUTPUT_TOKENS: 10})
    d = tmp_path / "trace"
    d.mkdir()
    write_span_file(d, 100, "frontend", run.front)
    write_span_file(d, 200, "engine_core", run.engine)
    write_span_file(d, 300, "worker", run.workers[0])
    return d


def test_cli_text(folder, capsys):
    assert cli.main(["explain", str(folder)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"vllm-w2ext explain {folder}"
    assert "wall time 0.105 s (llm.generate)" in lines[1]
    assert "Findings, by time lost" in out
    first = next(line for line in lines if line.startswith(" 1."))
    assert "72.0 ms" in first and "68.6 %" in first and "[schedule]" in first
    assert "evidence: 72.0 ms in 9 of 10 steps' idle windows (8.0 ms each)" in out and "open worker.execute_model #" in out
    assert "try: scheduling is on the critical path" in out
    assert "Requests: 1 finished" in out and "finished: length 1" in out


def test_cli_json_shape(folder, tmp_path):
    out = tmp_path / "explain.json"
    assert cli.main(["explain", str(folder), "--format", "json", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert {"findings", "device_idle_by_cause", "requests"} <= set(r)
    for f in r["findings"]:
        assert list(f) == ["id", "cause", "title", "seconds", "share", "evidence", "suggestion"]
    assert [f["seconds"] for f in r["findings"]] == sorted((f["seconds"] for f in r["findings"]), reverse=True)
    assert r["findings"][0]["cause"] == "schedule"
    assert set(r["device_idle_by_cause"]) == set(IDLE_CAUSES)
    assert r["requests"]["finished"] == 1 and r["requests"]["finish_reasons"] == {"length": 1}


def test_cli_missing_folder(tmp_path, capsys):
    assert cli.main(["explain", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_empty_folder_says_so(tmp_path):
    r = explain(str(tmp_path))
    assert r["findings"] == [] and any("no span files" in n for n in r["notes"])


SCRAPE = """# HELP vllm_w2ext_device_idle_seconds_total Device idle between forwards, by cause
# TYPE vllm_w2ext_device_idle_seconds_total counter
vllm_w2ext_device_idle_seconds_total{engine="0",rank="0",cause="schedule"} 0.5
vllm_w2ext_device_idle_seconds_total{engine="0",rank="0",cause="ipc"} 0.25
vllm_w2ext_device_idle_seconds_total{engine="0",rank="1",cause="schedule"} 0.3
"""


def test_metrics_cross_check_and_stand_in(folder, tmp_path):
    scrape = tmp_path / "metrics.txt"
    scrape.write_text(SCRAPE)
    r = explain(str(folder), metrics_path=str(scrape))
    assert r["metrics"]["device_idle_by_cause"]["schedule"] == pytest.approx(0.4)
    assert set(r["metrics"]["devices"]) == {"engine 0 rank 0", "engine 0 rank 1"}
    assert r["findings"][0]["evidence"].get("source") is None        # the spans have device attributes
    # spans without device attributes: the scrape stands in
    run = Run()
    steady(run, 3, busy=1, causes={"schedule": 1})
    tl = run.timeline()
    for ex in tl.executions[("0", "0")]:
        ex.busy_s = None
    r = explain("synthetic", metrics_path=str(scrape), timeline=tl)
    top = r["findings"][0]
    assert top["cause"] == "schedule" and top["seconds"] == pytest.approx(0.4) and top["evidence"]["source"] == "metrics"
    assert "comes from the scrape's counters" in r["verdict"]


def _x(cat, name, ts, dur, pid=1, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": 1, "ts": ts, "dur": dur, "args": args}


def test_profile_kernel_mix_and_launch_bound_steps(folder, tmp_path):
    ev = [_x("user_annotation", "worker.execute_model #1", 0.0, 100.0),
          _x("user_annotation", "execute_context_1(64)_generation_0(0)", 1.0, 90.0),
          _x("user_annotation", "worker.execute_model #2", 200.0, 300.0),
          _x("user_annotation", "execute_context_0(0)_generation_4(4)", 201.0, 290.0)]
    corr = 0
    # step 1 (prefill): GEMM 40 µs then attention 20 µs back to back; step 2 (decode): 4 GEMMs of 10 µs, 30 µs apart
    for ts, name, dur in [(10, "nvjet_sm90_gemm", 40.0), (11, "flash_fwd_kernel", 20.0)] + \
            [(210 + 40 * k, "nvjet_sm90_gemm", 10.0) for k in range(4)]:
        corr += 1
        ev.append(_x("cuda_runtime", "cudaLaunchKernel", ts, 1.0, correlation=corr))
        start = 1000 + (ts - 10) if ts < 200 else 1000 + ts
        if name.startswith("flash"):
            start = 1040
        ev.append(_x("kernel", name, start, dur, pid=0, device=0, correlation=corr))
    prof = tmp_path / "p.pt.trace.json"
    prof.write_text(json.dumps({"traceEvents": ev}))
    r = explain(str(folder), profile=str(prof))
    mix = r["kernel_mix"]
    assert mix["prefill"]["gemm_share"] == pytest.approx(40 / 60, abs=1e-3)
    assert mix["prefill"]["attention_share"] == pytest.approx(20 / 60, abs=1e-3)
    assert mix["decode"]["gemm_share"] == pytest.approx(1.0)
    f = next(f for f in r["findings"] if f["id"] == "kernel_mix")
    assert f["cause"] == "launch_bound"
    assert f["evidence"]["launch_bound_steps"] == 1 and f["evidence"]["top_steps"][0]["step"] == 2
    assert f["seconds"] == pytest.approx(90e-6)        # 3 gaps of 30 µs inside step 2


def test_cpu_only_profile_is_a_note(folder, tmp_path):
    prof = tmp_path / "cpu.pt.trace.json"
    prof.write_text(json.dumps({"traceEvents": [_x("user_annotation", "worker.execute_model #1", 0.0, 100.0),
                                                _x("cpu_op", "aten::mm", 1.0, 50.0)]}))
    r = explain(str(folder), profile=str(prof))
    assert not [f for f in r["findings"] if f["id"] == "kernel_mix"]
    assert any("no GPU kernels" in n for n in r["notes"])


def test_worker_spans_without_device_attributes_say_why(tmp_path):
    """The worker spans carry no vllm.device.* (device timing off with vLLM's V2 runner, whose forward is not
    hooked, or an older plugin): explain names both causes and breaks nothing down."""
    run = Run()
    run.generate(0, 105)
    steady(run, 10, busy=2, causes={"schedule": 8}, t0=2)
    for s in run.workers[0]:
        for k in [k for k in s.args if k.startswith("vllm.device.")]:
            del s.args[k]
    d = tmp_path / "trace"
    d.mkdir()
    write_span_file(d, 100, "frontend", run.front)
    write_span_file(d, 200, "engine_core", run.engine)
    write_span_file(d, 300, "worker", run.workers[0])
    r = explain(str(d))
    assert any("VLLM_W2EXT_DEVICE_TIMING=off" in n and "V2" in n for n in r["notes"]), r["notes"]
    assert r["verdict"].startswith("the worker spans carry no device attributes")
    assert not [f for f in r["findings"] if f["id"].startswith("device_idle.")]
