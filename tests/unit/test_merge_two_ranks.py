"""``merge`` of a tensor-parallel run: one torch-profiler trace per rank, each with its worker process and
its GPU, on hand-made traces. Both ranks' traces number their launches alike (CUPTI correlation ids, which
Kineto's ac2g flows use as ids), so a merge that kept the ids would link rank 0's launches to rank 1's
kernels (Perfetto pairs flow ends by id). Planted: the same ids on both ranks; known offsets per rank."""
from __future__ import annotations

import json

from vllm_w2ext.analysis.merge.merger import _inputs_read, merge
from vllm_w2ext.analysis.merge.profiler_index import (
    AC2G_ID_STRIDE,
    BOOKKEEPING_TID_STRIDE,
    PROFILER_PID,
    index_trace,
)
from vllm_w2ext.analysis.readers.pftrace import Slice, SpanFile
from vllm_w2ext.vocab import WORKER, Span, profiler_annotation

BASE = 1_700_000_000_000_000_000
WORKER_PID = {0: 40, 1: 41}


def _x(cat, name, ts, dur, pid, tid, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}


def rank_trace(tmp_path, rank: int, device: int | None = None) -> str:
    """Rank ``rank``'s worker launches two kernels on its GPU (device = rank unless given), step 5."""
    device = rank if device is None else device
    cpu = WORKER_PID[rank]
    ev = [{"ph": "M", "name": "process_labels", "pid": device, "tid": 0, "args": {"labels": f"GPU {device}"}},
          _x("user_annotation", profiler_annotation(Span.WORKER_EXECUTE, 5), 10.0, 30.0, cpu, cpu)]
    for corr, (ts, name) in enumerate(((50.0, "gemm"), (61.0, "cross_device_reduce_1stage")), start=1):
        ev += [_x("cuda_runtime", "cudaLaunchKernel", 10.0 + 2 * corr, 1.0, cpu, cpu, correlation=corr),
               _x("kernel", name, ts + rank, 10.0, device, 7, correlation=corr, device=device, stream=7),
               {"ph": "s", "id": corr, "pid": cpu, "tid": cpu, "ts": 10.0 + 2 * corr, "cat": "ac2g", "name": "ac2g"},
               {"ph": "f", "id": corr, "pid": device, "tid": 7, "ts": ts + rank, "cat": "ac2g", "name": "ac2g",
                "bp": "e"}]
    ev += [_x("Trace", "PyTorch Profiler (0)", 5.0, 100.0, "Spans", "PyTorch Profiler"),
           _x("overhead", "Activity Buffer Request", 6.0, 1.0, -1, 0)]
    path = tmp_path / f"rank{rank}.pt.trace.json"
    path.write_text(json.dumps({"distributedInfo": {"backend": "nccl", "rank": rank, "world_size": 2},
                                "baseTimeNanoseconds": BASE, "traceEvents": ev,
                                "deviceProperties": [{"id": d, "name": "NVIDIA H200"} for d in (0, 1)]}))
    return str(path)


def test_two_ranks_keep_their_flows_apart(tmp_path):
    out = tmp_path / "m.json"
    info = merge([rank_trace(tmp_path, 0), rank_trace(tmp_path, 1)], str(out))
    ev = json.loads(out.read_text())["traceEvents"]
    flows: dict = {}
    for e in ev:
        if e.get("cat") == "ac2g":
            flows.setdefault(e["id"], []).append((e["ph"], e["pid"]))
    # rank 0 keeps its ids; rank 1's move by the stride; every flow stays inside its rank
    assert flows == {1: [("s", 40), ("f", 0)], 2: [("s", 40), ("f", 0)],
                     AC2G_ID_STRIDE + 1: [("s", 41), ("f", 1)], AC2G_ID_STRIDE + 2: [("s", 41), ("f", 1)]}
    names = {e["pid"]: e["args"]["name"] for e in ev if e.get("name") == "process_name"}
    assert names[0] == "GPU 0 NVIDIA H200" and names[1] == "GPU 1 NVIDIA H200"
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in ev if e.get("name") == "thread_name"}
    assert {k: v for k, v in threads.items() if k[0] == PROFILER_PID} == {
        (PROFILER_PID, 1): "recording window, rank 0", (PROFILER_PID, 2): "buffer requests, rank 0",
        (PROFILER_PID, BOOKKEEPING_TID_STRIDE + 1): "recording window, rank 1",
        (PROFILER_PID, BOOKKEEPING_TID_STRIDE + 2): "buffer requests, rank 1"}
    assert [t["rank"] for t in info["profiler_traces"]] == [0, 1] and info["warnings"] == []


def test_one_trace_keeps_its_ids_and_names(tmp_path):
    out = tmp_path / "m.json"
    merge([rank_trace(tmp_path, 1)], str(out))
    ev = json.loads(out.read_text())["traceEvents"]
    assert sorted({e["id"] for e in ev if e.get("cat") == "ac2g"}) == [1, 2]
    threads = {e["args"]["name"] for e in ev if e.get("name") == "thread_name" and e["pid"] == PROFILER_PID}
    assert threads == {"recording window", "buffer requests"}


def test_two_traces_on_one_device_id_are_flagged(tmp_path):
    """Workers that each see their GPU as device 0 (CUDA_VISIBLE_DEVICES per process) share one GPU pid."""
    info = merge([rank_trace(tmp_path, 0), rank_trace(tmp_path, 1, device=0)], str(tmp_path / "m.json"))
    assert len(info["warnings"]) == 1 and "GPU 0 has activities in rank0.pt.trace.json and rank1.pt.trace.json" \
        in info["warnings"][0]


def test_each_rank_has_its_own_measured_offset(tmp_path):
    """Rank 0's worker span starts 22 µs before its annotation on the profiler's clock, rank 1's 25 µs."""
    profs = [index_trace(rank_trace(tmp_path, r)) for r in (0, 1)]
    files = []
    for rank, offset_ns in ((0, 22_000), (1, 25_000)):
        sf = SpanFile(path=f"w2ext-{WORKER_PID[rank]}.pftrace", pid=WORKER_PID[rank], process_name="")
        start = BASE + 10_000 - offset_ns
        sf.slices = [Slice(Span.WORKER_EXECUTE, start, start + 30_000, 5, WORKER, WORKER)]
        files.append(sf)
    got = _inputs_read(files, profs, str(tmp_path / "m.json"))["profiler_traces"]
    assert [(t["rank"], t["clock_offset_ns"], t["matched_annotations"]) for t in got] == [(0, 22_000, 1), (1, 25_000, 1)]
