"""The NVTX recording injection library sees the ranges a real process emits."""

import subprocess
import sys
import textwrap

import pytest

from support import nvtx_recorder as recorder


WORKLOAD = textwrap.dedent(
    """
    import threading
    import nvtx

    dom = nvtx.get_domain("vllm_w2ext")
    # Without a tool attached this would be nvtx's DummyDomain (all no-ops).
    assert type(dom).__name__ == "Domain", type(dom)

    def step(ready):
        dom.push_range(message="engine.step", color=0xFFE8A33C, category=2, payload=7)
        dom.push_range(message="engine.schedule", color=0xFF3CA3E8, category=2)
        dom.pop_range()
        dom.pop_range()
        rid = dom.start_range(message="request", category=3, payload=11)
        ready.append(rid)

    rids = []
    threads = [threading.Thread(target=step, args=(rids,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dom.mark(message="tick", category="sched")  # named category -> id 1
    for rid in rids:  # end the async ranges on another thread than they started
        dom.end_range(rid)
    print("ok", threading.get_native_id())
    """
)


@pytest.fixture(scope="session")
def recorded(nvtx_recorder_lib, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nvtx_record")
    out = tmp / "events.tsv"
    proc = subprocess.run(
        [sys.executable, "-c", WORKLOAD],
        env=recorder.recorder_env(nvtx_recorder_lib, out),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    main_tid = int(proc.stdout.split()[-1])
    events = recorder.parse_records(out)
    return events, recorder.pair_ranges(events), main_tid


def test_push_pop_nesting(recorded):
    _, ranges, main_tid = recorded
    steps = [r for r in ranges if r.name == "engine.step"]
    schedules = [r for r in ranges if r.name == "engine.schedule"]
    assert len(steps) == 2 and len(schedules) == 2
    assert len({r.tid for r in steps}) == 2 and main_tid not in {r.tid for r in steps}

    for step in steps:
        assert (step.kind, step.domain, step.depth, step.parent) == ("push", "vllm_w2ext", 0, None)
        assert step.category == 2 and step.payload == 7
        (sched,) = [r for r in schedules if r.tid == step.tid]
        assert (sched.domain, sched.depth, sched.parent) == ("vllm_w2ext", 1, "engine.step")
        assert sched.category == 2 and sched.payload is None
        assert step.start_ns <= sched.start_ns <= sched.end_ns <= step.end_ns
        assert step.end_tid == step.tid


def test_start_end_pairing(recorded):
    _, ranges, main_tid = recorded
    requests = [r for r in ranges if r.name == "request"]
    assert len(requests) == 2
    assert len({r.range_id for r in requests}) == 2 and all(r.range_id for r in requests)
    steps_tids = {r.tid for r in ranges if r.name == "engine.step"}
    for r in requests:
        assert (r.kind, r.domain, r.depth, r.parent) == ("start", "vllm_w2ext", 0, None)
        assert r.category == 3 and r.payload == 11
        assert r.tid in steps_tids and r.end_tid == main_tid
        assert r.end_ns is not None and r.end_ns >= r.start_ns
    assert all(r.end_ns is not None for r in ranges)


def test_marks_and_category_names(recorded):
    events, _, main_tid = recorded
    (tick,) = [e for e in events if e.kind == "mark"]
    assert (tick.message, tick.domain, tick.tid, tick.category) == ("tick", "vllm_w2ext", main_tid, 1)
    assert recorder.category_names(events) == {("vllm_w2ext", 1): "sched"}
    assert {e.kind for e in events} == {"push", "pop", "start", "end", "mark", "category"}
