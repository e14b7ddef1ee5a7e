"""``_cfront.front_step_pre`` / ``front_step_post`` / ``process_outputs_pre`` / ``process_outputs_post``, the front
end's iteration hooks' common ways in C where the extension was built: the same calls leave the same records and
state as the Python definitions in ``hooks/front.py`` (timestamps aside: taken from the same wall clock, in order),
fully traced or sampled, under LLM.generate or not, with marks, a failed step, a full buffer, a second or a failed
process_outputs, outputs passed by keyword or none open; and on their common ways they run no Python at all."""
import itertools
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks import front
from vllm_w2ext.telemetry import recording
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.telemetry.wire import DATA, END, START

if front.front_step_pre is front._front_step_pre:
    pytest.skip("the C extension is not built here", allow_module_level=True)

C = {"step_pre": front.front_step_pre, "step_post": front.front_step_post,
     "out_pre": front.process_outputs_pre, "out_post": front.process_outputs_post}
PY = {"step_pre": front._front_step_pre, "step_post": front._front_step_post,
      "out_pre": front._process_outputs_pre, "out_post": front._process_outputs_post}
T_LO, T_HI = 1 << 59, 1 << 62


def fresh(monkeypatch, sample: int = 1, marks: bool = False, capacity: int = 1 << 12) -> Recorder:
    r = Recorder(capacity, None)
    ids = itertools.count(1000)
    monkeypatch.setattr(front, "recorder", lambda: r)
    monkeypatch.setattr(front, "RECORDER", [r])
    monkeypatch.setattr(front, "PHASE_MARKS", [marks])
    monkeypatch.setattr(front, "span_bits", lambda bits: next(ids) % (1 << bits))
    monkeypatch.setattr(recording, "_getrandbits", lambda bits: next(ids) % (1 << bits))    # Recorder.begin's
    for name, v in (("_identity_done", [True]), ("_front_steps", [0]), ("_open_step", [None]), ("_generate", []),
                    ("_outputs_calls", [0]), ("_outputs_skipped", [0]), ("_open", {})):
        monkeypatch.setattr(front, name, v)
    monkeypatch.setattr(front, "_sample", [1])
    monkeypatch.setattr(front, "_light", [(False,)])
    front.use_sample(sample)
    front.bind_c()                                 # the C calls hold the module's state: this one now
    return r


@pytest.fixture(autouse=True)
def module_state_back(monkeypatch):
    yield
    monkeypatch.undo()
    front.bind_c()


def times_out(x):
    """The value with each wall-clock timestamp as "t" (both ways read the same clock, not at the same instants)."""
    if isinstance(x, int) and not isinstance(x, bool) and T_LO <= x < T_HI:
        return "t"
    if isinstance(x, (list, tuple)):
        return type(x)(times_out(v) for v in x)
    if isinstance(x, dict):
        return {k: times_out(v) for k, v in x.items()}
    return x


def script(hooks, rec, iterations=6, generate=True, step_error_at=(), outputs_error_at=(), twice_at=(),
           by_keyword_at=()):
    gen = front._generate_pre(None, (), {}) if generate else None
    for k in range(1, iterations + 1):
        s = hooks["step_pre"](None, (), {})
        calls = 2 if k in twice_at else 1
        for _ in range(calls):
            outs = list(range(k))
            p = hooks["out_pre"](None, (), {"engine_core_outputs": outs}) if k in by_keyword_at else \
                hooks["out_pre"](None, (outs,), {"engine_core_timestamp": 1.0})
            hooks["out_post"](p, None, KeyError("o") if k in outputs_error_at else None)
        if s is not None:
            hooks["step_post"](s, None, RuntimeError("s") if k in step_error_at else None)
    if gen is not None:
        front._generate_post(gen, [], None)
    out = rec.take()
    for r in out:                                  # each range in order: its start, its end
        if isinstance(r, list) and r[END]:
            assert r[START] <= r[END]
    return (times_out(out), front._front_steps[0], front._open_step[0], front._outputs_skipped[0],
            front._outputs_calls[0], rec.dropped)


SCRIPTS = {
    "fully traced, under generate": ({}, {}),
    "fully traced, a root": ({}, {"generate": False}),
    "sampled 1 in 4": ({"sample": 4}, {"iterations": 13}),
    "sampled, served (no step)": ({"sample": 4}, {"iterations": 9, "generate": False}),
    "marks": ({"marks": True}, {}),
    "a failed step": ({}, {"step_error_at": (2, 5)}),
    "a failed process_outputs": ({}, {"outputs_error_at": (3,)}),
    "two process_outputs in a step": ({}, {"twice_at": (2, 4)}),
    "outputs by keyword": ({}, {"by_keyword_at": (1, 3)}),
    "a full buffer": ({"capacity": 3}, {}),
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_the_same_records_and_state_as_the_definitions(monkeypatch, name):
    setup, kw = SCRIPTS[name]
    got = {}
    for way, hooks in (("python", PY), ("c", C)):
        rec = fresh(monkeypatch, **setup)
        if kw.get("generate", True) is False and name.startswith("sampled, served"):
            hooks = dict(hooks, step_pre=lambda *a: None)         # served: no LLMEngine.step around the outputs
        got[way] = script(hooks, rec, **kw)
    assert got["c"] == got["python"]
    assert got["c"][0] or name == "a full buffer"


def test_the_common_ways_run_no_python(monkeypatch):
    """A recorded iteration under LLM.generate, fully traced: the Python definitions' clock is never read (it raises
    here), the range and its outputs phase are all there."""
    rec = fresh(monkeypatch)
    gen = front._generate_pre(None, (), {})

    def no(*a):
        raise AssertionError("a Python definition ran")
    monkeypatch.setattr(front, "_now", no)
    for _ in range(3):
        s = C["step_pre"](None, (), {})
        p = C["out_pre"](None, ([1, 2],), {})
        C["out_post"](p, None, None)
        C["step_post"](s, None, None)
    (a, b, c) = rec.take()
    assert a[0] == "front.step" and a[2] == gen[2] and a[4] == gen[3] and a[START] <= a[DATA][0] <= a[DATA][1] <= a[END]
    assert a[DATA][2] == 2 and b[3] != a[3] and front._front_steps[0] == 3 and front._open_step[0] is None


# -- a request's start (OutputProcessor.add_request's pre) -----------------------------------------------------------
class _Request:
    """EngineCoreRequest's fields the hook reads; ``trace_headers`` is set on it."""

    def __init__(self, rid: str, headers=None, max_tokens=16, prompt=70, params=True):
        self.request_id, self.trace_headers = rid, headers
        if params:
            self.sampling_params = type("P", (), {"max_tokens": max_tokens})()
        if prompt is not None:
            self.prompt_token_ids = list(range(prompt))


class _Nvtx:
    def push(self, name, role, step):
        pass

    def pop(self):
        pass

    def start(self, name, role, step):
        return ("nvtx", name)

    def end(self, handle):
        pass


TRACEPARENT = "00-0000000000000000000000000000abcd-00000000000000ef-01"
REQUEST_CASES = {     # name: (what the requests are, how they are added) -- the first four on the C way
    "offline, under generate, through add_request": {},
    "a root (no generate), no add_request around it": {"generate": False, "add": False},
    "no sampling params, max_tokens None, no prompt ids": {"requests": lambda: [
        _Request("a", params=False, prompt=None), _Request("b", max_tokens=None)]},
    "a known request again (a streaming continuation)": {"requests": lambda: [_Request("a"), _Request("a")]},
    # the definition's: a parent to look for, or an NVTX range
    "its own traceparent": {"requests": lambda: [
        _Request("a", headers={"traceparent": TRACEPARENT, "tracestate": "k=v"})]},
    "headers given to add_request": {"given": {"traceparent": TRACEPARENT}},
    "an HTTP request's headers": {"incoming": {"traceparent": TRACEPARENT}},
    "an active OpenTelemetry span": {"ambient": True},
    "NVTX": {"nvtx": True},
    "finished before add_request returned (served)": {"finish_inside": True},
    "finish: no detokenizer": {"detokenizer": lambda: None},
    "finish: a detokenizer with no count": {"detokenizer": lambda: NS(output_token_ids=[1, 2, 3])},
    "finish: prompts captured": {"capture": True},
    "finish: a full buffer": {"capacity": 0},
}
PY_WAYS = (front._output_add_request_pre, front._add_request_pre, front._add_request_post, front._finish_request_pre)
C_WAYS = (front.request_start_pre, front.add_request_pre, front.add_request_post, front.request_finish_pre)


class _Detokenizer:
    def __init__(self, n):
        self.n = n

    def num_output_tokens(self):
        return self.n


def start_requests(ways, case: dict, monkeypatch) -> tuple:
    """The case's requests added and started under an LLM.generate call (unless not), then finished."""
    start, add_pre, add_post, finish = ways
    rec = fresh(monkeypatch, capacity=case.get("capacity", 1 << 12))
    if case.get("capture"):
        monkeypatch.setattr(front, "_capture", [True])
        front.bind_c()

    def finished(q):
        detok = case["detokenizer"]() if "detokenizer" in case else _Detokenizer(5)
        finish(None, (NS(request_id=q.request_id, detokenizer=detok, prompt="the prompt"),), {})
    if case.get("nvtx"):
        rec.nvtx = _Nvtx()
    requests = case["requests"]() if "requests" in case else [_Request("a"), _Request("b", prompt=3)]
    gen = front._generate_pre(None, (), {}) if case.get("generate", True) else None
    tokens = [front._incoming.set(case["incoming"])] if case.get("incoming") else []
    ambient = None
    if case.get("ambient"):
        from opentelemetry import trace as otel_trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
        ambient = otel_trace.use_span(NonRecordingSpan(SpanContext(0x1234, 0x56, False, TraceFlags(1))))
        ambient.__enter__()
    pendings = []
    try:
        for q in requests:
            if case.get("add", True):
                state = add_pre(None, (q,), {"trace_headers": case.get("given")})
                start(None, (q,), {})
                if case.get("finish_inside"):
                    finished(q)
                pendings.append(list(state[1]))
                add_post(state, None, None)
            else:
                start(None, (q,), {})
        for q in requests:
            finished(q)
    finally:
        if ambient is not None:
            ambient.__exit__(None, None, None)
        for t in tokens:
            front._incoming.reset(t)
    if gen is not None:
        front._generate_post(gen, [], None)
    return (times_out(rec.take()), times_out(dict(front._open)), [q.trace_headers for q in requests],
            times_out(pendings), front._pending.get())


@pytest.mark.parametrize("name", list(REQUEST_CASES))
def test_a_request_start_leaves_what_the_definition_leaves(monkeypatch, name):
    got_py = start_requests(PY_WAYS, REQUEST_CASES[name], monkeypatch)
    got_c = start_requests(C_WAYS, REQUEST_CASES[name], monkeypatch)
    assert got_c == got_py
    assert not got_c[1] and got_c[2][0]["traceparent"].startswith("00-")      # all finished (a continuation's
    if "capacity" not in REQUEST_CASES[name]:                                    # headers: as they were)
        assert [x[8].get("gen_ai.usage.completion_tokens") for x in got_c[0] if x[0] == "vllm.request"] in (
            [5, 5], [5], [3, 3], [None, None])                                # (no detokenizer: no count)


@pytest.mark.parametrize("name", list(REQUEST_CASES))
def test_only_the_uncommon_requests_go_to_the_definition(monkeypatch, name):
    """The first four cases run no Python (the definitions raise here); the others are handed to them whole."""
    from vllm_w2ext.hooks import _cfront
    from vllm_w2ext.telemetry import propagation
    from vllm_w2ext.vocab import FRONT, Attr, Span

    class Handed(Exception):
        pass

    def definition(*a):
        raise Handed
    common = list(REQUEST_CASES).index(name) < 4

    def setup(start, add_pre, add_post, finish):
        _cfront.request_setup(start, Span.REQUEST, FRONT, front._pending, front._incoming,
                              propagation.ambient_var(), Attr.REQUEST_ID, Attr.MAX_TOKENS, Attr.PROMPT_TOKENS,
                              add_pre, add_post, finish, Attr.COMPLETION_TOKENS)
    setup(definition, definition, definition, definition)
    try:
        if common:
            start_requests(C_WAYS, REQUEST_CASES[name], monkeypatch)
        else:
            with pytest.raises(Handed):
                start_requests(C_WAYS, REQUEST_CASES[name], monkeypatch)
    finally:
        setup(*PY_WAYS)


def test_the_request_hooks_are_the_c_ones():
    hooks = {h.name: h for h in front.HOOKS}
    assert hooks["front.request_start"].pre is front.request_start_pre is front.output_add_request_pre
    assert hooks["front.request_finish"].pre is front.request_finish_pre is front.finish_request_pre
    for name in ("front.llm_engine_add_request", "front.async_add_request"):
        assert (hooks[name].pre, hooks[name].post) == (front.add_request_pre, front.add_request_post)
        assert front.add_request_pre is not front._add_request_pre


def test_the_c_traceparent_is_propagations():
    """The request hook writes its traceparent in C: the same string as ``propagation.traceparent`` (one wire format),
    ids at their widths' edges included; an id out of its width is an error, not a wrong header."""
    from vllm_w2ext.hooks import _cfront
    from vllm_w2ext.telemetry import propagation
    for t, s in ((1, 1), ((1 << 128) - 1, (1 << 64) - 1), (0xABCD << 64 | 0xEF, 0x1234), (1 << 64, 1 << 63),
                 (0x0123456789ABCDEF0123456789ABCDEF, 0xFEDCBA9876543210)):
        assert _cfront.traceparent(t, s) == propagation.traceparent(t, s)
    for t, s in ((1 << 128, 1), (1, 1 << 64), (-1, 1)):
        with pytest.raises((OverflowError, ValueError)):
            _cfront.traceparent(t, s)


def test_the_c_ranges_are_left_out_of_the_collector(monkeypatch):
    """The front end's iteration range and a request's range, as the C ways make them, are untracked by Python's
    cyclic collector (no cycle goes through a record; buffered until the export thread takes them, they would be
    walked by every collection on vLLM's thread: ``benchmarks/results/cpu/export_wait``)."""
    import gc
    rec = fresh(monkeypatch)
    s = C["step_pre"](None, (), {})
    C["out_post"](C["out_pre"](None, ([1],), {}), None, None)
    C["step_post"](s, None, None)
    (step,) = rec.take()
    assert step[0] == "front.step" and not gc.is_tracked(step)
    front.request_start_pre(None, (_Request("a"),), {})
    (r,) = front._open.values()
    assert not gc.is_tracked(r)
