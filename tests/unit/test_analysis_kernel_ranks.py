"""``analyze`` with two tensor-parallel rank traces, on hand-made Kineto traces with a PLANTED answer.

Every step, on each rank: a GEMM, an all-reduce, a GEMM, an all-reduce, back to back (no idle). Rank 1's
GEMMs take LATE µs longer than rank 0's, so rank 1 reaches every all-reduce LATE µs after rank 0; rank 0
spins in it for those LATE µs, then both do OWN µs of work and leave together (the collective is a
barrier). So, known before any code runs:
- skew = LATE at every collective, rank 1 late at every one, ends 0 apart;
- rank 0 waits LATE per collective, rank 1 never; the collective's own time is OWN;
- per step, both ranks are busy 2 * (GEMM0 + LATE + OWN) µs without a gap; rank 0's communication is
  2 * (LATE + OWN) of that, rank 1's 2 * OWN.
"""
from __future__ import annotations

import json

import pytest

from vllm_w2ext.analysis.kernels.command import main
from vllm_w2ext.analysis.kernels.ranks import (
    NO_STEP,
    Collective,
    analyze_ranks,
    match,
    short_name,
    skew_block,
    stats,
)

LATE, OWN, GEMM0, STEPS = 30.0, 5.0, 20.0, 4
STEP_LEN = 2 * (GEMM0 + LATE + OWN)           # 110 µs of GPU time per step on each rank
AR = "void vllm::cross_device_reduce_1stage<__nv_bfloat16, 2>(vllm::RankData*, int)"
GEMM = "nvjet_sm90_tst_64x8_64x16_2x1_v_bz_TNT"
BASE_NS = 1_790_857_026_000_000_000


def _x(cat, name, ts, dur, pid, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": 1, "ts": ts, "dur": dur, "args": args}


def rank_trace(path, rank: int, base_shift_us: float = 0.0, extra_collective: bool = False):
    """One rank's trace. ``base_shift_us``: this trace's baseTimeNanoseconds is later by that much and
    its ts smaller by as much (the same instants written from another base)."""
    cpu, dev = 100 + rank, rank
    events, corr = [], 0
    gemm = GEMM0 + (LATE if rank == 1 else 0.0)
    ar = OWN + (LATE if rank == 0 else 0.0)
    for k in range(STEPS):
        t_cpu = 1000.0 * k - base_shift_us
        events.append(_x("user_annotation", f"worker.execute_model #{k + 7}", t_cpu, 400.0, cpu))
        events.append(_x("user_annotation", "execute_context_0(0)_generation_8(8)", t_cpu + 1, 398.0, cpu))
        t_gpu = 1000.0 * k + 500.0 - base_shift_us
        kernels = [(GEMM, gemm), (AR, ar), (GEMM, gemm), (AR, ar)]
        if extra_collective and k == 2:
            kernels.append(("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)", 2.0))
        for i, (name, dur) in enumerate(kernels):
            corr += 1
            events.append(_x("cuda_runtime", "cudaLaunchKernel", t_cpu + 10 + i, 1.0, cpu, correlation=corr))
            events.append(_x("kernel", name, t_gpu, dur, dev, device=dev, correlation=corr))
            t_gpu += dur
    header = {"distributedInfo": {"backend": "nccl", "rank": rank, "world_size": 2},
              "deviceProperties": [{"id": rank, "name": "Test GPU"}],
              "baseTimeNanoseconds": BASE_NS + round(base_shift_us * 1000)}
    path.write_text(json.dumps(header | {"traceEvents": events}))
    return path


@pytest.fixture
def two_ranks(tmp_path):
    return [rank_trace(tmp_path / "rank0.pt.trace.json", 0), rank_trace(tmp_path / "rank1.pt.trace.json", 1)]


def test_planted_skew_late_rank_and_waiting(two_ranks):
    tp = analyze_ranks(two_ranks)["tensor_parallel"]
    s = tp["skew"]
    assert s["collectives"] == {"rank 0": 2 * STEPS, "rank 1": 2 * STEPS}
    assert s["matched"] == 2 * STEPS and s["unmatched"] == {"rank 0": 0, "rank 1": 0}
    a = s["all"]
    assert a["skew_us"] == {"count": 2 * STEPS, "median_us": LATE, "p90_us": LATE, "max_us": LATE, "mean_us": LATE}
    assert a["late"] == {"rank 0": 0, "rank 1": 2 * STEPS, "within_1us": 0}
    assert a["usually_late"] == 1 and a["usually_late_share"] == 1.0
    assert a["late_us"] == {"rank 0": 0.0, "rank 1": 2 * STEPS * LATE}
    assert a["late_for_most_time"] == 1 and a["late_for_most_time_share"] == 1.0
    assert a["collective_own_us"]["median_us"] == OWN and a["end_spread_us"]["max_us"] == 0.0
    assert a["wait_us"] == {"rank 0": 2 * STEPS * LATE, "rank 1": 0.0}
    assert a["wait_share_of_collective_time"] == {"rank 0": round(LATE / (LATE + OWN), 4), "rank 1": 0.0}
    assert a["steps"] == STEPS and a["wait_per_step_us"] == {"rank 0": 2 * LATE, "rank 1": 0.0}
    assert a["skew_per_step_us"] == 2 * LATE
    assert list(s["by_phase"]) == ["decode"] and s["by_phase"]["decode"]["matched"] == 2 * STEPS
    assert s["by_position"]["decode first in step"]["matched"] == STEPS
    assert s["by_position"]["decode later in step"]["skew_us"]["median_us"] == LATE
    assert list(s["by_collective"]) == [AR]
    assert tp["clock"]["same_base"] is True and tp["clock"]["check_end_spread_us"]["median_us"] == 0.0


def test_planted_communication_share(two_ranks):
    r0, r1 = analyze_ranks(two_ranks)["tensor_parallel"]["ranks"]
    assert (r0["rank"], r1["rank"]) == (0, 1)
    busy = STEPS * STEP_LEN
    assert r0["gpu_busy_us"] == busy and r1["gpu_busy_us"] == busy
    assert r0["communication_us"] == STEPS * 2 * (LATE + OWN) and r1["communication_us"] == STEPS * 2 * OWN
    assert r0["share"] == round(2 * (LATE + OWN) / STEP_LEN, 6) and r1["share"] == round(2 * OWN / STEP_LEN, 6)
    # with the waiting taken out, both ranks spend the same OWN µs per collective
    assert r0["share_without_waiting"] == r1["share_without_waiting"] == round(2 * OWN / STEP_LEN, 6)
    assert r0["phases"]["decode"] == {"steps": STEPS, "communication_us": STEPS * 2 * (LATE + OWN),
                                      "gpu_busy_us": busy, "share": r0["share"],
                                      "waiting_us": STEPS * 2 * LATE, "share_without_waiting": r0["share_without_waiting"]}


def test_another_base_is_the_same_clock(tmp_path):
    """Rank 1's trace written from a base 1 ms later (its ts 1 ms smaller): the same instants, the same skew."""
    paths = [rank_trace(tmp_path / "r0.json", 0), rank_trace(tmp_path / "r1.json", 1, base_shift_us=1000.0)]
    tp = analyze_ranks(paths)["tensor_parallel"]
    assert tp["clock"]["same_base"] is False
    assert tp["skew"]["all"]["skew_us"]["max_us"] == LATE and tp["skew"]["all"]["skew_us"]["median_us"] == LATE


def test_ranks_in_rank_order_and_an_unmatched_collective(tmp_path):
    """Given rank 1 first, rank 0 reported first; a collective only rank 0 ran is unmatched, the rest still pair."""
    paths = [rank_trace(tmp_path / "r1.json", 1), rank_trace(tmp_path / "r0.json", 0, extra_collective=True)]
    tp = analyze_ranks(paths)["tensor_parallel"]
    assert [r["rank"] for r in tp["ranks"]] == [0, 1]
    assert tp["skew"]["collectives"] == {"rank 0": 2 * STEPS + 1, "rank 1": 2 * STEPS}
    assert tp["skew"]["matched"] == 2 * STEPS and tp["skew"]["unmatched"] == {"rank 0": 1, "rank 1": 0}
    assert tp["skew"]["all"]["skew_us"]["max_us"] == LATE


def _c(start_us, dur, name="ar", step=("step", 1), phase="decode"):
    return Collective(round(start_us * 1000), dur, name, step, phase)


def test_match_by_step_then_name_and_order():
    r0 = [_c(0, 5), _c(10, 5, "ag"), _c(20, 5), _c(100, 5, step=("step", 2))]
    r1 = [_c(3, 2), _c(30, 2), _c(12, 2, "ag")]          # step 2 missing on rank 1
    tuples, unmatched, method = match([sorted(r0, key=lambda c: c.start_ns), sorted(r1, key=lambda c: c.start_ns)])
    assert [(a.start_ns // 1000, b.start_ns // 1000) for a, b in tuples] == [(0, 3), (10, 12), (20, 30)]
    assert unmatched == [1, 0] and method.startswith("by step id")


def test_match_falls_back_to_name_and_order_without_shared_steps():
    r0 = [_c(0, 5, step=("step", 1)), _c(20, 5, step=("step", 2))]
    r1 = [_c(1, 5, step=("seq", 0)), _c(21, 5, step=("seq", 1))]
    tuples, unmatched, method = match([r0, r1])
    assert len(tuples) == 2 and unmatched == [0, 0] and "share no step" in method


def test_skew_block_even_starts_and_no_usual_late_rank():
    t = [(_c(0, 5), _c(0.5, 5)), (_c(10, 8), _c(13, 5)), (_c(23, 5), _c(20, 8))]
    b = skew_block(t, [0, 1])
    assert b["late"] == {"rank 0": 1, "rank 1": 1, "within_1us": 1}
    assert b["usually_late"] is None and b["usually_late_share"] == 0.5
    # one late start each, but rank 1's (3 us) and rank 0's (3 us) tie in time too
    assert b["late_us"] == {"rank 0": 3.0, "rank 1": 3.0} and b["late_for_most_time"] is None
    assert b["wait_us"] == {"rank 0": 0.5 + 3.0, "rank 1": 3.0}
    assert NO_STEP not in {c.step for tt in t for c in tt}


def test_stats_and_short_name():
    assert stats([]) == {"count": 0}
    assert stats([1.0, 2.0, 3.0, 10.0]) == {"count": 4, "median_us": 2.5, "p90_us": 10.0, "max_us": 10.0,
                                            "mean_us": 4.0}
    assert short_name(AR) == "vllm::cross_device_reduce_1stage"
    assert short_name("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)") == \
        "ncclDevKernel_AllGather_RING_LL"


@pytest.mark.parametrize("fmt", ["text", "json", "csv"])
def test_command_line_with_two_traces(two_ranks, tmp_path, fmt):
    out = tmp_path / f"tp.{fmt}"
    assert main([str(two_ranks[1]), str(two_ranks[0]), "--format", fmt, "--out", str(out)]) == 0
    text = out.read_text()
    if fmt == "json":
        d = json.loads(text)
        assert d["tensor_parallel"]["skew"]["all"]["skew_us"]["median_us"] == LATE and len(d["traces"]) == 2
    elif fmt == "csv":
        assert text.splitlines()[0] == "rank,section,phase,step,key,count,time_us,share"
        assert "0,tp_share,all,,share,,," + str(round(2 * (LATE + OWN) / STEP_LEN, 6)) in text
        assert ",tp_skew,all,,skew_median_us,8,30.0," in text
    else:
        assert "Rank skew at the collectives: 8 matched" in text
        assert "late most often: rank 1 (100 % of the starts more than 1 us apart); late for the most time: " \
            "rank 1 (100 % of the summed skew)" in text
        assert "===== rank 0 =====" in text and "===== rank 1 =====" in text


def test_one_trace_keeps_the_single_trace_format(two_ranks, tmp_path):
    out = tmp_path / "one.json"
    assert main([str(two_ranks[0]), "--format", "json", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert "tensor_parallel" not in d and d["categories"]["communication"]["time_us"] == STEPS * 2 * (LATE + OWN)


def test_late_most_often_and_for_the_most_time_can_differ():
    """Rank 1 is 2 us late at three collectives, rank 0 100 us late at one: rank 1 most often, rank 0 for
    the most time (it is the one the other waits for longest)."""
    t = [(_c(0, 5), _c(2, 3)), (_c(10, 5), _c(12, 3)), (_c(20, 5), _c(22, 3)), (_c(130, 3), _c(30, 103))]
    b = skew_block(t, [0, 1])
    assert b["late"] == {"rank 0": 1, "rank 1": 3, "within_1us": 0} and b["usually_late"] == 1
    assert b["late_us"] == {"rank 0": 100.0, "rank 1": 6.0} and b["late_for_most_time"] == 0
    assert b["late_for_most_time_share"] == round(100 / 106, 4)
    assert b["wait_us"] == {"rank 0": 6.0, "rank 1": 100.0}
