"""``_cfront.step_post``, the engine step's post in C where the extension was built: on planted steps it leaves the
same range record, the same state and the same buffers as ``engine_core._step_post`` (the definition), case by case,
requests freed in the step among them; on the steps its common way does not take (an error, requests freed while one is
prefilling or preempted, marks, a full buffer, a failed update, the sampling N moved, the worker about to switch to
bounds hooks) it hands the call to that function untouched."""
import copy
from collections import deque
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks import bounds, engine_core
from vllm_w2ext.hooks.engine_core import STAMP
from vllm_w2ext.steps.facts import step_record
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.telemetry.wire import DATA, END, NESTED

_cfront = pytest.importorskip("vllm_w2ext.hooks._cfront", reason="the C extension is not built")

STEP_STAMP = (11, 22, 7, 100, 110, 0, 0, 90, 95, 1)        # the stamp the step's update took in: step 7's


def state(**changes) -> engine_core._State:
    st = engine_core._State()
    st.step, st.last_recorded = 8, 6                 # step 7 was light: one skipped
    st.light_executed, st.light_tokens = 1, 3
    st.sched = NS(running=["a", "b"], waiting=deque(["c"]))
    st.waiting_len = type(st.sched.waiting).__len__
    st.facts = (1, 0, 1, (), (), 0, 0, (), (), None, 2, 1)
    st.schedule_start, st.schedule_end = 100, 110
    st.stamp = STEP_STAMP
    for k, v in changes.items():
        setattr(st, k, v)
    return st


def step_range() -> list:
    return ["engine.step", "engine_core", 11, 22, 0, 95, 0, 8, None, None, None, 1, None]


def so_with(stamp):
    so = NS(total_num_scheduled_tokens=1)
    if stamp is not None:
        setattr(so, STAMP, stamp)
    return so


CASES = {
    "steady, its update": {},
    "no update": {"updates": []},
    "update of an output with no stamp": {"updates": [(200, 210, so_with(None), None)]},
    "older updates left": {"updates": [(1, 2, so_with(None), None), (200, 210, so_with(STEP_STAMP), None)]},
    "no model run": {"result": ({}, False)},
    "no result": {"result": None},
    "a waiting queue that is not a deque": {"state": {"waiting_len": len}},
    "worker on this thread": {"in_process": True},
    "worker on this thread, its execution failed": {"in_process": True, "execution_error": KeyError("x")},
    "requests freed": {"state": {"finished": [("a", "FINISHED_STOPPED", 3), ("b", "FINISHED_LENGTH_CAPPED", 9)]}},
    "requests freed, worker on this thread": {"state": {"finished": [("a", "FINISHED_ABORTED", 0)]},
                                              "in_process": True},
    "requests freed, its execution failed": {"state": {"finished": [("a", "FINISHED_STOPPED", 3)]},
                                             "in_process": True, "execution_error": KeyError("x")},
    # not the common way: the definition runs
    "failed update": {"updates": [(200, 210, so_with(STEP_STAMP), KeyError("u"))]},
    "requests freed, one still prefilling": {"state": {"finished": [("a", "FINISHED_STOPPED", 3)],
                                                       "prefilling": {"a", "z"}}},
    "requests freed, one preempted": {"state": {"finished": [("a", "FINISHED_STOPPED", 3)], "preempted": {"q"}}},
    "failed step": {"error": RuntimeError("step")},
    "marks": {"nested": True},
    "buffer full": {"capacity": 0},
    "the budget moved N": {"state": {"want": 4}},
    "worker about to switch": {"ready": True},
    "no scheduler": {"state": {"sched": None}},
}


class _Quiet(bounds.Mode):
    """The process's Mode with ``start`` and ``arrive`` doing nothing (``__class__`` swapped for a test): what they
    lead to is not these tests'."""
    __slots__ = ()

    def start(self) -> None:
        pass

    def arrive(self, engine: bool = False, worker=None) -> None:
        pass


def run(post, case: dict, monkeypatch) -> tuple:
    st = state(**copy.deepcopy(case.get("state", {})))
    rec = Recorder(1 << 10 if "capacity" not in case else case["capacity"], None)
    ups = bounds.buffer()
    for u in case.get("updates", [(200, 210, so_with(STEP_STAMP), None)]):
        ups.append(u)
    monkeypatch.setattr(engine_core, "S", st)
    monkeypatch.setattr(engine_core, "RECORDER", [rec])
    monkeypatch.setattr(engine_core, "recorder", lambda: rec)
    monkeypatch.setattr(engine_core, "UPDATES", ups)
    monkeypatch.setattr(bounds.MODE, "in_process", case.get("in_process", False))
    monkeypatch.setattr(bounds.MODE, "ready", case.get("ready", False))
    if case.get("ready"):                             # what ready leads to (MODE.start) is not this test's
        monkeypatch.setattr(bounds.MODE, "__class__", _Quiet)
    monkeypatch.setattr(bounds.MODE, "last_end", 50)
    monkeypatch.setattr(bounds.MODE, "device_stop", None)
    if case.get("in_process"):                        # the execution the worker's bounds hooks left
        bounds.clear()
        bounds.EXECUTIONS.append((120, 180, NS(total_num_scheduled_tokens=1), case.get("execution_error")))
        bounds.SAMPLES.append((182, 190, "result", None))
    r = step_range()
    if case.get("nested"):
        r[NESTED] = True
        rec._local.s = [r]                            # (as a range with marks is on the thread's stack)
    try:
        post(r, case.get("result", ({}, True)), case.get("error"))
    finally:
        bounds.clear()
    records = rec.take()
    slots = {n: getattr(st, n) for n in engine_core._State.__slots__ if n not in ("prev_step_end", "sched")}
    return r, records, slots, list(ups), st.prev_step_end


@pytest.mark.parametrize("name", list(CASES))
def test_the_c_post_does_what_the_definition_does(name, monkeypatch):
    case = CASES[name]
    r_py, records_py, slots_py, ups_py, end_py = run(engine_core._step_post, case, monkeypatch)
    r_c, records_c, slots_c, ups_c, end_c = run(_cfront.step_post, case, monkeypatch)
    assert r_c[END] >= r_py[END] > 0 and end_c == r_c[END] and end_py == r_py[END]      # the step's end: now
    r_py[END] = r_c[END] = None
    for rec in records_py + records_c:                # the clock's readings in the records (a failed update's and
        if isinstance(rec, list):                     # the step's own) set aside as above
            rec[END] = None
    # the same StepRecord as the export side reads it (the C post writes a common step's raw: steps.facts.RAW_STEP)
    assert step_record(r_c[DATA]) == step_record(r_py[DATA])
    freed = bool(case.get("state", {}).get("finished"))     # (the raw form carries the freed requests fourth)
    assert len(r_c[DATA]) == (3 + freed if name in COMMON and "execution_error" not in case else 12)  # (an error)
    r_py[DATA] = r_c[DATA] = None
    assert r_c == r_py
    assert [type(x) for x in records_c] == [type(x) for x in records_py]
    assert records_c == records_py
    assert slots_c == slots_py
    assert ups_c == ups_py


def test_the_hooks_run_the_c_post():
    specs = {h.name: h for h in engine_core.HOOKS}
    assert specs["engine.step"].post is _cfront.step_post
    assert specs["engine.step_with_batch_queue"].post is _cfront.step_post


COMMON = [n for n in CASES if list(CASES).index(n) < list(CASES).index("failed update")]


class Handed(Exception):
    pass


def handed_over_unless_common(runner, fn, case: dict, common: bool, monkeypatch) -> None:
    """With a fallback that raises Handed: a common case runs in C to its end, any other is handed over."""
    if common:
        runner(fn, case, monkeypatch)
    else:
        with pytest.raises(Handed):
            runner(fn, case, monkeypatch)


@pytest.mark.parametrize("name", list(CASES))
def test_only_the_uncommon_steps_are_handed_to_the_definition(name, monkeypatch):
    def fallback(r, result, error):
        raise Handed
    from collections import deque
    from vllm_w2ext.steps.facts import STAMP_STEP
    from vllm_w2ext.telemetry.wire import DATA as D, END as E, NESTED as N
    _cfront.step_post_setup(vars(engine_core), engine_core._State, fallback, STAMP, STAMP_STEP, N, D, E, deque)
    try:
        handed_over_unless_common(run, _cfront.step_post, CASES[name], name in COMMON, monkeypatch)
    finally:
        _cfront.step_post_setup(vars(engine_core), engine_core._State, engine_core._step_post, STAMP, STAMP_STEP, N,
                                D, E, deque)


# -- the step's pre ---------------------------------------------------------------------------------------------
PRE_CASES = {
    "recorded step": {},
    "recorded step of a sampled run": {"sample": 4, "step": 3},          # step 4: 4 % 4 = 0, a recorded one
    # not the common way: the definition runs
    "first step (identity)": {"identity_done": False},
    "light step": {"sample": 4, "step": 1},                              # step 2 of every 4: light
    "gate shut": {"gate_shut": True},
    "marks wanted": {"marks": True},
    "no recorder yet": {"no_recorder": True},
    "another waiting queue": {"waiting_type": list},
}


def run_pre(pre, case: dict, monkeypatch) -> tuple:
    from vllm_w2ext.hooks import runner
    st = engine_core._State()
    st.identity_done = case.get("identity_done", True)
    st.set_sample(case.get("sample", 1))
    st.step = case.get("step", 8)
    core = NS(scheduler=NS(running=[], waiting=bounds.buffer()), engine_index=0)
    st.waiting_type = case.get("waiting_type", type(core.scheduler.waiting))
    st.waiting_len = type(core.scheduler.waiting).__len__
    rec = Recorder(1 << 10, None)
    gate = runner.StepGate()
    if case.get("gate_shut"):
        gate.close()
    monkeypatch.setattr(engine_core, "S", st)
    monkeypatch.setattr(engine_core, "GATE", gate)
    monkeypatch.setattr(engine_core, "RECORDER", [None if case.get("no_recorder") else rec])
    monkeypatch.setattr(engine_core, "recorder", lambda: rec)
    monkeypatch.setattr(engine_core, "PHASE_MARKS", [bool(case.get("marks"))])
    monkeypatch.setattr(engine_core.identity, "set_role", lambda *a, **k: None)
    monkeypatch.setattr(bounds.MODE, "__class__", _Quiet)
    r = pre(core, (), {})
    slots = {n: getattr(st, n) for n in engine_core._State.__slots__ if n not in ("t0", "current")}
    slots["sched"] = slots["sched"] is core.scheduler
    return r, slots, st.current is r, gate.shut


@pytest.mark.parametrize("name", list(PRE_CASES))
def test_the_c_pre_does_what_the_definition_does(name, monkeypatch):
    r_py, slots_py, current_py, shut_py = run_pre(engine_core._step_pre, PRE_CASES[name], monkeypatch)
    r_c, slots_c, current_c, shut_c = run_pre(_cfront.step_pre, PRE_CASES[name], monkeypatch)
    assert slots_c == slots_py and current_c == current_py and shut_c == shut_py
    if isinstance(r_py, list):
        from vllm_w2ext.telemetry.wire import SPAN_ID, START, TRACE_ID
        assert type(r_c) is list and len(r_c) == len(r_py)
        for r in (r_py, r_c):                      # random ids and the clock: set aside, checked to be there
            assert r[TRACE_ID] > 0 and r[SPAN_ID] > 0 and r[START] > 0
            r[TRACE_ID] = r[SPAN_ID] = r[START] = None
        assert r_c == r_py
    else:
        assert r_c is r_py                         # the light step's sentinel


PRE_COMMON = ["recorded step", "recorded step of a sampled run"]


@pytest.mark.parametrize("name", list(PRE_CASES))
def test_only_the_uncommon_starts_are_handed_to_the_definition(name, monkeypatch):
    def fallback(core, args, kwargs):
        raise Handed
    from vllm_w2ext.telemetry.recording import span_bits
    from vllm_w2ext.telemetry.wire import ON_THREAD
    from vllm_w2ext.vocab import ENGINE, Span
    _cfront.step_pre_setup(fallback, span_bits, Span.STEP, ENGINE, ON_THREAD)
    try:
        handed_over_unless_common(run_pre, _cfront.step_pre, PRE_CASES[name], name in PRE_COMMON, monkeypatch)
    finally:
        _cfront.step_pre_setup(engine_core._step_pre, span_bits, Span.STEP, ENGINE, ON_THREAD)


def test_the_hooks_run_the_c_pre():
    specs = {h.name: h for h in engine_core.HOOKS}
    assert specs["engine.step"].pre is _cfront.step_pre
    assert specs["engine.step_with_batch_queue"].pre is _cfront.step_pre


def test_mode_and_recorder_are_read_at_their_slots(monkeypatch):
    """The C hooks read these attributes at their slots' offsets (``_cfront.slots_setup``): a slot each, so a class
    that grows an attribute under another name, or loses one, fails here and not in an engine."""
    from vllm_w2ext.telemetry.recording import Recorder
    assert {"ready", "in_process", "last_end", "device_stop"} <= set(bounds.Mode.__slots__)
    assert {"buf", "capacity", "nvtx"} <= set(Recorder.__slots__)
    _cfront.slots_setup(bounds.Mode, Recorder)                 # what bounds.py did at import: again, the same
    with pytest.raises(TypeError, match="has no slot"):
        _cfront.slots_setup(object, Recorder)                  # no such slots, and nothing changed
    r, records, _, _, _ = run(_cfront.step_post, {"in_process": True}, monkeypatch)    # (the offsets still Mode's)
    assert records == [r] and r[DATA][-1] is not None


# -- the schedule's consumer --------------------------------------------------------------------------------------
class _Fixed:
    """A SchedulerOutput that takes no new attribute (the Stamp cannot be set on it)."""
    __slots__ = ("num_scheduled_tokens", "total_num_scheduled_tokens", "scheduled_new_reqs", "preempted_req_ids",
                 "finished_req_ids")


def schedule_output(fixed: bool = False, **changes):
    so = _Fixed() if fixed else NS()
    so.num_scheduled_tokens, so.total_num_scheduled_tokens = {"a": 1, "b": 1}, 2
    so.scheduled_new_reqs, so.preempted_req_ids, so.finished_req_ids = [], set(), {"z"}
    for k, v in changes.items():
        setattr(so, k, v)
    return so


SCHEDULE_CASES = {
    "steady decode": {},
    "steady decode, a queue that is not a deque": {"state": {"waiting_len": len}},
    "steady decode, the stamp cannot be set (a fault: fail)": {"so": {"fixed": True}},
    "a new request": {"so": {"scheduled_new_reqs": ["n"]}},
    "new requests, one of them done with its prompt": {"so": {"scheduled_new_reqs": ["n", "m"], "first": ["m"]}},
    "a prompt chunk (more tokens than requests)": {"so": {"total_num_scheduled_tokens": 3}},
    "a request preempted": {"so": {"preempted_req_ids": {"b"}}},
    "a new request, its facts unreadable (a fault: fail)": {"so": {"scheduled_new_reqs": ["n"], "unreadable": True}},
    # not the common way: the definition runs
    "a request still prefilling": {"state": {"prefilling": {"a"}}},
    "a request preempted before": {"state": {"preempted": {"q"}}},
    "every id wanted": {"state": {"all_links": True}},
    "a light step": {"state": {"light": True}},
    "a failed schedule": {"error": KeyError("s")},
    "outside a recorded step": {"state": {"current": None}},
    "nothing scheduled": {"no_so": True},
}
SCHEDULE_COMMON = list(SCHEDULE_CASES)[:8]


def planted_read_step(so, *args) -> tuple:
    """read_step's stand-in: StepFacts whose new requests are the batch's (``first``: those done with their prompt) and
    whose preempted ones are its preempted ids, so that ``_read_facts``' bookkeeping of them shows in the state."""
    if getattr(so, "unreadable", False):
        raise KeyError("unreadable")
    new = tuple((n, None, 0.0, 4) for n in so.scheduled_new_reqs)
    return (so.total_num_scheduled_tokens, 1, 1, tuple(so.preempted_req_ids), (), 0, 0, new,
            tuple(getattr(so, "first", ())), None, 2, 1)


def run_schedule(consumer, case: dict, monkeypatch) -> tuple:
    st = state(**copy.deepcopy({k: v for k, v in case.get("state", {}).items()}))
    st.current = step_range() if "current" not in case.get("state", {}) else case["state"]["current"]
    st.stamp = st.facts = None
    st.schedule_start = st.schedule_end = 0
    st.update_start, st.update_end, st.prev_step_end, st.pending = 80, 85, 90, 2
    st.sched.requests = {}
    rec = Recorder(1 << 10, None)
    failed = []
    monkeypatch.setattr(engine_core, "S", st)
    monkeypatch.setattr(engine_core, "RECORDER", [rec])
    monkeypatch.setattr(engine_core, "recorder", lambda: rec)
    monkeypatch.setattr(engine_core, "read_step", planted_read_step)
    monkeypatch.setattr(engine_core, "_fail_schedule", failed.append)
    so = None if case.get("no_so") else schedule_output(**case.get("so", {}))
    consumer((100, 110, so, case.get("error")))
    slots = {n: getattr(st, n) for n in engine_core._State.__slots__ if n != "sched"}
    return slots, getattr(so, STAMP, None), rec.take(), [type(e).__name__ for e in failed]


@pytest.mark.parametrize("name", list(SCHEDULE_CASES))
def test_the_c_schedule_consumer_does_what_the_definition_does(name, monkeypatch):
    case = SCHEDULE_CASES[name]
    got_py = run_schedule(engine_core.scheduled, case, monkeypatch)
    got_c = run_schedule(_cfront.scheduled, case, monkeypatch)
    for rec in got_py[2] + got_c[2]:                # an Interval's clock readings are the bounds given: no clock here
        assert isinstance(rec, tuple)
    assert got_c == got_py
    if name == "steady decode":
        assert got_c[0]["facts"] == (2, 0, 2, (), (), 0, 1, (), (), None, 2, 1) and got_c[1][2] == 8


@pytest.mark.parametrize("name", list(SCHEDULE_CASES))
def test_only_the_uncommon_schedules_are_handed_to_the_definition(name, monkeypatch):
    def fallback(bounds):
        raise Handed
    from vllm_w2ext.telemetry.wire import SPAN_ID as SI, START as ST, TRACE_ID as TI
    _cfront.scheduled_setup(fallback, TI, SI, ST)
    try:
        handed_over_unless_common(run_schedule, _cfront.scheduled, SCHEDULE_CASES[name], name in SCHEDULE_COMMON,
                                  monkeypatch)
    finally:
        _cfront.scheduled_setup(engine_core.scheduled, TI, SI, ST)


def test_the_schedule_hook_hands_its_bounds_to_the_c_consumer():
    assert engine_core.SCHEDULES.append is _cfront.scheduled


def test_the_c_step_record_is_left_out_of_the_collector(monkeypatch):
    """The step's range list (C pre) and its record's data (C post) are untracked by Python's cyclic collector: a
    record holds no cycle, and the records an export interval buffers would otherwise be walked by every collection
    on vLLM's thread until the export thread takes them (more of them with the longer auto wait,
    ``benchmarks/results/cpu/export_wait``). The definition's range stays tracked, as any list."""
    import gc
    r_c = run_pre(_cfront.step_pre, PRE_CASES["recorded step"], monkeypatch)[0]
    r_py = run_pre(engine_core._step_pre, PRE_CASES["recorded step"], monkeypatch)[0]
    assert not gc.is_tracked(r_c) and gc.is_tracked(r_py)
    r, records, *_ = run(_cfront.step_post, CASES["steady, its update"], monkeypatch)
    assert records == [r] and not gc.is_tracked(r[DATA])


def test_steady_decodes_with_the_same_counts_share_their_facts(monkeypatch):
    """A steady decode whose counts (tokens, finished, running, waiting) equal the last one's takes its StepFacts tuple
    again instead of making one (each record held a new 12-tuple until the export thread took it); any count that
    moves makes a new one, equal to the definition's."""
    import gc
    first = run_schedule(_cfront.scheduled, SCHEDULE_CASES["steady decode"], monkeypatch)[0]["facts"]
    again = run_schedule(_cfront.scheduled, SCHEDULE_CASES["steady decode"], monkeypatch)[0]["facts"]
    assert again is first and not gc.is_tracked(first)
    case = {"so": {"finished_req_ids": set()}}                 # one count moved: no request finished this time
    moved = run_schedule(_cfront.scheduled, case, monkeypatch)[0]["facts"]
    assert moved is not first and moved == run_schedule(engine_core.scheduled, case, monkeypatch)[0]["facts"]
    assert moved == (2, 0, 2, (), (), 0, 0, (), (), None, 2, 1)


def test_the_c_hooks_hold_the_module_globals_as_rebound(monkeypatch):
    """The C hooks hold ``S``, ``RECORDER``, ``MODE``, ``UPDATES``, ``GATE`` and ``PHASE_MARKS`` (no dict lookup per
    step): a rebinding from outside reaches them (the cases above rebind four), and a deletion sends them back to the
    module's dict, where the name is then missing: the definition runs and raises as Python does."""
    assert type(engine_core) is engine_core._HeldGlobals and engine_core.HELD == {
        "S", "RECORDER", "MODE", "UPDATES", "GATE", "PHASE_MARKS"}
    run(_cfront.step_post, CASES["steady, its update"], monkeypatch)         # rebound: the planted state is written
    monkeypatch.delattr(engine_core, "UPDATES")
    st = state()
    monkeypatch.setattr(engine_core, "S", st)
    with pytest.raises(NameError, match="UPDATES"):
        _cfront.step_post(step_range(), ({}, True), None)


class _Status:                                        # an enum member's own attribute, as the definition reads it
    def __init__(self, name: str) -> None:
        self._name_ = name


class _Request:
    def __init__(self, rid: str, status: str, tokens: int) -> None:
        self.request_id, self.status, self._tokens = rid, _Status(status), tokens

    @property
    def num_output_tokens(self) -> int:               # a property, as on vLLM's Request
        return self._tokens


@pytest.mark.parametrize("call", ["positional", "keyword", "not the hooks' state", "no request_id"])
def test_the_c_free_request_pre_appends_what_the_definition_appends(call, monkeypatch):
    """``_cfront.free_request_pre`` (``engine.free_request``'s pre in C): the same Finished tuples in ``S.finished``
    as ``engine_core._free_request_pre``; a keyword call and a state not the hooks' go to the definition; a request
    without an attribute raises the same error."""
    assert engine_core.free_request_pre is _cfront.free_request_pre
    got = []
    for pre in (engine_core._free_request_pre, _cfront.free_request_pre):
        st = engine_core._State() if call != "not the hooks' state" else NS(finished=[])
        monkeypatch.setattr(engine_core, "S", st)
        reqs = [_Request("r1", "FINISHED_STOPPED", 7), _Request("r2", "FINISHED_LENGTH_CAPPED", 300)]
        if call == "no request_id":
            del reqs[1].request_id
        outcome = []
        for req in reqs:
            try:
                args, kwargs = ((), {"request": req}) if call == "keyword" else ((req,), {})
                outcome.append(pre(NS(), args, kwargs))
            except AttributeError as e:
                outcome.append(("raised", str(e)))
        got.append((outcome, list(st.finished)))
    assert got[0] == got[1]
    assert got[0][1][0] == ("r1", "FINISHED_STOPPED", 7)
    if call == "no request_id":
        assert got[0][0][1][0] == "raised"
