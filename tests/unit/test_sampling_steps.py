"""VLLM_W2EXT_SAMPLE in the EngineCore's hooks, driven as vLLM's sync step loop drives them (step ->
schedule -> update_from_output -> free_request), on scheduler outputs with planted request changes.
Known answers: which steps are recorded (two in every N, plus the steps that change a request), what
the recorded steps carry for the steps only counted, and that only the pairs reach the workers."""
import enum
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks import engine_core
from vllm_w2ext.hooks.engine_core import STAMP
from vllm_w2ext.hooks.runner import HookRunner
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.steps.facts import SkippedSteps, step_record
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.telemetry.wire import DATA, RangeRecord
from vllm_w2ext.vocab import Span


class RequestStatus(enum.IntEnum):
    """vLLM's kind of status (an IntEnum): the hook reads its member's name."""
    FINISHED_LENGTH_CAPPED = 8


EVERY = 8


def output(new=(), decoding=(), prefilling=(), finished=()) -> NS:
    """A SchedulerOutput: ``new`` requests (4-token prompts), ``decoding`` ones (one token each),
    ``prefilling`` ones (a 4-token chunk, no output yet)."""
    nst = {r: 4 for r in new} | {r: 1 for r in decoding} | {r: 4 for r in prefilling}
    cached = NS(req_ids=list(decoding) + list(prefilling), resumed_req_ids=set(),
                num_output_tokens=[3] * len(decoding) + [0] * len(prefilling),
                num_computed_tokens=[8] * len(decoding) + [4] * len(prefilling))
    return NS(scheduled_new_reqs=[NS(req_id=r, num_computed_tokens=0) for r in new], scheduled_cached_reqs=cached,
              num_scheduled_tokens=nst, total_num_scheduled_tokens=sum(nst.values()), preempted_req_ids=set(),
              finished_req_ids=set(finished), scheduled_spec_decode_tokens={})


@pytest.fixture
def engine(monkeypatch):
    st = engine_core._State()
    st.finished, st.identity_done = [], True
    st.set_sample(EVERY)
    rec = Recorder(1 << 16, None)
    monkeypatch.setattr(engine_core, "S", st)
    monkeypatch.setattr(engine_core, "recorder", lambda: rec)
    monkeypatch.setattr(engine_core, "RECORDER", [rec])     # the hooks read RECORDER[0] first
    reqs = {r: NS(num_prompt_tokens=12, trace_headers=None, arrival_time=0.0) for r in ("a", "b", "c")}
    sched = NS(requests=reqs, running=[], waiting=[])
    return rec, sched


def run_steps(rec, sched, outputs, freed_in: dict):
    """One sync step per output; ``freed_in[k]``: request ids freed in step k's update_from_output."""
    for k, so in enumerate(outputs, start=1):
        state = engine_core._step_pre(NS(scheduler=sched), (), {})
        t = engine_core._schedule_pre(sched, (), {})
        engine_core._schedule_post(t, so, None)
        u = engine_core._update_pre(sched, (so,), {})
        for rid in freed_in.get(k, ()):
            engine_core._free_request_pre(sched, (NS(request_id=rid, status=RequestStatus.FINISHED_LENGTH_CAPPED,
                                                     num_output_tokens=5),), {})
        if u is not None:
            engine_core._update_post(u, None, None)
        engine_core._step_post(state, (None, so.total_num_scheduled_tokens > 0), None)
    return [r for r in rec.take() if r[0] == Span.STEP]


def test_pairs_and_request_changes_recorded_the_rest_counted(engine):
    rec, sched = engine
    outs = [output(new=["a"])] + [output(decoding=["a"]) for _ in range(2, 41)]
    outs[22 - 1] = output(decoding=["a"], prefilling=["b"])          # a chunked prefill in step 22
    outs[31 - 1] = output(finished=["c"], decoding=["a"])              # vLLM says c finished: step 31
    steps = run_steps(rec, sched, outs, freed_in={13: ["c"]})          # c freed in step 13's update
    recorded = [RangeRecord._make(r).step for r in steps]
    pairs = {k for k in range(1, 41) if k % EVERY in (0, 1)}
    assert recorded == sorted(pairs | {13, 22, 31})
    records = {RangeRecord._make(r).step: step_record(r[DATA]) for r in steps}
    assert records[13].finished[0].id == "c" and records[13].facts.decode_tokens == 1   # recorded at its end
    assert records[22].facts.prefill_tokens == 4
    assert records[9].skipped == SkippedSteps(0, 0, 0)                 # 8 and 9: a pair
    assert records[13].skipped == SkippedSteps(3, 0, 3)                # 10, 11, 12 only counted
    assert records[16].skipped == SkippedSteps(2, 0, 2)                # 14, 15
    counted = sum(r.skipped.executed for r in records.values())
    assert counted + len(recorded) == 40
    decode = sum(r.skipped.decode_tokens + (r.facts.decode_tokens if r.facts else 0) for r in records.values())
    assert decode == 39                                                # one per step after the first
    for k, so in enumerate(outs, start=1):   # the workers record the pairs only: a step that changed a request
        assert (getattr(so, STAMP, None) is not None) == (k in pairs)      # is recorded alone, at its end
    assert records[22].facts.prefill_tokens == 4 and records[31].facts.finished_before == 1


def test_every_step_recorded_by_default(engine, monkeypatch):
    rec, sched = engine
    engine_core.S.set_sample(1)
    steps = run_steps(rec, sched, [output(new=["a"])] + [output(decoding=["a"])] * 9, {})
    assert [RangeRecord._make(r).step for r in steps] == list(range(1, 11))
    assert all(step_record(r[DATA]).skipped == SkippedSteps(0, 0, 0) for r in steps)


def test_runner_skips_post_when_pre_recorded_nothing():
    seen = []
    r = HookRunner(Hook("t.none", "m", "C.f", lambda o, a, k: None, lambda s, res, e: seen.append(s)))
    fn = r.bind(lambda self, x: x + 1)
    assert [fn(None, i) for i in range(200)] == list(range(1, 201))    # sampled (timed) calls included
    assert seen == []


class Unscannable(list):
    """A per-request list the light path must not scan (steady decode: nothing could be found in it)."""
    def __contains__(self, item):
        raise AssertionError("scanned")


def test_light_steps_scan_per_request_lists_only_while_a_request_could_be_found(engine):
    """A request whose prompt ends in a one-token chunk shows it only in its output count (every request
    got one token): the light step is recorded while the request is known to be prefilling; once its first
    token is recorded, and with nothing preempted, steady decode steps never scan the batch's lists."""
    rec, sched = engine
    first = output(new=["a", "b"])
    first.num_scheduled_tokens["a"], first.num_scheduled_tokens["b"] = 12, 11      # b: 11 of 12 prompt tokens
    first.total_num_scheduled_tokens = 23
    last_chunk = output(decoding=["a", "b"])
    last_chunk.scheduled_cached_reqs.num_output_tokens = [3, 0]                   # b: its twelfth token
    last_chunk.scheduled_cached_reqs.num_computed_tokens = [13, 11]
    steady = []
    for _ in range(10):
        so = output(decoding=["a", "b"])
        so.scheduled_cached_reqs.num_output_tokens = Unscannable([3, 3])
        so.scheduled_cached_reqs.resumed_from_preemption = Unscannable([False, False])
        steady.append(so)
    outs = [first, output(decoding=["a"]), output(decoding=["a"]), last_chunk] + steady
    steps = run_steps(rec, sched, outs, {})
    recorded = [RangeRecord._make(r).step for r in steps]
    assert recorded == [1, 4, 8, 9]                    # 4: b's first token, on a step that would be light
    records = {RangeRecord._make(r).step: step_record(r[DATA]) for r in steps}
    assert records[4].facts.first_tokens == ("b",) and records[4].facts.prefill_tokens == 1
    assert not engine_core.S.prefilling and not engine_core.S.preempted


def test_light_steps_that_schedule_nothing_are_counted_idle(engine):
    """Light steps that schedule no tokens (vLLM waits on the batch queue, or has nothing to run) are counted as
    idle, by difference from the step numbers; the others as executed with their tokens, a light step recorded at
    its end (its update freed a request) in neither."""
    rec, sched = engine
    empty = output()
    outs = [output(new=["a"])] + [output(decoding=["a"]) for _ in range(2, 17)]
    for k in (3, 4, 11):
        outs[k - 1] = empty
    steps = run_steps(rec, sched, outs, freed_in={12: ["c"]})
    records = {RangeRecord._make(r).step: step_record(r[DATA]) for r in steps}
    assert sorted(records) == [1, 8, 9, 12, 16]
    assert records[8].skipped == SkippedSteps(4, 2, 4)                 # 2..7: 3 and 4 idle
    assert records[12].skipped == SkippedSteps(1, 1, 1)                # 10, 11 (idle); 12 recorded itself
    assert records[12].facts.decode_tokens == 1
    assert records[16].skipped == SkippedSteps(3, 0, 3)                # 13, 14, 15
