"""The EngineCore hooks count the scheduler's waiting queue without calling a Python ``__len__`` where the queue is a
deque (vLLM's FCFS queue: its ``__len__`` is ``super().__len__()``, a Python frame per count), and through ``len``
otherwise (the priority queue's heap). Known answers: a planted deque subclass whose ``__len__`` counts its calls (and
lies, so that a call would show in the figures) is counted right and never called; a queue that is not a deque is
counted through its own ``__len__``; a queue replaced by another type is followed from the next schedule."""
import collections
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks import bounds, engine_core
from vllm_w2ext.steps.facts import StepFacts, StepRecord
from vllm_w2ext.telemetry import recording
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.telemetry.wire import DATA


class PythonLenDeque(collections.deque):
    """vLLM's FCFSRequestQueue's shape: a deque with a Python ``__len__``; this one counts its calls and says 100."""
    calls = 0

    def __len__(self) -> int:
        PythonLenDeque.calls += 1
        return 100


class Heap:
    """A queue that is not a deque (vLLM's PriorityRequestQueue keeps a heap): counted through its ``__len__``."""

    def __init__(self, n: int):
        self.heap = list(range(n))

    def __len__(self) -> int:
        return len(self.heap)


@pytest.fixture
def rec(monkeypatch):
    saved = recording.PHASE_MARKS[0], recording._nvtx_on[0]
    recording.PHASE_MARKS[0] = recording._nvtx_on[0] = False
    state = engine_core._State()
    state.identity_done = True
    monkeypatch.setattr(engine_core, "S", state)
    bounds.clear()
    bounds.MODE.reset()
    r = Recorder(64, None)
    monkeypatch.setattr(engine_core, "RECORDER", [r])
    monkeypatch.setattr(engine_core, "recorder", lambda: r)
    PythonLenDeque.calls = 0
    yield r
    recording.PHASE_MARKS[0], recording._nvtx_on[0] = saved


def decode_output(ids) -> NS:
    """A SchedulerOutput of the requests ``ids`` decoding one token each (the steady step's fast path)."""
    cached = NS(req_ids=list(ids), resumed_req_ids=set(), num_output_tokens=[3] * len(ids),
                num_computed_tokens=[8] * len(ids))
    return NS(scheduled_new_reqs=[], scheduled_cached_reqs=cached, num_scheduled_tokens={i: 1 for i in ids},
              total_num_scheduled_tokens=len(ids), preempted_req_ids=set(), finished_req_ids=set(),
              scheduled_spec_decode_tokens={})


def new_output(ids) -> NS:
    """A SchedulerOutput that starts the requests ``ids`` (read through ``read_step``, not the fast path)."""
    so = decode_output(())
    so.scheduled_new_reqs = [NS(req_id=i, prompt_token_ids=[1, 2, 3, 4], num_computed_tokens=0) for i in ids]
    so.num_scheduled_tokens = {i: 4 for i in ids}
    so.total_num_scheduled_tokens = 4 * len(ids)
    return so


def one_step(rec, sched, so) -> StepRecord:
    state = engine_core._step_pre(NS(scheduler=sched), (), {})
    engine_core._schedule_post(engine_core._schedule_pre(sched, (), {}), so, None)
    engine_core._step_post(state, ({}, True), None)
    return StepRecord(*rec.take()[-1][DATA])


def scheduler(waiting, running=("a", "b")) -> NS:
    return NS(requests={i: NS(num_prompt_tokens=4, num_output_tokens=0) for i in running},
              running=list(running), waiting=waiting)


def test_a_deque_with_a_python_len_is_counted_without_calling_it(rec):
    sched = scheduler(PythonLenDeque("xyz"))
    for _ in range(3):                                   # the steady step: facts written out in _schedule_post
        got = one_step(rec, sched, decode_output(("a", "b")))
        assert StepFacts(*got.facts).waiting == 3 and StepFacts(*got.facts).running == 2
        assert got.pending == 5
    got = one_step(rec, sched, new_output(("a", "b")))   # through read_step
    assert StepFacts(*got.facts).waiting == 3 and got.pending == 5
    assert PythonLenDeque.calls == 0


def test_a_queue_that_is_not_a_deque_goes_through_its_len(rec):
    got = one_step(rec, scheduler(Heap(4)), decode_output(("a", "b")))
    assert StepFacts(*got.facts).waiting == 4 and got.pending == 6


def test_a_replaced_queue_is_followed_from_the_next_schedule(rec):
    sched = scheduler(collections.deque("xy"))
    assert StepFacts(*one_step(rec, sched, decode_output(("a", "b"))).facts).waiting == 2
    sched.waiting = Heap(7)
    got = one_step(rec, sched, decode_output(("a", "b")))
    assert StepFacts(*got.facts).waiting == 7 and got.pending == 9
    sched.waiting = PythonLenDeque("x")
    got = one_step(rec, sched, decode_output(("a", "b")))
    assert StepFacts(*got.facts).waiting == 1 and got.pending == 3 and PythonLenDeque.calls == 0
