"""MultiprocExecutor's dispatch ranges (``engine.execute_model`` / ``engine.sample_tokens``): the range the hook's pre
opens is ``Recorder.begin``'s free-standing child of the recorded step (written out where there is no NVTX, through
``begin`` where there is), and its post ends it when the output future is done, naming the future's exception, a
cancellation, or the call's own error; a future already done ends it at once."""
from concurrent.futures import Future
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks import engine_core
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.telemetry.wire import END, ERROR, NESTED, PARENT_ID, SPAN_ID, START, STEP, TRACE_ID
from vllm_w2ext.vocab import ENGINE, Span


class _Nvtx:
    def __init__(self) -> None:
        self.started, self.ended = [], []

    def start(self, name, role, step):
        self.started.append((name, role, step))
        return len(self.started)

    def end(self, handle) -> None:
        self.ended.append(handle)


@pytest.fixture
def engine(monkeypatch):
    st = engine_core._State()
    st.step = 7
    st.current = [Span.STEP, ENGINE, 0xABC, 0x12, 0, 100, 0, 7, None, None, None, 1, None]
    rec = Recorder(64, None)
    monkeypatch.setattr(engine_core, "S", st)
    monkeypatch.setattr(engine_core, "RECORDER", [rec])
    return st, rec


def expected_begin(rec: Recorder, st) -> list:
    """What Recorder.begin makes for the same range (the definition the written-out list follows)."""
    return rec.begin(Span.EXECUTE, ENGINE, (st.current[TRACE_ID], st.current[SPAN_ID]), None, st.step, False)


@pytest.mark.parametrize("nvtx", [False, True])
def test_pre_opens_begins_range(engine, nvtx):
    st, rec = engine
    if nvtx:
        rec.nvtx = _Nvtx()
    so = NS()
    r = engine_core._executor_pre(Span.EXECUTE, True)(NS(), (so,), {})
    want = expected_begin(Recorder(64, None), st)
    for field in (SPAN_ID, START):                   # a new span id and the clock's reading
        assert r[field] > 0
        r[field] = want[field] = None
    assert r == want
    assert r[TRACE_ID] == 0xABC and r[PARENT_ID] == 0x12 and r[STEP] == 7 and r[NESTED] is False
    assert so._w2ext_dispatch > 0                    # the dispatch time the workers read
    if nvtx:
        assert rec.nvtx.started == [(Span.EXECUTE, ENGINE, 7)]


def test_pre_outside_a_recorded_step_records_nothing(engine):
    st, _ = engine
    st.current = None
    assert engine_core._executor_pre(Span.SAMPLE, False)(NS(), (), {}) is None


@pytest.mark.parametrize("outcome", ["result", "exception", "cancelled", "done before", "call raised", "no future"])
def test_post_ends_the_range_when_the_output_comes(engine, outcome):
    st, rec = engine
    r = engine_core._executor_pre(Span.SAMPLE, False)(NS(), (), {})
    fut = Future()
    if outcome == "done before":
        fut.set_result("out")
    if outcome == "call raised":
        engine_core._executor_post(r, None, ValueError("boom"))
    elif outcome == "no future":
        engine_core._executor_post(r, "out", None)
    else:
        engine_core._executor_post(r, fut, None)
    if outcome in ("result", "exception", "cancelled"):
        assert rec.take() == [] and r[END] == 0      # open until the future is done
        {"result": lambda: fut.set_result("out"), "exception": lambda: fut.set_exception(KeyError("k")),
         "cancelled": fut.cancel}[outcome]()
    records = rec.take()
    assert records == [r] and r[END] >= r[START] > 0
    assert r[ERROR] == {"exception": "KeyError", "cancelled": "CancelledError", "call raised": "ValueError"}.get(outcome)


def test_post_with_nvtx_ends_its_range(engine):
    st, rec = engine
    rec.nvtx = _Nvtx()
    r = engine_core._executor_pre(Span.EXECUTE, True)(NS(), (NS(),), {})
    fut = Future()
    engine_core._executor_post(r, fut, None)
    fut.set_result("out")
    assert rec.take() == [r] and rec.nvtx.ended == [1]
