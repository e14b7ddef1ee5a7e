"""A recorded step's four phases (schedule, forward, the worker's sample, update), driven through the EngineCore's
and the worker's hooks as vLLM's sync step calls them (the worker inside the EngineCore's process). Without marks
the hooks append each phase's ``wire.Interval`` to the recorder's buffer themselves; with marks (NVTX) they go
through ``Recorder.phase_end``. Known answers: the same intervals either way (names, parents, step, attributes), the
stamp carries the schedule interval's bounds, a failed phase names its error, and a full buffer keeps the first
records in order and counts the rest dropped, phases appended unchecked included."""
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks import engine_core, worker
from vllm_w2ext.hooks.engine_core import STAMP
from vllm_w2ext.steps.facts import Stamp
from vllm_w2ext.telemetry import recording
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.telemetry.wire import ATTRS, Interval, RangeRecord
from vllm_w2ext.vocab import ENGINE, WORKER, Attr, Span


class FakeNvtx:
    def __init__(self):
        self.calls = []

    def push(self, name, role, step):
        self.calls.append(("push", name))

    def pop(self):
        self.calls.append(("pop",))


def decode_output() -> NS:
    """A SchedulerOutput of one request decoding one token."""
    cached = NS(req_ids=["a"], resumed_req_ids=set(), num_output_tokens=[3], num_computed_tokens=[8])
    return NS(scheduled_new_reqs=[], scheduled_cached_reqs=cached, num_scheduled_tokens={"a": 1},
              total_num_scheduled_tokens=1, preempted_req_ids=set(), finished_req_ids=set(),
              scheduled_spec_decode_tokens={})


@pytest.fixture
def hooks(monkeypatch):
    """The two hook modules on fresh state, their recorder set by ``use``; process-wide marks restored after."""
    saved = recording.PHASE_MARKS[0], recording._nvtx_on[0], recording.PROFILER_ANNOTATION[0]
    recording.PHASE_MARKS[0] = recording._nvtx_on[0] = False
    est, wst = engine_core._State(), worker._State()
    est.identity_done = wst.identity_done = True
    est.finished = []
    monkeypatch.setattr(engine_core, "S", est)
    monkeypatch.setattr(worker, "S", wst)

    def use(rec):
        for mod in (engine_core, worker):
            monkeypatch.setattr(mod, "RECORDER", [rec])
            monkeypatch.setattr(mod, "recorder", lambda: rec)
        return rec
    yield use
    recording.PHASE_MARKS[0], recording._nvtx_on[0], recording.PROFILER_ANNOTATION[0] = saved


def step(forward_error=None):
    """One sync step: schedule, the worker's execute_model (its forward inside), sample_tokens, update."""
    sched = NS(requests={"a": NS(num_prompt_tokens=4)}, running=["a"], waiting=[])
    so = decode_output()
    state = engine_core._step_pre(None, (), {})
    engine_core._schedule_post(engine_core._schedule_pre(sched, (), {}), so, None)
    ex = worker._execute_pre(None, (so,), {})
    worker._forward_post(worker._forward_pre(None, (), {}), None, forward_error)
    worker._execute_post(ex, None, None)
    worker._sample_post(worker._sample_pre(None, (None,), {}), "sampled", None)
    engine_core._update_post(engine_core._update_pre(sched, (so, None), {}), {}, None)
    engine_core._step_post(state, ({}, True), None)
    return so


def recorded(rec) -> tuple[dict, dict]:
    """(ranges by name, intervals by name) of what the recorder holds."""
    out = rec.take()
    ranges = {r[0]: RangeRecord._make(r) for r in out if type(r) is list}
    ivs = {r[0]: Interval._make(r) for r in out if type(r) is tuple}
    return ranges, ivs


def shape(ranges, ivs) -> dict:
    """Each phase's parent (by the range's name), step, attributes and error: what must not depend on marks."""
    by_id = {r.span_id: name for name, r in ranges.items()}
    assert {iv.trace_id for iv in ivs.values()} == {ranges[Span.STEP].trace_id}
    return {name: (by_id[iv.parent_id], iv.step, iv.attrs, iv.error) for name, iv in ivs.items()}


EXPECTED = {Span.SCHEDULE: (Span.STEP, 1, None, None),
            Span.FORWARD: (Span.WORKER_EXECUTE, 1, None, None),
            Span.WORKER_SAMPLE: (Span.STEP, 1, None, None),
            Span.UPDATE: (Span.STEP, 1, {Attr.STEP_BATCH_ID: 1}, None)}


def test_the_four_phases_without_marks_are_appended_by_the_hooks(hooks):
    rec = hooks(Recorder(64, None))
    so = step()
    ranges, ivs = recorded(rec)
    assert shape(ranges, ivs) == EXPECTED
    assert all(iv.role == (ENGINE if n in (Span.SCHEDULE, Span.UPDATE) else WORKER) for n, iv in ivs.items())
    assert all(0 < iv.start_ns <= iv.end_ns for iv in ivs.values())
    stamp = Stamp._make(getattr(so, STAMP))
    sched = ivs[Span.SCHEDULE]
    assert (stamp.schedule_start, stamp.schedule_end) == (sched.start_ns, sched.end_ns)
    # the forward inside the worker's execution, the sample after it, the update after the sample
    ex = ranges[Span.WORKER_EXECUTE]
    assert ex.start_ns <= ivs[Span.FORWARD].start_ns <= ivs[Span.FORWARD].end_ns <= ex.end_ns
    assert ex.end_ns <= ivs[Span.WORKER_SAMPLE].start_ns and ivs[Span.WORKER_SAMPLE].end_ns <= ivs[Span.UPDATE].start_ns
    # the next step's stamp carries this update's bounds
    so2 = step()
    stamp2 = Stamp._make(getattr(so2, STAMP))
    assert (stamp2.update_start, stamp2.update_end) == (ivs[Span.UPDATE].start_ns, ivs[Span.UPDATE].end_ns)


def test_with_marks_the_same_intervals_through_phase_end_and_marks_balanced(hooks):
    nv = FakeNvtx()
    rec = hooks(Recorder(64, nv))
    so = step()
    ranges, ivs = recorded(rec)
    assert shape(ranges, ivs) == EXPECTED
    stamp = Stamp._make(getattr(so, STAMP))
    assert (stamp.schedule_start, stamp.schedule_end) == (ivs[Span.SCHEDULE].start_ns, ivs[Span.SCHEDULE].end_ns)
    pushed = [c[1] for c in nv.calls if c[0] == "push"]
    assert sorted(pushed) == sorted([Span.STEP, Span.SCHEDULE, Span.WORKER_EXECUTE, Span.FORWARD,
                                     Span.WORKER_SAMPLE, Span.UPDATE])
    assert len(pushed) == nv.calls.count(("pop",))


def test_a_failed_phase_names_its_error_without_marks_too(hooks):
    rec = hooks(Recorder(64, None))
    step(forward_error=RuntimeError("boom"))
    ranges, ivs = recorded(rec)
    assert shape(ranges, ivs)[Span.FORWARD] == (Span.WORKER_EXECUTE, 1, None, "RuntimeError")


def test_a_full_buffer_keeps_the_first_records_and_counts_the_rest(hooks):
    """Capacity 4, six records per step (schedule, forward, execute, sample, update, step): the first four are
    kept, in order; the update (appended unchecked) and the step are dropped at the step's end, and every later
    record too. Nothing is lost uncounted."""
    rec = hooks(Recorder(4, None))
    step()
    assert [r[0] for r in rec.buf] == [Span.SCHEDULE, Span.FORWARD, Span.WORKER_EXECUTE, Span.WORKER_SAMPLE]
    assert rec.dropped == 2
    step()
    step()
    assert len(rec.buf) == 4 and rec.dropped == 2 + 6 + 6
    assert [r[0] for r in rec.take()] == [Span.SCHEDULE, Span.FORWARD, Span.WORKER_EXECUTE, Span.WORKER_SAMPLE]
    step()                                           # taken: room again
    assert [r[0] for r in rec.buf] == [Span.SCHEDULE, Span.FORWARD, Span.WORKER_EXECUTE, Span.WORKER_SAMPLE]


def test_the_worker_span_gets_its_token_count_on_the_export_side(hooks):
    """The hook carries the step's scheduled tokens in the execution record (no attribute dict on vLLM's thread);
    assembly makes it the span's vllm.worker.num_tokens."""
    import itertools

    from vllm_w2ext.steps.assemble import Assembler
    from vllm_w2ext.telemetry.ranges import Range

    rec = hooks(Recorder(64, None))
    step()                                             # one request decoding: 1 token
    raw = [r for r in rec.take() if type(r) is list]
    assert next(r for r in raw if r[0] == Span.WORKER_EXECUTE)[ATTRS] is None
    ids = itertools.count(1)
    out = Assembler(lambda h: None, lambda: next(ids), lambda: next(ids))([Range.from_record(r) for r in raw])
    ex = next(r for r in out if r.name == Span.WORKER_EXECUTE)
    assert ex.attrs[Attr.WORKER_TOKENS] == 1
