"""``recording.PHASE_MARKS``: while no NVTX domain is attached and vLLM's profiler is not recording, a hook takes
a phase's start with the clock alone; once either is on, phases go through ``Recorder.phase_begin`` and their
marks are pushed and popped around the call. Known answers on the EngineCore's schedule phase, driven as vLLM
calls it: what pre returns, which NVTX calls were made, and that the recorded interval is the same either way.
The step's own range is pushed on the thread's stack only while marks are on (``wire.ON_THREAD`` otherwise), and
is drawn on the thread's track either way."""
from types import SimpleNamespace as NS

import pytest
from nvtx_calls import FakeNvtx

from vllm_w2ext.hooks import engine_core
from vllm_w2ext.telemetry import recording
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.telemetry.trace_file import TraceFileSink
from vllm_w2ext.telemetry.wire import END, NESTED, ON_THREAD, PARENT_ID, START, Interval
from vllm_w2ext.vocab import ENGINE, Span


@pytest.fixture
def marks(monkeypatch):
    """PHASE_MARKS, the NVTX flag and the profiler annotation are restored after the test (they are process-wide)."""
    saved = recording.PHASE_MARKS[0], recording._nvtx_on[0], recording.PROFILER_ANNOTATION[0]
    recording.PHASE_MARKS[0] = recording._nvtx_on[0] = False
    st = engine_core._State()
    st.identity_done, st.step = True, 5
    monkeypatch.setattr(engine_core, "S", st)
    yield st
    recording.PHASE_MARKS[0], recording._nvtx_on[0], recording.PROFILER_ANNOTATION[0] = saved


def schedule(rec, monkeypatch) -> tuple:
    monkeypatch.setattr(engine_core, "RECORDER", [rec])
    monkeypatch.setattr(engine_core, "recorder", lambda: rec)
    sched = NS(requests={}, running=[], waiting=[])
    state = engine_core._schedule_pre(sched, (), {})
    engine_core._schedule_post(state, None, None)
    ivs = [Interval._make(r) for r in rec.take() if r[0] == Span.SCHEDULE]
    return state, ivs


def test_without_marks_the_phase_starts_with_the_clock_alone(marks, monkeypatch):
    state, ivs = schedule(Recorder(64, None), monkeypatch)
    assert type(state) is int and not recording.PHASE_MARKS[0]
    assert len(ivs) == 1 and ivs[0].start_ns == state and ivs[0].end_ns >= state


def test_an_nvtx_recorder_turns_marks_on_and_the_phase_is_pushed_and_popped(marks, monkeypatch):
    nv = FakeNvtx()
    state, ivs = schedule(Recorder(64, nv), monkeypatch)
    assert recording.PHASE_MARKS[0] and type(state) is tuple
    assert nv.calls == [("push", Span.SCHEDULE), ("pop",)]
    assert len(ivs) == 1 and ivs[0].start_ns == state[0]
    recording.annotate_profiler(False)          # the profiler stopping leaves NVTX's marks on
    assert recording.PHASE_MARKS[0]


def test_the_profiler_turns_marks_on_and_off(marks, monkeypatch):
    opened = []

    class Annotation:
        def __init__(self, label):
            opened.append(label)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            opened.append("exit")

    recording.PROFILER_ANNOTATION[0] = Annotation
    recording.PHASE_MARKS[0] = True            # what annotate_profiler(True) sets (it imports torch for the real one)
    state, _ = schedule(Recorder(64, None), monkeypatch)
    assert type(state) is tuple and opened[-1] == "exit" and len(opened) == 2
    recording.annotate_profiler(False)
    assert not recording.PHASE_MARKS[0] and recording.PROFILER_ANNOTATION[0] is None
    state, _ = schedule(Recorder(64, None), monkeypatch)
    assert type(state) is int


def run_step(rec, monkeypatch) -> tuple:
    """One EngineCore step through its hooks: the thread's stack while it runs, and its recorded range."""
    monkeypatch.setattr(engine_core, "RECORDER", [rec])
    r = engine_core._step_pre(NS(engine_index=0, scheduler=NS(running=[], waiting=[])), (), {})
    during = list(rec._local.s)
    engine_core._step_post(r, None, None)
    return during, [x for x in rec.take() if x[0] == Span.STEP]


def test_without_marks_the_step_stays_off_the_stack_on_its_threads_track(marks, monkeypatch, tmp_path):
    during, (r,) = run_step(Recorder(64, None), monkeypatch)
    assert during == [] and r[NESTED] is ON_THREAD and r[END] >= r[START] > 0 and r[PARENT_ID] == 0
    sink = TraceFileSink(str(tmp_path), 1 << 20, pid=1)
    thread_range = Range("engine.phase", ENGINE, 1, 2, 0, 1, 2, nested=True)
    assert sink._track_for(Range.from_record(r), bytearray()) == sink._track_for(thread_range, bytearray())


def test_with_nvtx_the_step_is_pushed_and_popped(marks, monkeypatch):
    nv = FakeNvtx()
    during, (r,) = run_step(Recorder(64, nv), monkeypatch)
    assert [x[0] for x in during] == [Span.STEP] and r[NESTED] is True
    assert nv.calls == [("push", Span.STEP), ("pop",)]
