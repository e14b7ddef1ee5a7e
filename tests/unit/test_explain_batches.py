"""explain's step-batch findings on hand-built runs: decode slowed by co-batched prefill (the device
time a step's fresh prefill added over a decode-only step of its size), preemptions (the recompute of
resumed requests), and queueing split into capacity and not stepping."""
from __future__ import annotations

import pytest
from explain_slices import Run

from vllm_w2ext.analysis.explain import batches
from vllm_w2ext.analysis.explain.report import explain
from vllm_w2ext.vocab import Attr, Span


def _ids(r: dict) -> dict:
    return {f["id"]: f for f in r["findings"]}


def _decode_run(mixed: dict[int, tuple[int, float, int]] | None = None, n: int = 20) -> Run:
    """n steps, 1 ms apart (cause: sample); step i is decode-only (8 decodes, 10 ms) unless listed in
    ``mixed`` as (prefill tokens, busy ms, resumed tokens)."""
    run = Run()
    t = 0.0
    for i in range(1, n + 1):
        prefill, busy, resumed = (mixed or {}).get(i, (0, 10.0, 0))
        run.step(i, t, busy, {"sample": 1.0} if i > 1 else None, prefill=prefill, decode=8, resumed=resumed,
                 preemptions=1 if resumed and i == 3 else 0, running=9 if prefill else 8)
        t += busy + 1.0
    run.generate(0, t - 1.0)
    return run


def test_prefill_interference_is_the_extra_device_time_of_mixed_steps():
    run = _decode_run({5: (500, 40.0, 0), 9: (500, 40.0, 0), 13: (250, 25.0, 0), 17: (500, 40.0, 0)})
    run.request("r1", 0, 200, **{Attr.STEPS_WITH_PREFILL: 4, Attr.PREFILL_INTERFERENCE_S: 0.105})
    run.request("r2", 0, 200, **{Attr.STEPS_WITH_PREFILL: 2, Attr.PREFILL_INTERFERENCE_S: 0.05})
    r = explain("synthetic", timeline=run.timeline())
    top = r["findings"][0]
    assert top["id"] == "prefill_interference" and top["cause"] == "prefill_interference"
    assert top["seconds"] == pytest.approx(0.030 * 3 + 0.015)
    wall = r["wall"]["seconds"]
    assert wall == pytest.approx((16 * 10 + 3 * 40 + 25 + 19) / 1e3)
    assert top["share"] == pytest.approx(top["seconds"] / wall)
    ev = top["evidence"]
    assert ev["mixed_steps"] == 4 and ev["decode_only_steps"] == 16
    assert ev["decode_only_step_s"] == pytest.approx(0.010) and ev["mixed_step_s"] == pytest.approx(0.040)
    assert ev["prefill_tokens_per_mixed_step"]["max"] == 500
    assert ev["requests_slowed"] == 2 and ev["most_slowed_request"]["id"] == "r1"
    assert ev["plugin_estimate_s"]["total"] == pytest.approx(0.155)
    assert ev["top_steps"][0]["step"] in (5, 9, 17) and ev["open_in_perfetto"]["span"] == Span.STEP
    assert "max-num-batched-tokens" in top["suggestion"]


def test_decode_baseline_follows_the_batch_size():
    run = Run()
    t = 0.0
    for i, (decode, prefill, busy) in enumerate([(4, 0, 6), (4, 0, 6), (8, 0, 10), (8, 0, 10), (6, 300, 38)], 1):
        run.step(i, t, busy, {"sample": 1} if i > 1 else None, prefill=prefill, decode=decode)
        t += busy + 1
    rows = batches.rows(run.timeline())["0"]
    base = batches.Baseline(rows)
    assert (base.a, base.b) == (pytest.approx(2.0e-3), pytest.approx(1.0e-3))
    assert rows[-1].fresh_extra_s == pytest.approx(0.030)


def test_preemption_counts_the_recompute_and_not_as_interference():
    # step 3: 400 prefill tokens of which 300 recompute a resumed request; 50 ms against a 10 ms baseline
    run = _decode_run({3: (400, 50.0, 300)})
    run.request("p", 0, 100, **{Attr.REQUEST_PREEMPTIONS: 2})
    r = explain("synthetic", timeline=run.timeline())
    f = _ids(r)
    assert r["findings"][0]["id"] == "preemption"
    assert f["preemption"]["seconds"] == pytest.approx(0.030)
    assert f["prefill_interference"]["seconds"] == pytest.approx(0.010)
    ev = f["preemption"]["evidence"]
    assert ev["preemptions"] == 1 and ev["resumed_tokens"] == 300 and ev["requests_preempted"] == 1
    assert ev["first_preemption"] == {"step": 3, "running": 9, "waiting": 0}
    assert "VLLM_CPU_KVCACHE_SPACE" in f["preemption"]["suggestion"]
    assert r["requests"]["preemptions"] == 2 and r["requests"]["preempted_requests"] == 1


def test_no_preemption_no_finding():
    r = explain("synthetic", timeline=_decode_run().timeline())
    assert "preemption" not in _ids(r) and "prefill_interference" not in _ids(r)


def test_queueing_splits_capacity_step_in_flight_and_not_stepping():
    run = Run()
    t = 10.0
    for i in range(1, 11):       # steps from 10 ms, 11 ms apart, 4 running; steps 1-5 leave one waiting
        run.step(i, t, 10, {"sample": 1} if i > 1 else None, decode=4, running=4, waiting=1 if i <= 5 else 0)
        t += 11
    # "late" arrived at 20 ms, first scheduled in step 6 (starts at 64.99): 44.99 ms, the batch full all along;
    # "mid" arrived at 80 ms during step 7, which left nobody waiting, and joined step 8 (86.99): 6.99 ms;
    # "early" waited 5 ms before the engine's first step (9.99), nothing stepping
    run.request("late", 20, 200, first_step=6, **{Attr.QUEUE_S: 0.04499})
    run.request("mid", 80, 200, first_step=8, **{Attr.QUEUE_S: 0.00699})
    run.request("early", 4.99, 200, first_step=1, **{Attr.QUEUE_S: 0.005})
    r = explain("synthetic", timeline=run.timeline())
    f = _ids(r)
    cap = f["queueing.capacity"]
    assert cap["cause"] == "capacity"
    assert cap["seconds"] == pytest.approx(0.04499 / 3, rel=1e-3)
    assert cap["evidence"]["requests_waited"] == 1 and cap["evidence"]["top_requests"][0]["id"] == "late"
    assert "running batch stayed at 4" in cap["evidence"]["limit"]
    assert "max-num-seqs" in cap["suggestion"]
    nxt = f["queueing.next_step"]
    assert nxt["evidence"]["step_in_flight_mean_s"] == pytest.approx(0.00699 / 3, rel=1e-3)
    assert nxt["evidence"]["not_stepping_mean_s"] == pytest.approx(0.005 / 3, rel=1e-3)
    assert nxt["seconds"] == pytest.approx(0.01199 / 3, rel=1e-3) and nxt["suggestion"] is None
    assert r["requests"]["queue_s"]["max"] == pytest.approx(0.04499)
