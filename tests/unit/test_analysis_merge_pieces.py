"""The merge's pieces without a vLLM run: the profiler index (our ``<span> #<step>`` annotations, vLLM's
own step annotations, what a step launched), the measured clock offset, lanes, and finding inputs."""
from __future__ import annotations

import json

import pytest

from vllm_w2ext.analysis.merge.clock import clip_to_profiled, measure_offset, time_base
from vllm_w2ext.analysis.merge.inputs import MergeError, find_inputs, relative_name
from vllm_w2ext.analysis.merge.our_events import lanes
from vllm_w2ext.analysis.merge.profiler_index import index_trace, ts_ns
from vllm_w2ext.analysis.readers.pftrace import Slice, SpanFile
from vllm_w2ext.vocab import ENGINE, WORKER, Span, profiler_annotation

BASE = 1_700_000_000_000_000_000


def _x(cat, name, ts, dur, pid=1, tid=1, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid, "ts": ts, "dur": dur, "args": args}


def _write(tmp_path, events, base=BASE):
    path = tmp_path / "p.pt.trace.json"
    path.write_text(json.dumps({"traceEvents": events, "baseTimeNanoseconds": base}))
    return str(path)


def test_ts_ns_is_exact_for_kineto_microseconds():
    assert ts_ns(1234.567) == 1_234_567 and ts_ns("0.001") == 1 and ts_ns(9007199254.741) == 9_007_199_254_741


def test_annotations_ours_and_vllms(tmp_path):
    ix = index_trace(_write(tmp_path, [
        {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "worker"}},
        _x("user_annotation", profiler_annotation(Span.WORKER_EXECUTE, 7), 10.0, 5.0),
        _x("user_annotation", "execute_context_1(5)_generation_0(0)", 11.0, 3.0),
        _x("user_annotation", "execute_context_0(0)_generation_1(1)", 20.0, 3.0),
        _x("user_annotation", "worker.execute_model", 30.0, 1.0),        # no step: not a step mark
        _x("user_annotation", "my_own_range #3", 40.0, 1.0),              # not one of our prefixes
    ]))
    got = [(a.name, a.step, a.ours, a.start_ns, a.end_ns) for a in ix.annotations]
    assert got == [(Span.WORKER_EXECUTE, 7, True, 10_000, 15_000),
                   ("execute_context_1(5)_generation_0(0)", 0, False, 11_000, 14_000),
                   ("execute_context_0(0)_generation_1(1)", 1, False, 20_000, 23_000)]
    assert ix.base_ns == BASE and ix.named_pids == {1} and (ix.first_ns, ix.last_ns) == (10_000, 41_000)
    assert ix.has_gpu is False


def test_step_targets_on_a_gpu_trace(tmp_path):
    ix = index_trace(_write(tmp_path, [
        _x("user_annotation", profiler_annotation(Span.WORKER_EXECUTE, 1), 100.0, 50.0),
        _x("cuda_runtime", "cudaLaunchKernel", 110.0, 2.0, correlation=5),
        _x("cuda_runtime", "cudaGraphLaunch", 120.0, 2.0, correlation=6),
        _x("cuda_runtime", "cudaLaunchKernel", 160.0, 2.0, correlation=7),     # after the step
        _x("kernel", "k_b", 300.0, 1.0, pid=0, tid=7, correlation=6),
        _x("kernel", "k_a", 200.0, 1.0, pid=0, tid=7, correlation=5),
        _x("kernel", "k_c", 301.0, 1.0, pid=0, tid=7, correlation=6),
        _x("kernel", "k_late", 400.0, 1.0, pid=0, tid=7, correlation=7),
    ]))
    [a] = ix.annotations
    assert ix.step_targets(a) == [(0, 7, 200.0, "k_a"), (0, 7, 300.0, "k_b"), (0, 7, 301.0, "k_c")]


def test_step_targets_on_a_cpu_trace_are_top_level_ops(tmp_path):
    ix = index_trace(_write(tmp_path, [
        _x("user_annotation", profiler_annotation(Span.WORKER_EXECUTE, 2), 100.0, 50.0),
        _x("cpu_op", "aten::linear", 101.0, 20.0),
        _x("cpu_op", "aten::mm", 102.0, 10.0),                 # inside aten::linear
        _x("cpu_op", "aten::softmax", 130.0, 5.0),
        _x("cpu_op", "aten::add", 148.0, 5.0),                 # ends after the annotation
    ]))
    [a] = ix.annotations
    assert [t[3] for t in ix.step_targets(a)] == ["aten::linear", "aten::softmax"]


def _slice(name, start, end, step=-1, role=WORKER):
    return Slice(name, start, end, step, role, role)


def test_measured_offset_is_the_median_of_matches(tmp_path):
    ours = SpanFile("w2ext-1.pftrace", 1, "", [_slice(Span.WORKER_EXECUTE, 1_000 + 100 * i, 1_050 + 100 * i, step=i)
                                                for i in range(3)])
    # the profiler saw the same three ranges 10_000 ns (+ 0, + 2, + 40) later on its clock
    ix = index_trace(_write(tmp_path, [
        _x("user_annotation", profiler_annotation(Span.WORKER_EXECUTE, i), (11_000 + 100 * i + d) / 1000, 0.05)
        for i, d in enumerate((0, 2, 40))], base=0))
    got = measure_offset([ours], [ix])
    assert got["matched_annotations"] == 3
    assert (got["offset_min_ns"], got["clock_offset_ns"], got["offset_max_ns"]) == (10_000, 10_002, 10_040)
    assert measure_offset([], [ix]) == {"clock_offset_ns": None, "offset_spread_ns": None, "matched_annotations": 0}


def test_time_base_and_clip():
    sf = SpanFile("w2ext-1.pftrace", 1, "", [_slice(Span.STEP, 5_300_000_123, 5_300_000_200, role=ENGINE),
                                            _slice(Span.STEP, 9_000_000_000, 9_000_000_100, role=ENGINE)])
    assert time_base([sf], []) == 5_000_000_000

    class Window:                                          # a profiler index reduced to its window
        base_ns, first_ns, last_ns = 5_000_000_000, 300_000_000, 300_001_000
    assert clip_to_profiled([sf], [Window()], offset_ns=0, margin_ns=0) == 1
    assert [s.start_ns for s in sf.slices] == [5_300_000_123]


def test_lanes_nest_strictly():
    outer, inner, same_start, overlap = (_slice("a", 0, 100), _slice("b", 10, 20), _slice("c", 0, 50),
                                         _slice("d", 90, 150))
    got = {s.name: lane for lane, s in lanes([overlap, inner, same_start, outer])}
    # c starts with a: a flow at ts 0 must bind to one slice, so c takes another lane; d overlaps a's end
    assert got == {"a": 0, "b": 0, "c": 1, "d": 1}


def test_find_inputs(tmp_path):
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    for name in ("w2ext-1.pftrace", "sub/w2ext-2.pftrace", "rank0.1.pt.trace.json.gz", "notes.txt", "w2ext-x.pftrace"):
        (run / name).write_bytes(b"")
    out = run / "merged.json"
    spans, profs = find_inputs([str(run), str(run)], str(out))
    assert [relative_name(p, out) for p in spans] == ["sub/w2ext-2.pftrace", "w2ext-1.pftrace"]
    assert [relative_name(p, out) for p in profs] == ["rank0.1.pt.trace.json.gz"]
    with pytest.raises(MergeError, match="no such file or folder"):
        find_inputs([str(tmp_path / "missing")])
    with pytest.raises(MergeError, match="expected a w2ext-<pid>.pftrace"):
        find_inputs([str(run / "notes.txt")])
