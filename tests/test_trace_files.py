"""Per-process Perfetto trace files (VLLM_W2EXT_TRACE_DIR) from a real offline vLLM run: one file per
process, every span of the run as a begin/end slice pair, step ids attached, and a file cut at any
byte (as SIGKILL can leave it) still yields every packet written before the cut. What else the run
leaves on disk: nothing (the metrics folder the plugin made for its processes goes when the run ends)."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import clean_env
from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TracePacket, TrackEvent

from vllm_w2ext.analysis.readers.pftrace import iter_packets


def read_packets(data: bytes) -> list[TracePacket]:
    """Complete Trace.packet records; a truncated last record is ignored."""
    return [p for p, _ in iter_packets(data)]


@pytest.fixture(scope="module")
def traced_run(stock_full_run):
    """The session's offline run with span files and OTLP/gRPC export (conftest.stock_full_run, shared
    with test_patches): (its span files, the SpanSet the OTLP receiver got)."""
    _, ss, _, files = stock_full_run
    return files, ss


def test_one_file_per_process_with_every_span(traced_run):
    files, ss = traced_run
    assert len(files) == 3                                   # front end, EngineCore, worker
    begins, ends, steps = Counter(), 0, []
    for f in files:
        packets = read_packets(f.read_bytes())
        procs = [p for p in packets if p.HasField("track_descriptor") and p.track_descriptor.HasField("process")]
        assert len(procs) == 1
        for p in packets:
            if p.HasField("track_event"):
                if p.track_event.type == TrackEvent.Type.TYPE_SLICE_BEGIN:
                    begins[p.track_event.name] += 1
                    if p.track_event.name == "engine.step":
                        steps.append(p.track_event.debug_annotations[0].int_value)
                elif p.track_event.type == TrackEvent.Type.TYPE_SLICE_END:
                    ends += 1
    assert begins == Counter(s.name for s in ss.spans)     # the same ranges the OTLP receiver got
    assert ends == sum(begins.values())
    assert sorted(steps) == sorted(s.step for s in ss.steps())


def test_the_metrics_folder_it_made_is_gone(stock_full_run):
    made = stock_full_run[0]["metrics_dir"]                 # the run set a metrics port, no folder
    assert made and Path(made).name.startswith("vllm-w2ext-metrics-")
    assert not Path(made).exists()


def test_cut_file_keeps_complete_packets(traced_run):
    files, _ = traced_run
    data = max(files, key=lambda f: f.stat().st_size).read_bytes()
    whole = read_packets(data)
    for cut in (len(data) // 3, len(data) // 2 + 7, len(data) - 3):
        part = read_packets(data[:cut])
        assert 0 < len(part) < len(whole)
        assert [p.SerializeToString() for p in part] == [p.SerializeToString() for p in whole[:len(part)]]


def test_unwritable_trace_dir_stops_start_up(tiny_model, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    target = ro / "sub" if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0" \
        else "/proc/w2ext-traces"                            # root may write anywhere but /proc
    p = subprocess.run([sys.executable, "-m", "vllm_w2ext.lab.vllm_cli", "serve", str(tiny_model)],
                       env=clean_env(VLLM_W2EXT="1", VLLM_W2EXT_TRACE_DIR=str(target)),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    assert f"VLLM_W2EXT_TRACE_DIR='{target}': cannot create it" in p.stderr
