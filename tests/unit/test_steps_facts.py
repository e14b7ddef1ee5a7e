"""steps.facts.read_step: a step's counts from a SchedulerOutput-shaped object, for vLLM 0.26's and
0.32's field sets, with the answer worked out by hand."""
from types import SimpleNamespace as NS

from vllm_w2ext.steps.facts import NewRequest, StepFacts, step_facts
from vllm_w2ext.steps.facts import read_step as read_wire


def read_step(*args):
    """read_step's wire tuple, read back as the export side does."""
    return step_facts(read_wire(*args))


PROMPTS = {"n": 30, "n1": 4, "n2": 5, "c": 100, "a": 3, "b": 3, "r": 40}


def reqs(headers=None):
    return {rid: NS(num_prompt_tokens=p, arrival_time=1.5, trace_headers=(headers or {}).get(rid))
            for rid, p in PROMPTS.items()}


def output(new, cached, out_toks, nst, resumed_set=None, resumed_flags=None, spec=None, preempted=(),
           finished=(), computed=None):
    c = NS(req_ids=cached, num_output_tokens=out_toks, num_computed_tokens=computed or [0] * len(cached))
    if resumed_set is not None:
        c.resumed_req_ids = resumed_set
    if resumed_flags is not None:
        c.resumed_from_preemption = resumed_flags
    return NS(num_scheduled_tokens=nst, scheduled_new_reqs=[NS(req_id=r, num_computed_tokens=0) for r in new],
              scheduled_cached_reqs=c,
              total_num_scheduled_tokens=sum(nst.values()), scheduled_spec_decode_tokens=spec or {},
              preempted_req_ids=set(preempted), finished_req_ids=set(finished))


def test_decode_and_new_prefill():
    # two decoding requests (1 token each), one new request with its whole 30-token prompt
    so = output(["n"], ["a", "b"], [5, 9], {"n": 30, "a": 1, "b": 1}, resumed_set=set(), finished=["x"])
    f = read_step(so, reqs(), 3, 4, False)
    assert f == StepFacts(3, 30, 2, (), (), 0, 1, (NewRequest("n", None, 1.5, 30),), ("n",), None, 3, 4)


def test_chunked_prefill_counts_as_prefill_and_its_first_token_comes_with_the_last_chunk():
    # "c" (100-token prompt) has no output token yet: 64 tokens now (36 computed before) complete it
    so = output([], ["a", "c"], [3, 0], {"a": 1, "c": 64}, resumed_set=set(), computed=[20, 36])
    f = read_step(so, reqs(), 2, 0, False)
    assert (f.num_reqs, f.prefill_tokens, f.decode_tokens, f.first_tokens) == (2, 64, 1, ("c",))
    so = output([], ["a", "c"], [3, 0], {"a": 1, "c": 32}, resumed_set=set(), computed=[20, 36])
    assert read_step(so, reqs(), 2, 0, False).first_tokens == ()      # 68 of 100: not yet


def test_several_chunked_prefills_in_a_batch_first_and_last_places_included():
    # "c" first, "r" last, both short of their first token; "c" completes now (36 + 64 of 100), "r" does not
    so = output([], ["c", "a", "b", "r"], [0, 3, 7, 0], {"c": 64, "a": 1, "b": 1, "r": 8}, resumed_set=set(),
                computed=[36, 20, 20, 8])
    f = read_step(so, reqs(), 4, 0, False)
    assert (f.num_reqs, f.prefill_tokens, f.decode_tokens, f.first_tokens) == (4, 72, 2, ("c",))


def test_zero_positions():
    from vllm_w2ext.steps.facts import zero_positions
    assert zero_positions([0, 3, 0, 0, 5, 0]) == [0, 2, 3, 5]
    assert zero_positions((4, 1)) == [] and zero_positions([]) == []


class _Zero:
    """Equal to 0 by its own __eq__ (as list.index asks it)."""
    def __eq__(self, other):
        return other == 0

    __hash__ = object.__hash__


class _Raises:
    def __eq__(self, other):
        raise RuntimeError("no comparison")

    __hash__ = object.__hash__


def test_zero_positions_in_c_as_its_definition():
    """The EngineCore's scan (the C twin where the extension was built) finds what the definition finds: the 0
    singleton, exact ints of any size (a big int is not 0), bools and floats, objects equal to 0 by their own __eq__;
    an error of an item's __eq__ is raised (but ValueError, which the definition's loop takes for the end); and
    read_step reads the same facts with it."""
    import pytest
    cfront = pytest.importorskip("vllm_w2ext.hooks._cfront")
    if not hasattr(cfront, "zero_positions"):
        pytest.skip("an extension from before zero_positions")
    from vllm_w2ext.steps.facts import zero_positions
    z = cfront.zero_positions
    planted = [0, 3, 10 ** 30, -(10 ** 30), 0, 300, -5, False, True, 0.0, 1.5, _Zero(), object(), int("0"), 2 ** 63]
    assert z(planted) == zero_positions(planted) == [0, 4, 7, 9, 11, 13]
    assert z(tuple(planted)) == zero_positions(tuple(planted))
    assert z([]) == zero_positions([]) == [] and z([7] * 512) == []
    for bad in ([1, _Raises()], [_Raises()]):
        with pytest.raises(RuntimeError, match="no comparison"):
            zero_positions(bad)
        with pytest.raises(RuntimeError, match="no comparison"):
            z(bad)
    with pytest.raises(TypeError, match="a sequence of counts"):
        z(5)
    so = output([], ["c", "a", "b", "r"], [0, 3, 7, 0], {"c": 64, "a": 1, "b": 1, "r": 8}, resumed_set=set(),
                computed=[36, 20, 20, 8])
    assert read_wire(so, reqs(), 4, 0, False, False, True, z) == read_wire(so, reqs(), 4, 0, False)


def test_a_last_prompt_chunk_of_one_token_is_prefill_when_a_request_may_be_prefilling():
    # "c" has 99 of 100 prompt tokens: every request gets one token, only its output count tells
    so = output([], ["a", "c"], [3, 0], {"a": 1, "c": 1}, resumed_set=set(), computed=[20, 99])
    f = read_step(so, reqs(), 2, 0, False, True)
    assert (f.prefill_tokens, f.decode_tokens, f.first_tokens) == (1, 1, ("c",))
    f = read_step(so, reqs(), 2, 0, False)                             # told none can be: the O(1) answer
    assert (f.prefill_tokens, f.decode_tokens, f.first_tokens) == (0, 2, ())


def test_resumed_request_recomputes_its_prompt_026_fields():
    # vLLM 0.26: resumed_from_preemption flags; "r" was preempted and recomputes 40 tokens
    so = output([], ["a", "r"], [2, 7], {"a": 1, "r": 40}, resumed_flags=[False, True], preempted=["p"])
    f = read_step(so, reqs(), 2, 1, False)
    assert (f.prefill_tokens, f.decode_tokens, f.resumed, f.resumed_tokens, f.preempted) == (40, 1, ("r",), 40, ("p",))


def test_speculative_drafts_are_decode():
    so = output([], ["a", "b"], [2, 3], {"a": 3, "b": 1}, resumed_set=set(), spec={"a": [7, 8]})
    f = read_step(so, reqs(), 2, 0, False)
    assert (f.prefill_tokens, f.decode_tokens) == (0, 4)


def test_headers_of_new_requests_and_ids_only_when_asked():
    so = output(["n1", "n2"], ["a"], [1], {"n1": 4, "n2": 2, "a": 1}, resumed_set=set())
    f = read_step(so, reqs({"n1": {"traceparent": "tp-n1"}}), 3, 0, True)
    assert f.new == (NewRequest("n1", {"traceparent": "tp-n1"}, 1.5, 4), NewRequest("n2", None, 1.5, 5))
    assert f.first_tokens == ("n1",)          # n2: 2 of 5 prompt tokens in this step
    assert f.scheduled == ("n1", "n2", "a")


def test_without_output_counts_new_requests_are_the_prefill():
    so = NS(num_scheduled_tokens={"n": 8, "a": 1}, scheduled_new_reqs=[NS(req_id="n", num_computed_tokens=0)],
            scheduled_cached_reqs=NS(req_ids=["a"]), total_num_scheduled_tokens=9,
            scheduled_spec_decode_tokens={}, preempted_req_ids=None, finished_req_ids=set())
    f = read_step(so, {"n": NS(num_prompt_tokens=8, arrival_time=0.0)}, 2, 0, False)
    assert (f.prefill_tokens, f.decode_tokens, f.preempted) == (8, 1, ())


def test_steady_decode_answered_early_as_the_full_reading_answers_it():
    """Told no request can be preempted: the early answer of a one-token-each step equals the full reading's,
    for both field sets, with finished requests counted and every id shipped when asked."""
    for fields in ({"resumed_set": set()}, {"resumed_flags": [False, False, False]}):
        so = output([], ["a", "b", "c"], [5, 9, 2], {"a": 1, "b": 1, "c": 1}, finished=["x", "y"], **fields)
        for all_ids in (False, True):
            early = read_step(so, reqs(), 3, 2, all_ids, False, False)
            assert early == read_step(so, reqs(), 3, 2, all_ids, False, True)
            assert early == StepFacts(3, 0, 3, (), (), 0, 2, (), (), ("a", "b", "c") if all_ids else None, 3, 2)


def test_no_early_answer_while_a_request_may_resume_or_a_step_preempts():
    # "r" was preempted before and comes back for one token (its prompt cached but one): only the full reading
    # finds it; a step that preempts "p" reports it
    so = output([], ["a", "r"], [2, 7], {"a": 1, "r": 1}, resumed_set={"r"})
    f = read_step(so, reqs(), 2, 0, False, False, True)
    assert (f.prefill_tokens, f.resumed, f.resumed_tokens) == (1, ("r",), 1)
    so = output([], ["a"], [2], {"a": 1}, resumed_set=set(), preempted=["p"])
    assert read_step(so, reqs(), 1, 1, False, False, False).preempted == ("p",)
