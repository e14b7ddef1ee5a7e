"""The front end's per-iteration hooks (offline: LLMEngine.step around OutputProcessor.process_outputs) and its
per-request records. Known answers: process_outputs is recorded on every iteration (explain reads it as front-end
work) as a child of the front.step recorded around it, or of the LLM.generate call when VLLM_W2EXT_SAMPLE left that
step unrecorded; front.step is recorded on 2 in every N iterations; a request is one record, its input processing
a child the export side makes."""
import pytest

from vllm_w2ext.hooks import front
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.telemetry.wire import ON_THREAD, Interval, RangeRecord
from vllm_w2ext.vocab import Attr, Span


@pytest.fixture
def rec(monkeypatch):
    r = Recorder(1 << 16, None)
    monkeypatch.setattr(front, "recorder", lambda: r)
    monkeypatch.setattr(front, "RECORDER", [r])     # the hooks read RECORDER[0] first
    monkeypatch.setattr(front, "_identity_done", [True])
    monkeypatch.setattr(front, "_front_steps", [0])
    monkeypatch.setattr(front, "_open_step", [None])
    monkeypatch.setattr(front, "_generate", [])
    return r


def iterations(n: int, outputs: int = 3) -> None:
    gen = front._generate_pre(None, (), {})
    for _ in range(n):
        s = front._front_step_pre(None, (), {})
        p = front._process_outputs_pre(None, (list(range(outputs)),), {})
        front._process_outputs_post(p, None, None)
        if s is not None:
            front._front_step_post(s, None, None)
    front._generate_post(gen, [], None)


def split(rec):
    out = rec.take()
    ivs = [Interval._make(r) for r in out if type(r) is tuple]
    ranges = {r[3]: RangeRecord._make(r) for r in out if type(r) is list}
    return ivs, ranges


@pytest.mark.parametrize("every", [1, 8])
def test_process_outputs_every_iteration_under_its_step_or_the_generate_call(rec, monkeypatch, every):
    monkeypatch.setattr(front, "_sample", [every])
    iterations(24)
    ivs, ranges = split(rec)
    steps = [r for r in ranges.values() if r.name == Span.FRONT_STEP]
    gen = next(r for r in ranges.values() if r.name == Span.GENERATE)
    assert len(ivs) == 24 and all(iv.name == Span.PROCESS_OUTPUTS and iv.attrs == {Attr.NUM_OUTPUTS: 3}
                                  for iv in ivs)
    assert len(steps) == (24 if every == 1 else 6)           # 8, 9, 16, 17, 24 and 1
    by_step = {r.span_id: r for r in steps}
    for k, iv in enumerate(ivs, start=1):
        parent = by_step.get(iv.parent_id)
        if parent is not None:                                 # inside its recorded front.step
            assert parent.start_ns <= iv.start_ns <= iv.end_ns <= parent.end_ns
            assert iv.trace_id == parent.trace_id
        else:                                                  # the step was sampled out
            assert every > 2 and k % every >= 2
            assert (iv.trace_id, iv.parent_id) == (gen.trace_id, gen.span_id)


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
