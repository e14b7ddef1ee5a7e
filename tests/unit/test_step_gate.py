"""runner.StepGate: with VLLM_W2EXT_SAMPLE the EngineCore switches the ``recorded_only`` hooks off while it
runs a step it does not record. Driven through real runners bound to stand-ins of vLLM's classes, as
vLLM's sync step loop with the worker in the EngineCore's process (TP=1 on the GPU) calls them. Known
answers: which steps reach the gated hooks' pre at all, that the worker records exactly the recorded steps
and measures a gap only after a recorded predecessor, and that pause, failure and gate stay separate."""
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks import bounds, engine_core, worker
from vllm_w2ext.hooks.runner import GATE, HookRunner
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.steps.facts import STAMP_STEP, step_record
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.telemetry.wire import Interval, RangeRecord
from vllm_w2ext.vocab import Span

EVERY = 8


def decode_output(rid="a") -> NS:
    cached = NS(req_ids=[rid], resumed_req_ids=set(), num_output_tokens=[3], num_computed_tokens=[8])
    return NS(scheduled_new_reqs=[], scheduled_cached_reqs=cached, num_scheduled_tokens={rid: 1},
              total_num_scheduled_tokens=1, preempted_req_ids=set(), finished_req_ids=set(),
              scheduled_spec_decode_tokens={})


class Scheduler:
    def __init__(self):
        self.requests = {"a": NS(num_prompt_tokens=12, trace_headers=None, arrival_time=0.0)}
        self.running, self.waiting = [], []

    def schedule(self):
        return decode_output()

    def update_from_output(self, so, out):
        return {}


class Worker:
    def execute_model(self, so):
        return None

    def sample_tokens(self, grammar):
        return "sampled"


class Core:
    def __init__(self, sched, wk):
        self.scheduler, self.worker = sched, wk

    def step(self):
        so = self.scheduler.schedule()
        self.worker.execute_model(so)
        out = self.worker.sample_tokens(None)
        return self.scheduler.update_from_output(so, out), True


@pytest.fixture
def loop(monkeypatch):
    """A Core whose methods go through the runners of the real hook specs, the gate in use."""
    es, ws = engine_core._State(), worker._State()
    es.finished, es.identity_done = [], True
    es.set_sample(EVERY)
    ws.identity_done = True
    rec = Recorder(1 << 16, None)
    for mod, st in ((engine_core, es), (worker, ws)):
        monkeypatch.setattr(mod, "S", st)
        monkeypatch.setattr(mod, "recorder", lambda: rec)
        monkeypatch.setattr(mod, "RECORDER", [rec])     # the hooks read RECORDER[0] first
    specs = {h.name: h for h in engine_core.HOOKS + worker.HOOKS}
    targets = {"engine.step": (Core, "step"), "engine.schedule": (Scheduler, "schedule"),
               "engine.update_from_output": (Scheduler, "update_from_output"),
               "worker.execute_model": (Worker, "execute_model"), "worker.sample_tokens": (Worker, "sample_tokens")}
    runners = {}
    for name, (cls, method) in targets.items():
        runners[name] = r = HookRunner(specs[name])
        monkeypatch.setattr(cls, method, r.bind(vars(cls)[method]))
    GATE.use(runners.values())
    bounds.MODE.use(runners.values())
    bounds.MODE.arrive(engine=True)                   # as the first step's pre does (the step is the clock)
    yield Core(Scheduler(), Worker()), runners, rec
    GATE.use(())
    bounds.MODE.use(())
    bounds.MODE.reset()


def test_gated_hooks_run_only_on_recorded_steps(loop):
    core, runners, rec = loop
    for _ in range(40):
        core.step()
    recorded = [k for k in range(1, 41) if k % EVERY in (0, 1)]
    records = rec.take()
    steps = [RangeRecord._make(r).step for r in records if r[0] == Span.STEP]
    executions = [RangeRecord._make(r) for r in records if r[0] == Span.WORKER_EXECUTE]
    assert steps == recorded
    assert [e.data[0][STAMP_STEP] for e in executions] == recorded
    # the gated hooks ran on the recorded steps only, the step and scheduler hooks on every step. The gated ones are
    # timed in the step's windows (bounds.Mode: the step is this process's clock) and count no calls down: what they
    # recorded says where they ran. The update, a bounds hook, noted its bounds on the recorded steps only: each
    # recorded step's record holds them, and none is left over
    samples = [Interval._make(r).step for r in records if r[0] == Span.WORKER_SAMPLE]
    assert samples == recorded
    assert runners["worker.execute_model"].windowed and runners["worker.sample_tokens"].windowed
    updates = [RangeRecord._make(r).data for r in records if r[0] == Span.STEP]
    assert all(step_record(d).update_start for d in updates) and not bounds.UPDATES
    assert runners["engine.step"].calls == 40
    # the schedule is a bounds hook too (its consumer, engine_core.scheduled, takes its bounds at once): it counts no
    # calls down, and what it did on every step shows in the records. Each recorded step kept its schedule's bounds,
    # and each light step was counted at scheduling (SkippedSteps.executed of the next recorded step)
    assert runners["engine.schedule"].windowed and runners["engine.schedule"].calls == 0
    kept = [step_record(d) for d in updates]
    assert all(0 < k.schedule_start <= k.schedule_end for k in kept)
    assert sum(k.skipped[0] for k in kept) == 40 - len(recorded)
    # a gap is measured from a recorded predecessor only: the second step of each pair
    last_end = {e.data[0][STAMP_STEP]: e.data[1] for e in executions}
    assert [k for k in recorded if last_end[k]] == [k for k in recorded if k - 1 in recorded]
    assert not GATE.shut                # step 40 is recorded


def test_gate_pause_and_failure_are_separate():
    r = HookRunner(Hook("t.g", "m", "C.f", lambda o, a, k: 1, recorded_only=True))
    r.gate(True)
    r.pause(False)
    assert not r.active
    r.gate(False)                       # still paused
    assert not r.active
    r.pause(True)
    assert r.active
    r.fail(ValueError("x"))
    r.gate(True)
    r.gate(False)                       # a failed hook stays off through the gate
    assert not r.active and r.failed
    r.pause(True)                       # resuming re-enables it, as before
    assert r.active


def test_gate_shut_runs_its_callbacks_once_per_shut():
    seen = []
    gate = type(GATE)()
    gate.on_shut(lambda: seen.append(1))
    gate.use([HookRunner(Hook("t.a", "m", "C.f", lambda o, a, k: 1, recorded_only=True)),
              HookRunner(Hook("t.b", "m", "C.f", lambda o, a, k: 1))])
    assert [r.spec.name for r in gate.runners] == ["t.a"]
    gate.close()
    assert seen == [1] and not gate.runners[0].active
    gate.open()
    assert gate.runners[0].active and not gate.shut


def test_gate_never_assigns_to_vllms_class():
    """Attached the way the plugin attaches (wrapping.attach): shutting and opening the gate changes the
    runner's flag only. The class keeps our function through every cycle (an assignment to a class attribute
    would invalidate CPython's specialized attribute loads of that class, vLLM's Scheduler and model runner:
    benchmarks/gpu/type_version_check.py); while shut, vLLM's method runs without ``pre``."""
    from vllm_w2ext.hooks.wrapping import attach, is_wrapped
    calls = []
    assigned = []

    class Meta(type):
        def __setattr__(cls, name, value):
            assigned.append(name)
            super().__setattr__(name, value)

    class Target(metaclass=Meta):
        def f(self, x):
            return x + 1

    module = NS(Target=Target)
    r = HookRunner(Hook("t.f", "m", "Target.f", lambda o, a, k: calls.append(a) or 1, lambda s, res, e: None,
                        recorded_only=True))
    gate = type(GATE)()
    gate.use([r])
    assert attach(r, module) and is_wrapped(Target, "f") and assigned == ["f"]
    ours = vars(Target)["f"]
    bound_before = Target().f
    for _ in range(3):
        gate.close()
        assert Target().f(1) == 2 and bound_before(2) == 3 and calls == []
        gate.open()
    assert vars(Target)["f"] is ours and assigned == ["f"]          # attached once, never assigned again
    assert Target().f(3) == 4 and calls == [(3,)]
    gate.use(())


def test_hook_has_the_methods_own_parameters():
    """A hook's function copies the method's parameters (no argument packing, fully traced or sampled): off, it
    calls vLLM's method with the caller's values, ``pre`` untouched; on, ``pre`` sees the required parameters
    positionally and the defaulted ones by keyword, however the caller passed them, and ``post`` the method's
    result. A decorator's ``(*args, **kwargs)`` is seen through; a signature it cannot copy keeps the generic
    function, and so does a constructor."""
    import functools
    import inspect

    seen, results = [], []

    def pre(o, a, k):
        seen.append((a, dict(k)))
        return 1

    def deco(f):
        @functools.wraps(f)
        def inner(*args, **kwargs):
            return f(*args, **kwargs)
        return inner

    class Target:
        def f(self, so, out=None, *, flag=False):
            return (so, out, flag)

        @deco
        def g(self, so):
            return so

        def h(self, *items):
            return items

        def k(self, so, x=None, **extra):
            return (so, x, extra)

        def q(self, so, *, must):
            return (so, must)

    runners = {}
    for name in ("f", "g", "h", "k"):
        r = runners[name] = HookRunner(Hook(f"t.{name}", "m", f"Target.{name}", pre,
                                            lambda s, res, e: results.append(res), recorded_only=True))
        r.left = -1                 # no timed call (it goes through the generic halves)
        setattr(Target, name, r.bind(vars(Target)[name]))
    assert list(inspect.signature(Target.f).parameters) == ["self", "so", "out", "flag"]
    assert Target.f.__w2ext_runner__ is runners["f"] and Target.f.__wrapped__ is not None
    t = Target()
    for r in runners.values():
        r.gate(True)
    assert t.f(1) == (1, None, False) and t.f(so=2, flag=True) == (2, None, True) and t.g(5) == 5
    assert t.h(1, 2) == (1, 2) and t.k(1, y=2) == (1, None, {"y": 2}) and seen == []
    for r in runners.values():
        r.gate(False)
    assert t.f(so=3, out=4) == (3, 4, False) and t.g(6) == 6 and t.h(7) == (7,)
    assert t.k(8, y=9) == (8, None, {"y": 9})
    assert seen == [((3,), {"out": 4, "flag": False}), ((6,), {}), ((7,), {}), ((8,), {"x": None, "y": 9})]
    assert list(inspect.signature(Target.k).parameters) == ["self", "so", "x", "extra"]
    assert results == [(3, 4, False), 6, (7,), (8, None, {"y": 9})]
    # a required keyword-only parameter: by keyword to pre, and the timed call (the generic halves) gets it so too
    r = HookRunner(Hook("t.q", "m", "Target.q", pre, lambda s, res, e: results.append(res)))
    Target.q = r.bind(vars(Target)["q"])
    r.left = 2                                                               # the timed call: the second
    assert t.q(1, must=2) == (1, 2) and t.q(so=3, must=4) == (3, 4)           # the second call is the timed one
    assert seen[-2:] == [((1,), {"must": 2}), ((3,), {"must": 4})] and results[-2:] == [(1, 2), (3, 4)]
    generic = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS                    # (instance, *args, **kwargs)
    assert Target.h.__code__.co_flags & generic == generic
    init = HookRunner(Hook("t.i", "m", "Target.__init__", pre, None)).bind(vars(Target)["f"].__wrapped__)
    assert init.__code__.co_flags & generic == generic                      # a constructor: the generic front
