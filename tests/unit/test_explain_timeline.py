"""explain's timeline: who each process is (engine, rank from the spans or the track name), the wall
window, and which worker spans are device executions."""
from __future__ import annotations

import pytest
from explain_slices import Run, ns

from vllm_w2ext.analysis.explain.intervals import Union, merge
from vllm_w2ext.analysis.explain.timeline import ENGINE_RX, RANK_RX, Process, _match, build
from vllm_w2ext.analysis.readers.pftrace import Slice
from vllm_w2ext.vocab import ENGINE, FRONT, WORKER, Attr, Span


def test_engine_and_rank_from_track_names():
    assert _match(ENGINE_RX, "vLLM worker engine 1 rank 3 (pid 7)") == "1"
    assert _match(RANK_RX, "vLLM worker engine 1 rank 3 (pid 7)") == "3"
    assert _match(ENGINE_RX, "EngineCore_DP2") is None and _match(ENGINE_RX, "EngineCore DP2") == "2"
    assert _match(RANK_RX, "VllmWorker TP1") == "1"
    assert _match(ENGINE_RX, "vLLM engine_core (pid 9)") is None


def _exec(step: int, start: float, busy: float | None, **args) -> Slice:
    a = {"step": step, **args}
    if busy is not None:
        a[Attr.DEVICE_BUSY] = busy / 1e3
    return Slice(Span.WORKER_EXECUTE, ns(start), ns(start + (busy or 1)), step, WORKER, WORKER, a)


def test_devices_from_process_names_and_empty_steps_dropped():
    w0 = [_exec(1, 0, 2), _exec(2, 5, 2), _exec(3, 9, None)]          # step 3 ran no forward
    w1 = [_exec(1, 0, 2), _exec(2, 5, 3)]
    fwd = Slice(Span.FORWARD, ns(0.5), ns(2), 1, WORKER, WORKER, {"step": 1})
    tl = build([(Process(10, "w", engine="1", rank="0"), w0 + [fwd]), (Process(11, "w", engine="1", rank="1"), w1)])
    assert tl.devices == [("1", "0"), ("1", "1")]
    assert [e.step for e in tl.executions[("1", "0")]] == [1, 2]
    # the first step has no idle window: its forward comes from the worker.forward span where recorded
    assert tl.executions[("1", "0")][0].fwd_start == ns(0.5)
    assert tl.executions[("1", "1")][0].fwd_start == ns(0)


def test_span_arguments_win_over_track_names_and_pid_order_is_the_last_resort():
    run = Run(ranks=2)
    run.step(1, 0, 1)
    tl = run.timeline()
    assert tl.devices == [("0", "0"), ("0", "1")]          # workers numbered in pid order
    s = _exec(1, 0, 1, **{Attr.ENGINE_INDEX: 3, Attr.RANK: 5})
    assert build([(Process(1, "vLLM worker engine 1 rank 0", "1", "0"), [s])]).devices == [("3", "5")]


def test_wall_window():
    gen = [Slice(Span.GENERATE, ns(a), ns(b), -1, FRONT, FRONT, {}) for a, b in ((10, 20), (30, 50))]
    other = [Slice(Span.STEP, ns(0), ns(60), 1, ENGINE, ENGINE, {})]
    tl = build([(Process(1), gen + other)])
    assert (tl.wall_start, tl.wall_end, tl.wall_s) == (ns(10), ns(50), pytest.approx(0.040))
    assert tl.wall_source == "2 llm.generate calls, first to last"
    tl = build([(Process(1), other)])
    assert tl.wall_source == "first to last span" and tl.wall_s == pytest.approx(0.060)
    # requests added outside the generate calls (an LLMEngine.add_request / step loop) widen the window
    req = [Slice(Span.REQUEST, ns(a), ns(b), -1, FRONT, "vllm.request #0", {}) for a, b in ((12, 18), (52, 58))]
    tl = build([(Process(1), gen + other + req)])
    assert (tl.wall_start, tl.wall_end) == (ns(10), ns(58))
    assert tl.wall_source == "2 llm.generate calls, first to last and 1 requests outside it"


def test_intervals():
    assert merge([(5, 7), (0, 2), (1, 3), (8, 9)], bridge_ns=1) == [(0, 3), (5, 9)]
    u = Union([(0, 10), (20, 30)])
    assert u.overlap(5, 25) == 10 and u.overlap(10, 20) == 0 and u.overlap(-5, 40) == 20 and u.total() == 20
