"""steps.facts.read_step: a step's counts from a SchedulerOutput-shaped object, for vLLM 0.26's and
0.32's field sets, with the answer worked out by hand."""
from types import SimpleNamespace as NS

from vllm_w2ext.steps.facts import StepFacts, read_step


def output(new, cached, out_toks, nst, resumed_set=None, resumed_flags=None, spec=None, preempted=(),
           finished=()):
    c = NS(req_ids=cached, num_output_tokens=out_toks)
    if resumed_set is not None:
        c.resumed_req_ids = resumed_set
    if resumed_flags is not None:
        c.resumed_from_preemption = resumed_flags
    return NS(num_scheduled_tokens=nst, scheduled_new_reqs=[NS(req_id=r) for r in new], scheduled_cached_reqs=c,
              total_num_scheduled_tokens=sum(nst.values()), scheduled_spec_decode_tokens=spec or {},
              preempted_req_ids=set(preempted), finished_req_ids=set(finished))


def no_headers(ids):
    return [None] * len(ids)


def test_decode_and_new_prefill():
    # two decoding requests (1 token each), one new request with a 30-token prompt
    so = output(["n"], ["a", "b"], [5, 9], {"n": 30, "a": 1, "b": 1}, resumed_set=set(), finished=["x"])
    f = read_step(so, 3, 4, no_headers, False)
    assert f == StepFacts(3, 30, 2, (), (), 1, (("n", None),), None, 3, 4)


def test_chunked_prefill_counts_as_prefill():
    # "c" has no output token yet: its 64 tokens are a prefill chunk
    so = output([], ["a", "c"], [3, 0], {"a": 1, "c": 64}, resumed_set=set())
    f = read_step(so, 2, 0, no_headers, False)
    assert (f.num_reqs, f.prefill_tokens, f.decode_tokens) == (2, 64, 1)


def test_resumed_request_recomputes_its_prompt_026_fields():
    # vLLM 0.26: resumed_from_preemption flags; "r" was preempted and recomputes 40 tokens
    so = output([], ["a", "r"], [2, 7], {"a": 1, "r": 40}, resumed_flags=[False, True], preempted=["p"])
    f = read_step(so, 2, 1, no_headers, False)
    assert (f.prefill_tokens, f.decode_tokens, f.resumed, f.preempted) == (40, 1, ("r",), ("p",))


def test_speculative_drafts_are_decode():
    so = output([], ["a", "b"], [2, 3], {"a": 3, "b": 1}, resumed_set=set(), spec={"a": [7, 8]})
    f = read_step(so, 2, 0, no_headers, False)
    assert (f.prefill_tokens, f.decode_tokens) == (0, 4)


def test_headers_only_for_new_requests_and_ids_only_when_asked():
    asked = []

    def headers(ids):
        asked.append(list(ids))
        return [{"traceparent": f"tp-{i}"} for i in ids]
    so = output(["n1", "n2"], ["a"], [1], {"n1": 4, "n2": 5, "a": 1}, resumed_set=set())
    f = read_step(so, 3, 0, headers, True)
    assert asked == [["n1", "n2"]]
    assert f.new == (("n1", {"traceparent": "tp-n1"}), ("n2", {"traceparent": "tp-n2"}))
    assert f.scheduled == ("n1", "n2", "a")


def test_without_output_counts_new_requests_are_the_prefill():
    so = NS(num_scheduled_tokens={"n": 8, "a": 1}, scheduled_new_reqs=[NS(req_id="n")],
            scheduled_cached_reqs=NS(req_ids=["a"]), total_num_scheduled_tokens=9,
            scheduled_spec_decode_tokens={}, preempted_req_ids=None, finished_req_ids=set())
    f = read_step(so, 2, 0, no_headers, False)
    assert (f.prefill_tokens, f.decode_tokens, f.preempted) == (8, 1, ())
