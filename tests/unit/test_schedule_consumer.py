"""``engine.schedule`` as a bounds hook whose buffer is a consumer (``engine_core.scheduled``): its front takes the
schedule's two clock readings and hands ``(start, end, SchedulerOutput, error)`` to the consumer at once, one Python
call where ``pre`` and ``post`` took two. Through the C front and the Python front alike: a recorded step's
SchedulerOutput carries its stamp, whose schedule bounds are the step record's and lie inside the schedule's call; a
schedule that raises is recorded as an Interval naming its error and vLLM's exception reaches the caller; a fault in
the consumer switches the hook off through its runner (the front's own note would drop it silently) and never reaches
vLLM's call."""
import time
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks import bounds, engine_core, runner
from vllm_w2ext.hooks.engine_core import STAMP
from vllm_w2ext.hooks.runner import GATE, HookRunner
from vllm_w2ext.steps.facts import Stamp, step_record
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.telemetry.wire import DATA, Interval
from vllm_w2ext.vocab import Span

SPIN_NS = 200_000


def decode_output() -> NS:
    cached = NS(req_ids=["a"], resumed_req_ids=set(), num_output_tokens=[3], num_computed_tokens=[8])
    return NS(scheduled_new_reqs=[], scheduled_cached_reqs=cached, num_scheduled_tokens={"a": 1},
              total_num_scheduled_tokens=1, preempted_req_ids=set(), finished_req_ids=set(),
              scheduled_spec_decode_tokens={})


class Scheduler:
    def __init__(self):
        self.requests = {"a": NS(num_prompt_tokens=12, trace_headers=None, arrival_time=0.0)}
        self.running, self.waiting = ["a"], []
        self.fail = None
        self.new = False
        self.called = None

    def schedule(self):
        t = time.time_ns()
        while time.time_ns() - t < SPIN_NS:         # the call's own time, which the bounds must hold
            pass
        if self.fail is not None:
            raise self.fail
        so = decode_output()
        if self.new:                                # a request joins: not the steady decode (read_step's way)
            so.scheduled_new_reqs = [NS(req_id="b", prompt_token_ids=[1, 2], num_computed_tokens=0)]
            so.num_scheduled_tokens, so.total_num_scheduled_tokens = {"a": 1, "b": 2}, 3
        self.called = (t, time.time_ns())
        return so


class Core:
    def __init__(self):
        self.scheduler = Scheduler()
        self.outputs = []

    def step(self):
        self.outputs.append(self.scheduler.schedule())
        return {}, True


@pytest.fixture
def no_reporting(monkeypatch):
    """A hook fault reports through the process's pipeline and role (``HookRunner.fail``): not in a unit test's
    process, where a pipeline's export thread would outlive the test."""
    from vllm_w2ext.telemetry import identity, pipeline
    monkeypatch.setattr(pipeline, "get", lambda: None)
    monkeypatch.setattr(identity, "set_role", lambda *a, **k: None)


@pytest.fixture(params=["c", "python"])
def loop(request, monkeypatch, no_marks, no_reporting):
    if request.param == "c" and runner.CFront is None:
        pytest.skip("the C front is not built")
    if request.param == "python":
        monkeypatch.setattr(runner, "CFront", None)
    st = engine_core._State()
    st.identity_done = True
    rec = Recorder(1 << 12, None)
    monkeypatch.setattr(engine_core, "S", st)
    monkeypatch.setattr(engine_core, "recorder", lambda: rec)
    monkeypatch.setattr(engine_core, "RECORDER", [rec])
    specs = {h.name: h for h in engine_core.HOOKS}
    runners = {}
    for name, (cls, method) in {"engine.step": (Core, "step"), "engine.schedule": (Scheduler, "schedule")}.items():
        runners[name] = r = HookRunner(specs[name])
        r.left = r.gap = 1 << 30                      # no sampled (timed) call: the front's own way through
        monkeypatch.setattr(cls, method, r.bind(vars(cls)[method]))
    monkeypatch.setattr(engine_core, "_fail_schedule", runners["engine.schedule"].fail)
    GATE.use(runners.values())
    bounds.MODE.use(runners.values())
    bounds.MODE.arrive(engine=True)
    yield Core(), runners, rec, request.param
    GATE.use(())
    bounds.MODE.use(())
    bounds.MODE.reset()


def test_a_recorded_steps_schedule_is_stamped_with_its_bounds(loop):
    core, runners, rec, front = loop
    assert (type(vars(Scheduler)["schedule"]) is runner.CFront) == (front == "c")
    assert runners["engine.schedule"].fast                 # its front takes its own way (no pre, no post)
    for _ in range(3):
        core.step()
    steps = [r for r in rec.take() if r[0] == Span.STEP]
    assert len(steps) == 3 and len(core.outputs) == 3
    for k, (r, so) in enumerate(zip(steps, core.outputs), start=1):
        stamp = Stamp._make(getattr(so, STAMP))
        record = step_record(r[DATA])
        assert stamp.step == k
        assert (stamp.schedule_start, stamp.schedule_end) == (record.schedule_start, record.schedule_end)
        assert record.schedule_end - record.schedule_start >= SPIN_NS
        assert record.facts is not None and record.facts[0] == 1       # the steady decode: one token scheduled
    t0, t1 = core.scheduler.called                         # the last call's own reading lies inside its bounds
    assert record.schedule_start <= t0 and t1 <= record.schedule_end


def test_a_failed_schedule_is_an_interval_naming_its_error(loop):
    core, runners, rec, _ = loop
    core.step()
    core.scheduler.fail = KeyError("planted")
    with pytest.raises(KeyError, match="planted"):
        core.step()
    records = rec.take()
    failed = [Interval._make(r) for r in records if r[0] == Span.SCHEDULE]
    assert [(iv.error, iv.step) for iv in failed] == [("KeyError", 2)]
    assert failed[0].end_ns - failed[0].start_ns >= SPIN_NS
    assert runners["engine.schedule"].active               # vLLM's error, not the plugin's: the hook stays on


def test_a_fault_in_the_consumer_switches_the_hook_off_and_never_reaches_vllm(loop, monkeypatch, caplog):
    core, runners, rec, _ = loop
    core.step()

    def broken(so):
        raise RuntimeError("planted fault")
    monkeypatch.setattr(engine_core, "_read_facts", broken)    # the consumer's read of a batch that is not steady
    core.scheduler.new = True
    with caplog.at_level("ERROR", logger="vllm_w2ext"):
        assert core.step() == ({}, True)
        core.step()
    assert len(core.outputs) == 3 and core.outputs[-1].scheduled_new_reqs    # vLLM's results reached its caller
    r = runners["engine.schedule"]
    assert r.failed and not r.active and not r.fast
    assert "engine.schedule" in caplog.text and "planted fault" in caplog.text
    assert caplog.text.count("planted fault") == 1           # switched off: the third step's schedule ran bare


def test_the_consumers_fault_goes_to_the_process_runner(monkeypatch, no_reporting):
    from vllm_w2ext.hooks import INSTRUMENTOR
    r = HookRunner({h.name: h for h in engine_core.HOOKS}["engine.schedule"])
    monkeypatch.setattr(INSTRUMENTOR, "runners", {"engine.schedule": r})
    engine_core._fail_schedule(RuntimeError("planted"))
    assert r.failed and not r.active
