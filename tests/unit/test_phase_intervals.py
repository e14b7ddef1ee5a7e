"""A recorded step's four phases (schedule, forward, the worker's sample, update), driven through the EngineCore's
and the worker's hooks as vLLM's sync step calls them (the worker inside the EngineCore's process), then assembled
as the export side assembles them. Without marks the EngineCore's hooks keep the schedule and update bounds in the
step's record (``StepRecord``) and the worker's append their ``wire.Interval`` to the recorder's buffer themselves;
with marks (NVTX) every phase goes through ``Recorder.phase_end``. Known answers: the same spans either way
(names, parents, step, attributes), the stamp carries the schedule's bounds, a failed phase names its error, and a
full buffer keeps the first records in order and counts the rest dropped, phases appended unchecked included."""
import collections
import itertools
from types import SimpleNamespace as NS

import pytest
from nvtx_calls import FakeNvtx

from vllm_w2ext.hooks import bounds, engine_core, worker
from vllm_w2ext.hooks.engine_core import STAMP
from vllm_w2ext.hooks.runner import HookRunner
from vllm_w2ext.steps.assemble import Assembler
from vllm_w2ext.steps.facts import Stamp
from vllm_w2ext.telemetry import recording
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.vocab import ENGINE, WORKER, Attr, Span


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
    bounds.clear()
    bounds.MODE.reset()                 # the worker's hooks record through pre/post here (not read from bounds)

    def use(rec):
        for mod in (engine_core, worker):
            monkeypatch.setattr(mod, "RECORDER", [rec])
            monkeypatch.setattr(mod, "recorder", lambda: rec)
        return rec
    yield use
    recording.PHASE_MARKS[0], recording._nvtx_on[0], recording.PROFILER_ANNOTATION[0] = saved


def through_runner(name: str, instance, args: tuple, result, error=None) -> None:
    """A call of a bounds hook as the runner drives it (``enter``/``exit``, as on a timed call or from vLLM's native
    observers): its Bounds noted without marks, its ``pre`` and ``post`` with them (hooks/bounds.py)."""
    r = HookRunner(next(h for h in engine_core.HOOKS + worker.HOOKS if h.name == name))
    state = r.enter(instance, args, {})
    if r.needs_exit(state):
        r.exit(state, result, error)


def step(forward_error=None):
    """One sync step: schedule, the worker's execute_model (its forward inside), sample_tokens, update."""
    sched = NS(requests={"a": NS(num_prompt_tokens=4)}, running=["a"], waiting=[])
    so = decode_output()
    state = engine_core._step_pre(NS(scheduler=sched), (), {})
    engine_core._schedule_post(engine_core._schedule_pre(sched, (), {}), so, None)
    ex = worker._execute_pre(None, (so,), {})
    through_runner("worker.forward_v1", None, (), None, forward_error)
    worker._execute_post(ex, None, None)
    worker._sample_post(worker._sample_pre(None, (None,), {}), "sampled", None)
    through_runner("engine.update_from_output", sched, (so, None), {})
    engine_core._step_post(state, ({}, True), None)
    return so


def spans(rec, records=None) -> dict:
    """The recorder's records (or ``records``) assembled as the export side does: spans by name."""
    ids = itertools.count(1)
    raw = rec.take() if records is None else records
    return {r.name: r for r in Assembler(lambda h: None, lambda: next(ids), lambda: next(ids))(
        [Range.from_record(x) for x in raw])}


def shape(got: dict) -> dict:
    """Each phase's parent (by the span's name), step, attributes and error: what must not depend on marks."""
    by_id = {r.span_id: name for name, r in got.items()}
    assert {got[n].trace_id for n in PHASES} == {got[Span.STEP].trace_id}
    return {n: (by_id[got[n].parent_id], got[n].step, got[n].attrs, got[n].error) for n in PHASES}


PHASES = (Span.SCHEDULE, Span.FORWARD, Span.WORKER_SAMPLE, Span.UPDATE)
EXPECTED = {Span.SCHEDULE: (Span.STEP, 1, None, None),
            Span.FORWARD: (Span.WORKER_EXECUTE, 1, None, None),
            Span.WORKER_SAMPLE: (Span.STEP, 1, None, None),
            Span.UPDATE: (Span.STEP, 1, {Attr.STEP_BATCH_ID: 1}, None)}


def test_the_four_phases_without_marks(hooks):
    rec = hooks(Recorder(64, None))
    so = step()
    raw = list(rec.buf)
    assert {r[0] for r in raw} == {Span.FORWARD, Span.WORKER_EXECUTE, Span.WORKER_SAMPLE, Span.STEP}   # kept
    got = spans(rec)
    assert shape(got) == EXPECTED
    assert all(got[n].role == (ENGINE if n in (Span.SCHEDULE, Span.UPDATE) else WORKER) for n in PHASES)
    assert all(0 < got[n].start_ns <= got[n].end_ns and got[n].nested is True for n in PHASES)
    stamp = Stamp._make(getattr(so, STAMP))
    sched = got[Span.SCHEDULE]
    assert (stamp.schedule_start, stamp.schedule_end) == (sched.start_ns, sched.end_ns)
    # the forward inside the worker's execution, the sample after it, the update after the sample
    ex, fw, sa, up = got[Span.WORKER_EXECUTE], got[Span.FORWARD], got[Span.WORKER_SAMPLE], got[Span.UPDATE]
    assert sched.end_ns <= ex.start_ns <= fw.start_ns <= fw.end_ns <= ex.end_ns <= sa.start_ns <= sa.end_ns
    assert sa.end_ns <= up.start_ns <= up.end_ns <= got[Span.STEP].end_ns
    # the next step's stamp carries this update's bounds; its record has its own phases only
    so2 = step()
    stamp2 = Stamp._make(getattr(so2, STAMP))
    assert (stamp2.update_start, stamp2.update_end) == (up.start_ns, up.end_ns)
    got2 = spans(rec)
    assert got2[Span.SCHEDULE].start_ns > up.end_ns and got2[Span.UPDATE].step == 2


def test_with_marks_the_same_spans_through_phase_end_and_marks_balanced(hooks):
    nv = FakeNvtx()
    rec = hooks(Recorder(64, nv))
    so = step()
    assert {r[0] for r in rec.buf if type(r) is tuple} == set(PHASES)       # each an Interval of its own
    got = spans(rec)
    assert shape(got) == EXPECTED
    stamp = Stamp._make(getattr(so, STAMP))
    assert (stamp.schedule_start, stamp.schedule_end) == (got[Span.SCHEDULE].start_ns, got[Span.SCHEDULE].end_ns)
    pushed = [c[1] for c in nv.calls if c[0] == "push"]
    assert sorted(pushed) == sorted([Span.STEP, Span.WORKER_EXECUTE, *PHASES])
    assert len(pushed) == nv.calls.count(("pop",))


def test_a_failed_phase_names_its_error_without_marks_too(hooks):
    rec = hooks(Recorder(64, None))
    step(forward_error=RuntimeError("boom"))
    assert shape(spans(rec))[Span.FORWARD] == (Span.WORKER_EXECUTE, 1, None, "RuntimeError")


def test_the_worker_span_gets_its_token_count_on_the_export_side(hooks):
    """The hook carries the step's scheduled tokens in the execution record (no attribute dict on vLLM's thread);
    assembly makes it the span's vllm.worker.num_tokens."""
    rec = hooks(Recorder(64, None))
    step()                                             # one request decoding: 1 token
    assert next(r for r in rec.buf if r[0] == Span.WORKER_EXECUTE)[8] is None      # RangeRecord.attrs
    assert spans(rec)[Span.WORKER_EXECUTE].attrs[Attr.WORKER_TOKENS] == 1


def test_a_full_buffer_keeps_the_first_records_and_counts_the_rest(hooks):
    """Capacity 3, four records per step (forward, execute, sample, step): the first three are kept, in order;
    the step is dropped at its end, and every later record too, the sample appended unchecked included. Nothing
    is lost uncounted."""
    rec = hooks(Recorder(3, None))
    step()
    assert [r[0] for r in rec.buf] == [Span.FORWARD, Span.WORKER_EXECUTE, Span.WORKER_SAMPLE]
    assert rec.dropped == 1
    step()
    step()
    assert len(rec.buf) == 3 and rec.dropped == 1 + 4 + 4
    assert [r[0] for r in rec.take()] == [Span.FORWARD, Span.WORKER_EXECUTE, Span.WORKER_SAMPLE]
    step()                                           # taken: room again
    assert [r[0] for r in rec.buf] == [Span.FORWARD, Span.WORKER_EXECUTE, Span.WORKER_SAMPLE]


class TrimmedWhileTaken(collections.deque):
    """A buffer that vLLM's thread trims (``Recorder._full``: from the right, down to the capacity) while the
    export thread takes it: the trim runs after each pop from the left."""
    capacity = 0

    def popleft(self):
        item = super().popleft()
        while len(self) > self.capacity:
            super().pop()
        return item


class TakenWhileTrimmed(collections.deque):
    """A buffer emptied between ``_full``'s length read and its pop (cannot happen with ``take``; defensive)."""
    def pop(self):
        self.clear()
        return super().pop()


def test_take_and_trim_racing_neither_raises():
    """The hot path may pop from the right while the export thread pops from the left: take pops at most the
    capacity (always there) and leaves the rest for the next take; a trim that finds the buffer empty stops.
    Nothing raises on either thread (a raise in a hook's post would switch the hook off)."""
    rec = Recorder(2, None)
    rec.buf = TrimmedWhileTaken(["a", "b", "c", "d"])      # two phases appended unchecked beyond the capacity
    rec.buf.capacity = 2
    assert rec.take() == ["a", "b"] and list(rec.buf) == ["c"] and rec.recorded == 2
    rec.buf = TakenWhileTrimmed(["a", "b", "c", "d"])
    rec.end(["x", "engine", 1, 2, 0, 0, 0, 1, None, None, None, False, None])
    assert rec.dropped == 1 and len(rec.buf) == 0


class _Timer:
    """Stands for the worker's GpuTimer: what ``stop`` was handed."""

    def __init__(self):
        self.stops = []

    def stop(self, step, launch, event=None):
        self.stops.append((step, launch))


@pytest.mark.parametrize("runner", ["v2", "v1"])
def test_the_device_time_starts_at_the_forward_launch(hooks, runner, monkeypatch):
    """On CUDA the step's device time starts where the forward is launched (the V2 runner's
    ``EPLBController.prepare_forward``, the V1 runner's forward hook), not at ``execute_model``'s start: the input
    preparation between them is the GPU idle (benchmarks/results/h200/device_busy). Unrecorded steps are left
    alone."""
    hooks(Recorder(100, None))
    ticks = iter(range(1000, 10**9, 1000))              # the worker's own clock reads: each one later
    monkeypatch.setattr(worker, "_now", lambda: next(ticks))
    timer = worker.S.timer = _Timer()
    monkeypatch.setattr(worker.S, "device_stop", lambda step, launch, result: timer.stop(step, launch))  # no carrier
    so = decode_output()
    setattr(so, STAMP, Stamp(1, 2, 7, 0, 0, 0, 0, 0, 0, 1))
    ex = worker._execute_pre(None, (so,), {})
    start = worker.S.gpu_step[1]
    if runner == "v2":                                  # noted for the execution's post, as the bounds front does
        assert worker._forward_launch_pre(None, (), {}) is None
        launched = worker.LAUNCHES[-1][0]
    else:
        through_runner("worker.forward_v1", None, (), None)
        launched = worker.FORWARDS[-1][0]
    worker._execute_post(ex, None, None)                # reads it
    assert worker.S.gpu_step == (7, launched) and not worker.LAUNCHES and not worker.FORWARDS
    worker._sample_post(worker._sample_pre(None, (None,), {}), "sampled", None)
    assert launched > start and timer.stops == [(7, launched)] and worker.S.gpu_step is None
    worker._forward_launch_pre(None, (), {})            # outside a recorded step (dummy runs, warm-up)
    assert worker.S.gpu_step is None and not worker.LAUNCHES


def test_the_ranges_the_hooks_write_out_are_the_recorders(hooks):
    """Without marks ``engine.step`` and ``worker.execute_model`` build their range's list themselves (a Python call
    less each): field for field what ``Recorder.begin`` and ``Recorder.end`` make of the same range, ids and clock
    readings apart (a root's new trace, the step's trace for the worker, a span id of its own)."""
    from vllm_w2ext.telemetry.recording import ROOT
    from vllm_w2ext.telemetry.wire import END, ON_THREAD, SPAN_ID, START, TRACE_ID
    rec = hooks(Recorder(64, None))
    step()
    got = {r[0]: r for r in rec.buf if type(r) is list}
    st, ex = got[Span.STEP], got[Span.WORKER_EXECUTE]
    ref_step = rec.begin(Span.STEP, ENGINE, ROOT, None, 1, ON_THREAD)
    ref_step[-1] = st[-1]                                # the step's record, the hook's own
    rec.end(ref_step)
    ref_ex = rec.begin(Span.WORKER_EXECUTE, WORKER, (st[TRACE_ID], st[SPAN_ID]), None, 1, ON_THREAD)
    ref_ex[-1] = ex[-1]                                  # the execution record, the hook's own
    rec.end(ref_ex)
    ids = (TRACE_ID, SPAN_ID, START, END)
    for mine, ref in ((st, ref_step), (ex, ref_ex)):
        assert len(mine) == len(ref)
        assert [v for i, v in enumerate(mine) if i not in ids] == [v for i, v in enumerate(ref) if i not in ids]
        assert all(type(mine[i]) is int and mine[i] > 0 for i in ids) and mine[START] <= mine[END]
    assert ex[TRACE_ID] == st[TRACE_ID] and ex[SPAN_ID] != st[SPAN_ID] and st[TRACE_ID].bit_length() > 64


def test_the_first_step_makes_the_recorder_and_gets_its_marks(hooks, monkeypatch):
    """A process's first recorded step finds no recorder yet: making it attaches NVTX (and sets the marks), so that
    step's ranges go through the recorder and are pushed like every later one's, not written out unmarked (caught
    end to end by tests/test_callgraph_offline.py's NVTX check: one engine.step without its range)."""
    hooks(None)
    made = []

    def make():
        rec = Recorder(64, FakeNvtx())                 # as pipeline.recorder() makes it: NVTX sets the marks
        for mod in (engine_core, worker):
            mod.RECORDER[0] = rec
        made.append(rec)
        return rec
    for mod in (engine_core, worker):
        monkeypatch.setattr(mod, "RECORDER", [None])
        monkeypatch.setattr(mod, "recorder", make)
    assert recording.PHASE_MARKS[0] is False
    step()
    step()
    assert len(made) == 1
    pushed = [c[1] for c in made[0].nvtx.calls if c[0] == "push"]
    assert sorted(pushed) == sorted([Span.STEP, Span.WORKER_EXECUTE, *PHASES] * 2)
    assert len(pushed) == made[0].nvtx.calls.count(("pop",))


@pytest.mark.parametrize("case", ["steady", "finished", "all_links", "prefilling", "preempted_before", "new",
                                  "preempted_now", "two_tokens"])
def test_the_steady_decode_facts_kept_at_scheduling_are_read_steps(hooks, case):
    """``engine.schedule``'s post answers the steady decode step itself (read_step's first case, written out): the
    facts it keeps are, field for field, ``read_step``'s of the same batch and state, on that path and off it."""
    from vllm_w2ext.steps.facts import read_step
    hooks(Recorder(64, None))
    sched = NS(requests={"a": NS(num_prompt_tokens=4), "b": NS(num_prompt_tokens=9, trace_headers=None,
                                                              arrival_time=1.5)},
               running=["a"], waiting=["w"])
    so = decode_output()
    st = engine_core.S
    if case == "finished":
        so.finished_req_ids = {"x", "y"}
    elif case == "all_links":
        st.all_links = True
    elif case == "prefilling":
        st.prefilling = {"a"}
    elif case == "preempted_before":
        st.preempted = {"z"}
    elif case == "new":
        so.scheduled_new_reqs = [NS(req_id="b", num_computed_tokens=0)]
        so.num_scheduled_tokens = {"a": 1, "b": 9}
        so.total_num_scheduled_tokens = 10
    elif case == "preempted_now":
        so.preempted_req_ids = {"q"}
    elif case == "two_tokens":
        so.num_scheduled_tokens, so.total_num_scheduled_tokens = {"a": 2}, 2
    want = read_step(so, sched.requests, len(sched.running), len(sched.waiting), st.all_links, set(st.prefilling),
                     set(st.preempted))
    state = engine_core._step_pre(NS(scheduler=sched), (), {})
    engine_core._schedule_post(engine_core._schedule_pre(sched, (), {}), so, None)
    assert st.facts == want
    engine_core._step_post(state, ({}, True), None)
