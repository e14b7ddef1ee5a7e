"""explain's device idle by cause on hand-built runs whose answers are computed here: the plugin's
per-step causes summed per device, no_work split into frontend where the front end was busy, the head
and tail of the wall window, several ranks, and the verdict of a run with nothing wrong."""
from __future__ import annotations

import pytest
from explain_slices import Run, steady

from vllm_w2ext.analysis.explain import idle
from vllm_w2ext.analysis.explain.report import explain
from vllm_w2ext.vocab import FRONT, IDLE_CAUSES, Attr, Span


def _result(run: Run) -> dict:
    return explain("synthetic", timeline=run.timeline())


def _by_id(result: dict) -> dict:
    return {f["id"]: f for f in result["findings"]}


def test_slow_scheduler_is_named_first_with_its_share():
    run = Run()
    run.generate(0, 105)
    run.add(FRONT, Span.ADD_REQUEST, 0, 1)
    last = steady(run, 10, busy=2, causes={"schedule": 8, "ipc": 1}, t0=2)
    assert last == pytest.approx(103)
    r = _result(run)
    top = r["findings"][0]
    assert (top["id"], top["cause"]) == ("device_idle.schedule", "schedule")
    assert top["seconds"] == pytest.approx(0.072)
    assert top["share"] == pytest.approx(72 / 105, rel=1e-6)
    assert top["evidence"]["steps_with_cause"] == 9
    assert top["evidence"]["open_in_perfetto"]["span"] == Span.WORKER_EXECUTE
    assert "async-scheduling" in top["suggestion"]
    assert r["wall"]["source"] == "llm.generate" and r["wall"]["seconds"] == pytest.approx(0.105)
    c = {k: v["seconds"] for k, v in r["device_idle_by_cause"].items()}
    # head [0, 2]: the front end added the request [0, 1] (frontend), then it travelled to the engine's
    # first step at 1.99 (ipc), then the engine's own loop; tail [103, 105]: nothing left (no_work)
    assert c["frontend"] == pytest.approx(0.001)
    assert c["ipc"] == pytest.approx(0.009 + 0.00099)
    assert c["engine_loop"] == pytest.approx(0.00001)
    assert c["no_work"] == pytest.approx(0.002)
    # every idle microsecond of the wall window has one cause: they add up to wall - busy
    assert sum(c.values()) == pytest.approx(0.105 - 0.020)
    d = r["devices"][0]
    assert d["busy_share_of_stepping"] == pytest.approx(20 / 101)
    assert r["verdict"].startswith("the device was busy 19.8 % of the stepping time")
    assert "the largest loss: the device waited for the scheduler" in r["verdict"]


def test_no_work_becomes_frontend_where_the_front_end_was_busy():
    run = Run()
    t = 0.0
    for i in range(5):
        run.step(i + 1, t, 1.0, {"no_work": 10.0} if i else None)
        if i:          # of the 10 ms before this forward, the front end worked 4 ms (it had outputs to take)
            run.add(FRONT, Span.PROCESS_OUTPUTS, t - 8, t - 4)
        t += 11
    r = _result(run)
    c = {k: v["seconds"] for k, v in r["device_idle_by_cause"].items()}
    assert c["frontend"] == pytest.approx(0.016)
    assert c["no_work"] == pytest.approx(0.024)
    assert r["findings"][0]["id"] == "device_idle.no_work"
    assert r["wall"]["source"] == "first to last span"


def test_front_end_busy_overlap_never_exceeds_no_work():
    run = Run()
    run.step(1, 0, 1)
    run.step(2, 11, 1, {"schedule": 8, "no_work": 2})
    run.add(FRONT, Span.PROCESS_OUTPUTS, 1, 11)          # busy through the whole window
    c = {k: v["seconds"] for k, v in _result(run)["device_idle_by_cause"].items()}
    assert c["frontend"] == pytest.approx(0.002) and c["no_work"] == 0 and c["schedule"] == pytest.approx(0.008)


def test_front_step_alone_is_not_front_end_work():
    """Offline, front.step is mostly the front end blocked on the engine's next output."""
    run = Run()
    run.step(1, 0, 1)
    run.step(2, 11, 1, {"no_work": 10})
    run.add(FRONT, Span.FRONT_STEP, 1, 11)
    c = {k: v["seconds"] for k, v in _result(run)["device_idle_by_cause"].items()}
    assert c["frontend"] == 0 and c["no_work"] == pytest.approx(0.010)


def test_tail_while_the_front_end_still_processes_outputs_is_frontend():
    run = Run()
    run.generate(0, 150)
    last = steady(run, 10, busy=4, causes={"sample": 1}, t0=0)      # the engine is done at 49
    for k in range(20):                                             # the front end lags behind
        run.add(FRONT, Span.PROCESS_OUTPUTS, 10 + 7 * k, 15 + 7 * k)
    run.add(FRONT, Span.PROCESS_OUTPUTS, 150 - 5, 150)
    r = _result(run)
    top = r["findings"][0]
    assert top["cause"] == "frontend"
    # after 49 the front end worked [52,57] [59,64] ... [143,148] and [145,150]
    busy_after = sum(min(15 + 7 * k, 150) - max(10 + 7 * k, last) for k in range(20) if 15 + 7 * k > last)
    busy_after += 150 - 148          # [145, 150] adds [148, 150] to the union
    assert top["seconds"] == pytest.approx(busy_after / 1e3)
    assert top["evidence"]["tail_s"] == pytest.approx(busy_after / 1e3)
    assert "after the engine's last step" in top["evidence"]["text"]
    assert "api-server-count" in top["suggestion"]
    assert r["device_idle_by_cause"]["no_work"]["seconds"] == pytest.approx((101 - busy_after) / 1e3)


def test_ranks_are_grouped_and_averaged():
    run = Run(ranks=2, engine_args=True)
    run.step(1, 0, 2)
    run.step(2, 10, 2, {"schedule": 8}, busy_by_rank={1: 3})
    run.step(3, 20, 2, {"schedule": 8})
    tl = run.timeline()
    assert tl.devices == [("0", "0"), ("0", "1")]
    by_dev = idle.all_devices(tl)
    assert by_dev[("0", "1")].busy_s == pytest.approx(0.007)
    r = explain("synthetic", timeline=tl)
    f = _by_id(r)["device_idle.schedule"]
    assert f["seconds"] == pytest.approx(0.016)
    assert set(f["evidence"]["by_device"]) == {"engine 0 rank 0", "engine 0 rank 1"}
    assert len(r["devices"]) == 2
    # busy over busy + the idle the steps attribute (8 ms of schedule before steps 2 and 3): rank 0 6 / 22,
    # rank 1 7 / 23; the verdict says "the 2 devices", their mean, and each one
    assert r["verdict"].startswith("the 2 devices were busy 28.9 % of the stepping time (mean over the devices: "
                                   "engine 0 rank 0 27.3 %, engine 0 rank 1 30.4 %)")


def test_nothing_wrong_says_so():
    run = Run()
    last = steady(run, 40, busy=24.9, causes={"schedule": 0.01, "sample": 0.09}, t0=0)
    run.generate(0, last)
    r = _result(run)
    assert r["verdict"] == ("the device was busy 99.6 % of the stepping time; scheduling is not the "
                            "bottleneck; nothing else stands out")
    assert all(f["share"] < 0.01 for f in r["findings"])


def test_no_device_attributes_says_so():
    run = Run()
    steady(run, 3, busy=1, causes={"schedule": 1})
    tl = run.timeline()
    for ex in tl.executions[("0", "0")]:
        ex.busy_s = None
    r = explain("synthetic", timeline=tl)
    assert "no device attributes" in r["verdict"]
    assert not [f for f in r["findings"] if f["id"].startswith("device_idle.")]


def test_causes_are_the_vocabulary_s():
    assert set(idle.TITLES) == set(IDLE_CAUSES)


def test_sampled_pairs_busy_share_from_measured_steps_only():
    """A sampled run (VLLM_W2EXT_SAMPLE): pairs of recorded steps with unrecorded steps between; the first
    of each pair has no measured idle. The busy share over what was measured: the run's first forward (as in
    any run) and each pair's second step with the idle before it, (2 + 5 x 2) / (2 + 5 x (2 + 6)) = 28.6 %;
    counting the pairs' first steps' busy time with no idle would say (2 + 4 x 2 + 5 x 2) / (20 + 30) = 40 %."""
    run = Run()
    run.generate(0, 200)
    t = 2.0
    for pair in range(5):
        step = 1 + 16 * pair
        run.step(step, t, 2, idle_unknown=pair > 0)
        t += 2 + 6
        run.step(step + 1, t, 2, {"schedule": 6})
        t += 2 + 30                 # unrecorded steps in between
    d = _result(run)["devices"][0]
    assert d["busy_share_of_stepping"] == pytest.approx(12 / 42)
    assert d["steps"] == 10 and d["steps_idle_unmeasured"] == 4


def test_sampled_run_scales_the_time_between_forwards_to_every_step():
    """The same pairs as above, now with their step spans saying the run was sampled (N = 16) and how many
    steps ran unrecorded between them (14 each): 66 executed steps, 6 forwards counted (the first and the
    pairs' second steps), so the 30 ms of scheduler idle measured stand for 30 x 66 / 6 = 330 ms."""
    run = Run()
    run.generate(0, 200)
    t = 2.0
    for pair in range(5):
        step = 1 + 16 * pair
        sampled = {Attr.SAMPLE_EVERY: 16}
        run.step(step, t, 2, idle_unknown=pair > 0, engine_args={
            **sampled, **({Attr.SKIPPED_STEPS: 14, Attr.SKIPPED_IDLE_STEPS: 0} if pair else {})})
        t += 2 + 6
        run.step(step + 1, t, 2, {"schedule": 6}, engine_args=sampled)
        t += 2 + 30
    r = _result(run)
    d = r["devices"][0]
    assert (d["run_steps"], d["scale"]) == (66, 11.0)
    assert d["busy_share_of_stepping"] == pytest.approx(12 / 42)            # a ratio: unchanged by the scale
    f = _by_id(r)["device_idle.schedule"]
    assert f["seconds"] == pytest.approx(0.330) and f["evidence"]["scale"] == 11.0
    assert "scaled x11.0 to the run's 66 steps" in f["evidence"]["text"]


def test_a_run_whose_n_the_cost_budget_moved_says_so():
    """VLLM_W2EXT_COST_BUDGET: the first steps recorded in full (no N on their spans), then pairs with N 4 and
    later 8; the note gives the range and the cause, and the step count adds what was only counted (6 recorded
    + 2 counted)."""
    run = Run()
    run.generate(0, 200)
    t = 2.0
    for step, args in ((1, {}), (2, {}), (3, {Attr.SAMPLE_EVERY: 4}), (4, {Attr.SAMPLE_EVERY: 4}),
                       (9, {Attr.SAMPLE_EVERY: 8, Attr.SKIPPED_STEPS: 2, Attr.SKIPPED_IDLE_STEPS: 0}),
                       (10, {Attr.SAMPLE_EVERY: 8})):
        run.step(step, t, 2, {"schedule": 1} if step > 1 else None, engine_args=args)
        t += 3
    tl = run.timeline()
    assert (tl.sampling.least, tl.sampling.every, tl.sampling.recorded, tl.sampling.steps) == (1, 8, 6, 8)
    note = next(n for n in tl.notes if n.startswith("sampled run"))
    assert note.startswith("sampled run (VLLM_W2EXT_SAMPLE from 1 to 8, moved by VLLM_W2EXT_COST_BUDGET): 6 of 8 ")
