"""The front end's per-iteration hooks (offline: LLMEngine.step around OutputProcessor.process_outputs) and its
per-request records. Known answers: front.step is recorded on 2 in every N iterations; process_outputs is recorded
on every iteration fully traced, and under VLLM_W2EXT_SAMPLE=N on the recorded steps' (a child of that front.step),
on the calls in which a request finishes (a child of the LLM.generate call) and, served (no front.step), on 2 in N
calls by its own count; the calls only counted go on the next recorded one; a recorded front.step carries its
process_outputs (one record per iteration) unless that call has skipped calls to report; a request is one record, its
input processing a child the export side makes."""
import pytest

from vllm_w2ext.hooks import front
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.telemetry.wire import ON_THREAD
from vllm_w2ext.vocab import Attr, Span


@pytest.fixture(params=["python", "c"])
def rec(monkeypatch, request):
    """The hooks' state fresh, and the hooks as written in Python or, where the extension was built, their C common
    ways (``_cfront.front_step_pre`` ...: each hands what it does not take to the Python function it was set up with,
    so both answer every test)."""
    if request.param == "c":
        if front.front_step_pre is front._front_step_pre:
            pytest.skip("the C extension is not built here")
        for name in ("front_step_pre", "front_step_post", "process_outputs_pre", "process_outputs_post"):
            monkeypatch.setattr(front, "_" + name, getattr(front, name))
    r = Recorder(1 << 16, None)
    monkeypatch.setattr(front, "recorder", lambda: r)
    monkeypatch.setattr(front, "RECORDER", [r])     # the hooks read RECORDER[0] first
    monkeypatch.setattr(front, "_identity_done", [True])
    monkeypatch.setattr(front, "_front_steps", [0])
    monkeypatch.setattr(front, "_open_step", [None])
    monkeypatch.setattr(front, "_generate", [])
    monkeypatch.setattr(front, "_sample", [1])
    monkeypatch.setattr(front, "_light", [(False,)])
    monkeypatch.setattr(front, "_outputs_skipped", [0])
    monkeypatch.setattr(front, "_outputs_calls", [0])
    front.bind_c()                                  # the C calls hold the module's lists: these ones now
    yield r
    monkeypatch.undo()
    front.bind_c()


def iterations(n: int, outputs: int = 3, finish_at: dict | None = None, offline: bool = True) -> None:
    """n iterations; ``finish_at``: iteration -> the request id that finishes in its process_outputs."""
    gen = front._generate_pre(None, (), {}) if offline else None
    for k in range(1, n + 1):
        s = front._front_step_pre(None, (), {}) if offline else None
        p = front._process_outputs_pre(None, (list(range(outputs)),), {})
        if finish_at and k in finish_at:
            front._finish_request_pre(None, (_State(finish_at[k]),), {})
        front._process_outputs_post(p, None, None)
        if s is not None:
            front._front_step_post(s, None, None)
    if gen is not None:
        front._generate_post(gen, [], None)


def split(rec, raw: list | None = None):
    """What the export side makes of the records (``steps.assemble``): the process_outputs spans in call order, and
    every other range by span id. ``raw``: gets the records themselves."""
    from vllm_w2ext.steps.assemble import Assembler
    from vllm_w2ext.telemetry.ranges import Range
    out = rec.take()
    if raw is not None:
        raw += out
    spans = Assembler(lambda h: None, iter(range(1 << 40, 1 << 41)).__next__, lambda: 7)(
        [Range.from_record(r) for r in out])
    ivs = sorted((r for r in spans if r.name == Span.PROCESS_OUTPUTS), key=lambda r: r.start_ns)
    ranges = {r.span_id: r for r in spans if r.name != Span.PROCESS_OUTPUTS}
    return ivs, ranges


def test_process_outputs_every_iteration_fully_traced_under_its_step(rec, monkeypatch):
    """Fully traced, each iteration is one record: the front.step range carries its process_outputs
    (``wire.OutputsPhase``), and the export side makes the same child span of it."""
    front.use_sample(1)
    iterations(24)
    raw = []
    ivs, ranges = split(rec, raw)
    by_step = {r.span_id: r for r in ranges.values() if r.name == Span.FRONT_STEP}
    assert len(ivs) == 24 and len(by_step) == 24
    assert len(raw) == 25 and not [r for r in raw if type(r) is tuple]       # 24 steps + the generate call
    for iv in ivs:
        assert iv.name == Span.PROCESS_OUTPUTS and iv.attrs == {Attr.NUM_OUTPUTS: 3}
        parent = by_step[iv.parent_id]
        assert parent.start_ns <= iv.start_ns <= iv.end_ns <= parent.end_ns and iv.trace_id == parent.trace_id


def test_sampled_process_outputs_follow_the_recorded_steps_and_the_finishes(rec, monkeypatch):
    """N = 8 over 24 iterations: steps 1, 8, 9, 16, 17, 24 recorded; a request finishes in iteration 12 (a step
    only counted): recorded too, under the LLM.generate call, carrying the 2 calls counted before it (10, 11)."""
    front.use_sample(8)
    monkeypatch.setattr(front, "_open", {})
    front._output_add_request_pre(None, (_Request("r"),), {})
    iterations(24, finish_at={12: "r"})
    ivs, ranges = split(rec)
    steps = {r.span_id: r for r in ranges.values() if r.name == Span.FRONT_STEP}
    gen = next(r for r in ranges.values() if r.name == Span.GENERATE)
    assert len(steps) == 6 and len(ivs) == 7
    under_steps = [iv for iv in ivs if iv.parent_id in steps]
    (finish,) = [iv for iv in ivs if iv.parent_id not in steps]
    assert len(under_steps) == 6 and (finish.trace_id, finish.parent_id) == (gen.trace_id, gen.span_id)
    skipped = [iv.attrs.get(Attr.SKIPPED_CALLS, 0) for iv in ivs]
    assert skipped == [0, 6, 0, 2, 3, 0, 6]         # calls 2-7; 10-11; 13-15; 18-23 (ivs in call order)
    assert len(ivs) + sum(skipped) == 24


def test_served_process_outputs_sampled_by_their_own_count(rec, monkeypatch):
    front.use_sample(8)
    iterations(24, offline=False)
    ivs, ranges = split(rec)
    assert not ranges and len(ivs) == 6               # calls 1, 8, 9, 16, 17, 24
    assert all(iv.parent_id == 0 for iv in ivs)
    assert [iv.attrs.get(Attr.SKIPPED_CALLS, 0) for iv in ivs] == [0, 6, 0, 6, 0, 6]


def test_front_step_under_the_generate_call_off_the_stack_and_a_root_without_one(rec):
    iterations(2)
    _, ranges = split(rec)
    gen = next(r for r in ranges.values() if r.name == Span.GENERATE)
    steps = [r for r in ranges.values() if r.name == Span.FRONT_STEP]
    assert len(steps) == 2 and all((r.trace_id, r.parent_id, r.nested) == (gen.trace_id, gen.span_id, ON_THREAD)
                                   for r in steps)
    assert rec._local.s == []
    s = front._front_step_pre(None, (), {})            # LLMEngine.step driven without LLM.generate
    front._front_step_post(s, None, None)
    (alone,) = split(rec)[1].values()
    assert alone.parent_id == 0 and alone.trace_id not in (gen.trace_id, 0)


class _Params:
    max_tokens = 8


class _Request:
    def __init__(self, rid):
        self.request_id, self.sampling_params, self.prompt_token_ids, self.trace_headers = rid, _Params(), [1, 2], None


class _State:
    def __init__(self, rid):
        self.request_id, self.detokenizer, self.prompt = rid, None, None


def test_a_request_is_one_record_and_its_input_processing_a_child_made_on_the_export_side(rec, monkeypatch):
    """LLMEngine/AsyncLLM.add_request around OutputProcessor.add_request, then the request's finish: one record
    per request, carrying the end of its input processing; the export side makes the front.add_request child
    (start: the request's start). A request that finished before add_request returned (served) gets its
    front.add_request as a record of its own."""
    from vllm_w2ext.steps.assemble import Assembler
    from vllm_w2ext.telemetry.ranges import Range
    monkeypatch.setattr(front, "_open", {})
    for rid, finish_first in (("a", False), ("b", True)):
        state = front._add_request_pre(None, (), {})
        front._output_add_request_pre(None, (_Request(rid),), {})
        if finish_first:
            front._finish_request_pre(None, (_State(rid),), {})
        front._add_request_post(state, None, None)
        if not finish_first:
            front._finish_request_pre(None, (_State(rid),), {})
    records = rec.take()
    assert [r[0] for r in records] == [Span.REQUEST, Span.REQUEST, Span.ADD_REQUEST]
    ranges = Assembler(lambda h: None, iter(range(100, 200)).__next__, lambda: 7)(
        [Range.from_record(r) for r in records])
    reqs = {r.attrs[Attr.REQUEST_ID]: r for r in ranges if r.name == Span.REQUEST}
    adds = [r for r in ranges if r.name == Span.ADD_REQUEST]
    assert len(adds) == 2 and {a.parent_id for a in adds} == {reqs["a"].span_id, reqs["b"].span_id}
    for a in adds:
        req = reqs["a"] if a.parent_id == reqs["a"].span_id else reqs["b"]
        assert a.trace_id == req.trace_id and a.start_ns == req.start_ns <= a.end_ns and a.role == req.role
    assert all(r.data is None for r in ranges)


def test_a_process_outputs_that_raises_is_a_record_of_its_own_naming_the_error(rec):
    front.use_sample(1)
    s = front._front_step_pre(None, (), {})
    p = front._process_outputs_pre(None, ([1, 2],), {})
    front._process_outputs_post(p, None, KeyError("x"))
    front._front_step_post(s, None, KeyError("x"))
    raw = []
    (iv,), ranges = split(rec, raw)
    (step,) = ranges.values()
    assert len(raw) == 2 and iv.error == "KeyError" and iv.parent_id == step.span_id
    assert iv.attrs == {Attr.NUM_OUTPUTS: 2} and step.error == "KeyError"


@pytest.mark.parametrize("offline", [True, False])
def test_a_front_step_written_out_is_the_range_recorder_begin_makes(rec, offline):
    """Without marks, _front_step_pre writes Recorder.begin's list out: the same fields (ids and times aside), the
    same parent (the LLM.generate call, or a root of a new trace), and it ends as Recorder.end ends it."""
    from vllm_w2ext.telemetry import wire
    gen = front._generate_pre(None, (), {}) if offline else None
    s = front._front_step_pre(None, (), {})
    ref = rec.begin(Span.FRONT_STEP, "frontend", front.context(gen) if gen else front.ROOT, None, -1, ON_THREAD)
    fresh = (wire.SPAN_ID, wire.START) + (() if offline else (wire.TRACE_ID,))
    assert len(s) == len(ref) and [v for i, v in enumerate(s) if i not in fresh] == [
        v for i, v in enumerate(ref) if i not in fresh]
    assert s[wire.SPAN_ID] and s[wire.TRACE_ID] and s not in rec._local.s and ref not in rec._local.s
    front._front_step_post(s, None, None)
    rec.end(ref)
    got = rec.take()
    assert got[-2] is s and s[wire.END] >= s[wire.START] and s not in rec._local.s
