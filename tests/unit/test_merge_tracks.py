"""The merged trace's track names and order (merge/tracks.py) and the lanes of GPU activities that
overlap on their stream (profiler_index._lanes), on small hand-made traces; the viewer's track-order
reader. The real UI checks the same on real traces (tests/test_merge_perfetto.py, tests/test_view.py)."""
from __future__ import annotations

import json

from vllm_w2ext.analysis.merge.merger import merge
from vllm_w2ext.analysis.merge.profiler_index import LANE_TID_BASE, PROFILER_PID, index_trace
from vllm_w2ext.analysis.merge.tracks import NAMING_METADATA, layout, span_process
from vllm_w2ext.analysis.readers.pftrace import Slice, SpanFile
from vllm_w2ext.view import track_order
from vllm_w2ext.vocab import ENGINE, FRONT, WORKER

BASE = 1_700_000_000_000_000_000


def _x(cat, name, ts, dur, pid=1, tid=1, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}


def _sf(pid, name, roles):
    sf = SpanFile(path=f"w2ext-{pid}.pftrace", pid=pid, process_name=name)
    sf.slices = [Slice(f"{'engine' if r == ENGINE else 'worker' if r == WORKER else 'front'}.x", 1, 2, -1, r, r)
                 for r in roles]
    return sf


def _kineto(tmp_path):
    """A worker (pid 40) launching 3 kernels on GPU 0, stream 7; the second starts before the first ends
    (as with programmatic dependent launch). Kineto names GPUs 0-2, only GPU 0 has events."""
    ev = []
    for g in range(3):
        ev += [{"ph": "M", "name": "process_name", "pid": g, "tid": 0, "args": {"name": "python3"}},
               {"ph": "M", "name": "process_labels", "pid": g, "tid": 0, "args": {"labels": f"GPU {g}"}},
               {"ph": "M", "name": "process_sort_index", "pid": g, "tid": 0, "args": {"sort_index": 5000000 + g}}]
    ev += [{"ph": "M", "name": "process_name", "pid": 40, "tid": 0, "args": {"name": "python3"}},
           {"ph": "M", "name": "thread_name", "pid": 0, "tid": 7, "args": {"name": "stream 7 "}},
           _x("user_annotation", "execute_context_0(0)_generation_1(1)", 10.0, 30.0, pid=40, tid=40),
           _x("cuda_runtime", "cudaLaunchKernel", 11.0, 1.0, pid=40, tid=40, correlation=1),
           _x("cuda_runtime", "cudaLaunchKernel", 13.0, 1.0, pid=40, tid=40, correlation=2),
           _x("cuda_runtime", "cudaLaunchKernel", 15.0, 1.0, pid=40, tid=40, correlation=3),
           _x("kernel", "gemm", 50.0, 10.0, pid=0, tid=7, correlation=1, device=0, stream=7),
           _x("kernel", "silu", 58.0, 4.0, pid=0, tid=7, correlation=2, device=0, stream=7),    # overlaps gemm
           _x("kernel", "norm", 63.0, 1.0, pid=0, tid=7, correlation=3, device=0, stream=7),
           {"ph": "f", "id": 2, "pid": 0, "tid": 7, "ts": 58.0, "cat": "ac2g", "name": "ac2g", "bp": "e"},
           {"ph": "s", "id": 2, "pid": 40, "tid": 40, "ts": 13.0, "cat": "ac2g", "name": "ac2g"},
           _x("Trace", "PyTorch Profiler (0)", 5.0, 100.0, pid="Spans", tid="PyTorch Profiler"),
           _x("overhead", "Activity Buffer Request", 6.0, 1.0, pid=-1, tid=0),
           {"ph": "i", "s": "g", "name": "Record Window End", "pid": "", "tid": "", "ts": 105.0}]
    path = tmp_path / "w.pt.trace.json"
    path.write_text(json.dumps({"traceEvents": ev, "baseTimeNanoseconds": BASE,
                                "deviceProperties": [{"id": 0, "name": "NVIDIA H200"}]}))
    return str(path)


def test_span_process_names_from_the_file_or_its_roles():
    sp = span_process(_sf(12, "vLLM EngineCore engine 1 + worker engine 1 rank 0 TP0 PP0 DP1 (pid 12)", [ENGINE, WORKER]))
    assert sp.label == "vLLM EngineCore engine 1 + worker engine 1 rank 0 TP0 PP0 DP1 (pid 12)"
    assert sp.parts == {ENGINE: "EngineCore engine 1", WORKER: "worker engine 1 rank 0 TP0 PP0 DP1"}
    assert sp.index == (1,) and sp.profiler_role == "worker engine 1 rank 0 TP0 PP0 DP1" and sp.first_role == ENGINE
    assert span_process(_sf(15, "vLLM worker engine 0 rank 3 TP3 (pid 15)", [WORKER])).index == (0, 3)
    assert span_process(_sf(16, "vLLM worker rank 2 TP2 (pid 16)", [WORKER])).index == (0, 2)
    api = span_process(_sf(17, "vLLM front end API server 1 (pid 17)", [FRONT]))
    assert api.label == "vLLM front end API server 1 (pid 17)" and api.index == (1,)
    old = span_process(_sf(13, "vLLM engine_core (pid 13)", [ENGINE, WORKER]))     # an older plugin's file
    assert old.label == "vLLM EngineCore + worker (pid 13)" and old.first_role == ENGINE
    assert span_process(_sf(14, "", [FRONT])).label == "vLLM front end (pid 14)"


def test_overlapping_kernel_moves_to_a_lane_with_its_flow(tmp_path):
    ix = index_trace(_kineto(tmp_path))
    assert ix.gpu_pids == {0: 0} and ix.device_name(0) == "NVIDIA H200" and ix.cpu_pids == [40]
    lane = LANE_TID_BASE + 7
    assert list(ix.moved.values()) == [lane] and ix.lane_tracks == {(0, lane): (7, 1)}
    assert ix.moved_flows == {(2, 58.0): (0, 7, lane)}
    assert [t[1:3] for t in ix.gpu[2]] == [(0, lane)] and [t[1:3] for t in ix.gpu[1]] == [(0, 7)]
    assert set(ix.remap) == {("Spans", "PyTorch Profiler"), (-1, 0)}


def test_merged_trace_names_orders_and_drops_empty_gpus(tmp_path):
    out = tmp_path / "m.json"
    info = merge([_kineto(tmp_path)], str(out))
    doc = json.loads(out.read_text())
    ev = doc["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in ev if e.get("name") == "process_name"}
    assert names == {40: "vLLM worker (pid 40, torch profiler)", 0: "GPU 0 NVIDIA H200",
                     PROFILER_PID: "torch profiler (its own bookkeeping)"}          # no GPU 1, GPU 2
    sort = {e["pid"]: e["args"]["sort_index"] for e in ev if e.get("name") == "process_sort_index"}
    assert sort[40] < sort[0] < sort[PROFILER_PID]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in ev if e.get("name") == "thread_name"}
    lane = LANE_TID_BASE + 7
    assert threads[(0, 7)] == "GPU 0 stream 7" and threads[(0, lane)] == "GPU 0 stream 7 overlapping activities"
    assert threads[(40, 40)] == "worker thread 40 (torch profiler)"
    assert not [e for e in ev if e.get("ph") == "M" and e["pid"] in (1, 2)]
    assert sum(1 for e in ev if e.get("ph") == "M" and e["name"] in NAMING_METADATA and e["args"].get("name") == "python3") == 0
    silu = next(e for e in ev if e.get("name") == "silu")
    flow_end = next(e for e in ev if e.get("cat") == "ac2g" and e["ph"] == "f")
    assert silu["tid"] == flow_end["tid"] == lane and silu["ts"] == flow_end["ts"]
    assert all(isinstance(e.get("pid"), int) and e["pid"] >= 0 for e in ev)     # no string / negative pid left
    assert info["events"] == len(ev)


def test_layout_with_span_files_front_end_engine_worker_then_gpus(tmp_path):
    ix = index_trace(_kineto(tmp_path))
    files = [_sf(40, "vLLM worker rank 0 TP0 (pid 40)", [WORKER]), _sf(30, "vLLM front end (pid 30)", [FRONT]),
             _sf(35, "vLLM EngineCore engine 0 (pid 35)", [ENGINE])]
    ours = [(40, 10_000_001, "w2ext worker rank 0 TP0", (0, 2, "", 0)), (40, 10_000_002, "w2ext x #1", (1, 0, "x", 1)),
            (30, 10_000_000, "w2ext front end", (0, 0, "", 0))]
    meta = layout(files, [ix], ours)
    procs = [(e["pid"], e["args"]["name"]) for e in meta if e["name"] == "process_name"]
    sort = {e["pid"]: e["args"]["sort_index"] for e in meta if e["name"] == "process_sort_index"}
    assert sorted(procs, key=lambda p: sort[p[0]]) == [
        (30, "vLLM front end (pid 30)"), (35, "vLLM EngineCore engine 0 (pid 35)"),
        (40, "vLLM worker rank 0 TP0 (pid 40)"), (0, "GPU 0 NVIDIA H200"),
        (PROFILER_PID, "torch profiler (its own bookkeeping)")]
    tsort = {(e["pid"], e["tid"]): e["args"]["sort_index"] for e in meta if e["name"] == "thread_sort_index"}
    tname = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    assert tsort[(40, 10_000_001)] < tsort[(40, 10_000_002)] < tsort[(40, 40)]      # spans above the ops
    assert tname[(40, 40)] == "worker rank 0 TP0 thread 40 (torch profiler)"
    assert tsort[(0, 7)] < tsort[(0, LANE_TID_BASE + 7)]


def test_viewer_reads_the_track_order(tmp_path):
    out = tmp_path / "m.json"
    merge([_kineto(tmp_path)], str(out))
    order = track_order(out)
    procs = dict((p, s) for p, s in order["processes"])
    assert procs[40] < procs[0] < procs[PROFILER_PID]
    assert any(t == LANE_TID_BASE + 7 for _, t, _ in order["threads"])
    assert track_order(tmp_path / "missing.json") == {"processes": [], "threads": []}
