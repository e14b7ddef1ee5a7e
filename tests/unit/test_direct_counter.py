"""The direct self-cost counter: each C front (``hooks/_cfront.c``) times every call it takes itself, pre and post
(a bounds hook's clock reads and append), never vLLM's method; ``selfcost.direct`` sums the fronts and the metrics
count it (``vllm_w2ext_hook_direct_seconds_total``, ``..._calls_total``). Planted: a method, a ``pre`` and a ``post``
that spin known times (the method far longer, so that any of it in the figure shows); calls passed on to the Python
front (marks wanted, the sampled counters' timed call) are not counted. The spins are wall time, so a preempted
call reads longer, never shorter: the bounds below allow for that one way only."""
import pytest
from test_hook_cost_engine_fronts import spin

from vllm_w2ext import config
from vllm_w2ext.hooks.bounds import buffer as bounds_buffer
from vllm_w2ext.hooks.runner import CFront, HookRunner
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.telemetry import selfcost
from vllm_w2ext.telemetry.metrics import StepMetrics
from vllm_w2ext.telemetry.pipeline import Pipeline
from vllm_w2ext.telemetry.wire import ZERO_COST

_cfront = pytest.importorskip("vllm_w2ext.hooks._cfront", reason="the C front is not built")

METHOD_US, PRE_US, POST_US = 3000, 300, 500
CALLS = 20


class Target:
    def method(self, so, out=None):
        spin(METHOD_US)
        return so


def ns_of(ticks: int) -> float:
    (t0, n0), (t1, n1) = _cfront.clock()
    return ticks * (n1 - n0) / (t1 - t0)


def front_of(spec: Hook, **runner_state) -> tuple:
    r = HookRunner(spec)
    r.left = 1 << 30                    # no sampled (timed) call unless the test asks for one
    for k, v in runner_state.items():
        setattr(r, k, v)
    front = r.bind(vars(Target)["method"])
    assert type(front) is CFront
    return r, front


def test_every_call_is_timed_pre_and_post_and_not_the_method(no_marks):
    _, front = front_of(Hook("t.direct", __name__, "Target.method", lambda i, a, k: spin(PRE_US) or 1,
                             lambda st, res, err: spin(POST_US)))
    before = selfcost.direct()
    each = []
    for i in range(CALLS):
        spent = front.spent
        assert front(Target(), i) == i
        each.append(front.spent - spent)
    assert front.calls == CALLS
    per_call = ns_of(min(each)) / 1e3              # a call preempted past a spin's end reads longer, never shorter
    assert PRE_US + POST_US <= per_call * 1.02 and per_call < PRE_US + POST_US + METHOD_US / 2, per_call
    ns, calls = selfcost.direct()                  # the process's fronts summed, this one's among them
    assert calls - before[1] == CALLS and ns >= before[0] + ns_of(front.spent) * 0.98


def test_a_bounds_hooks_calls_are_timed_without_the_method(no_marks):
    buf = bounds_buffer()
    r, front = front_of(Hook("t.direct_bounds", __name__, "Target.method", lambda i, a, k: None,
                             lambda st, res, err: None, bounds=buf, bounds_keep="arg"))
    r.set_bounds(True, True)
    for i in range(CALLS):
        assert front(Target(), i) == i
    assert buf[-1][2] == CALLS - 1 and front.calls == CALLS       # (the buffer keeps the last few)
    assert 0 < ns_of(front.spent) / CALLS / 1e3 < METHOD_US / 4      # its clock reads and append only


def test_calls_passed_to_the_python_front_are_not_counted(no_marks):
    r, front = front_of(Hook("t.direct_slow", __name__, "Target.method", lambda i, a, k: 1,
                             lambda st, res, err: spin(20)))     # (a post long enough to read > 0 ticks)
    no_marks[0] = True                             # marks wanted: every call through the Python front
    front(Target(), 1)
    assert front.calls == 0 and front.spent == 0
    no_marks[0] = False
    r.left = 1                                     # the countdown's timed call: the Python front's
    front(Target(), 2)
    assert front.calls == 0
    front(Target(), 3)                             # the next one is the front's again
    assert front.calls == 1 and front.spent > 0


def test_the_direct_counter_goes_out_with_the_own_counters():
    p = Pipeline(config.Settings())
    cost = p.self_cost()
    ns, calls = selfcost.direct()
    assert cost.hook_direct_calls <= calls and abs(cost.hook_direct_s - ns / 1e9) < 1 and cost.hook_direct_s >= 0
    m = StepMetrics()
    planted = cost._replace(hook_direct_s=0.25, hook_direct_calls=1000)
    m.self_cost("engine_core", planted)
    m.self_cost("engine_core", planted)            # the same report again: counted once
    fams = {f.name: f for f in m.registry.collect()}
    assert [s.value for s in fams["vllm_w2ext_hook_direct_seconds"].samples if s.name.endswith("_total")] == [0.25]
    assert [s.value for s in fams["vllm_w2ext_hook_direct_calls"].samples if s.name.endswith("_total")] == [1000]
    none = StepMetrics()                           # no C front took a call: no series at all
    none.self_cost("frontend", planted._replace(hook_direct_s=0.0, hook_direct_calls=0))
    fams = {f.name: f for f in none.registry.collect()}
    assert not fams["vllm_w2ext_hook_direct_seconds"].samples and fams["vllm_w2ext_hook_self_seconds"].samples


def test_the_direct_counter_is_split_by_hook(no_marks):
    """Two hooks whose posts spin a known 10:1: ``direct_by_hook`` names both, each with its own fronts' time, in the
    planted order (a preempted spin reads longer, so the ratio is only bounded below loosely); the metrics carry each
    under its ``hook`` label, counted once per report as the total is."""
    light = Hook("t.direct_light", __name__, "Target.method", lambda i, a, k: 1, lambda st, res, err: spin(40))
    heavy = Hook("t.direct_heavy", __name__, "Target.method", lambda i, a, k: 1, lambda st, res, err: spin(400))
    (_, f_light), (_, f_heavy) = front_of(light), front_of(heavy)
    for _ in range(CALLS):
        f_light(Target(), 1)
        f_heavy(Target(), 1)
    by_hook = selfcost.direct_by_hook()
    assert by_hook["t.direct_heavy"] > 3 * by_hook["t.direct_light"] > 0
    assert abs(by_hook["t.direct_heavy"] - ns_of(f_heavy.spent) / 1e9) < 1e-6
    m = StepMetrics()
    report = ZERO_COST._replace(hook_direct_s=sum(by_hook.values()), hook_direct_calls=400, hook_direct_by_hook=by_hook)
    m.self_cost("engine_core", report)
    m.self_cost("engine_core", report)
    fams = {f.name: f for f in m.registry.collect()}
    got = {s.labels["hook"]: s.value for s in fams["vllm_w2ext_hook_direct_by_hook_seconds"].samples
           if s.name.endswith("_total")}
    assert got["t.direct_heavy"] == by_hook["t.direct_heavy"] and got["t.direct_light"] == by_hook["t.direct_light"]


def test_a_hook_marked_not_direct_is_not_counted(no_marks):
    """The shutdown hooks (``Hook.direct`` False): their one call waits for the exporters' last flush, not step work;
    their fronts take calls as any other but stay out of ``selfcost.direct``."""
    from vllm_w2ext.hooks import lifecycle
    assert all(not h.direct for h in lifecycle.HOOKS)
    before = list(selfcost.fronts)
    _, front = front_of(Hook("t.not_direct", __name__, "Target.method", lambda i, a, k: 1, lambda st, res, err: None,
                             direct=False))
    front(Target(), 1)
    assert front.calls == 1 and selfcost.fronts == before


def test_collections_are_counted_and_timed(monkeypatch):
    """Python's collections in the process (``selfcost.collections``, ``vllm_w2ext_python_gc_seconds_total`` and
    ``..._collections_total``): planted, N explicit collections of a known cyclic garbage, each far longer than the
    callback's own cost. Automatic collections off, the count rises by N, the time by about what the collections took
    by the wall clock around them (never more, as the callback times inside gc.collect), and
    the metrics carry both, counted once per report; with none timed yet, no series."""
    import gc
    import time
    from vllm_w2ext.hooks.runner import _gc_phase
    monkeypatch.setattr(selfcost, "_collections", [_cfront.collections])   # as the runner registers them
    monkeypatch.setattr(selfcost, "_front_clock", [_cfront.clock])         # (with its first counting front)
    added = _gc_phase not in gc.callbacks
    if added:
        gc.callbacks.append(_gc_phase)
    gc.disable()                                      # only the planted collections (the junk's making sets some off)
    try:
        s0, n0 = selfcost.collections()
        wall = 0.0
        for _ in range(5):
            junk = [[] for _ in range(50_000)]
            for a, b in zip(junk, junk[1:]):
                a.append(b)
                b.append(a)
            del junk, a, b
            t0 = time.perf_counter()
            gc.collect()
            wall += time.perf_counter() - t0
        s1, n1 = selfcost.collections()
    finally:
        gc.enable()
        if added:
            gc.callbacks.remove(_gc_phase)
    assert n1 - n0 == 5
    assert 0.5 * wall < s1 - s0 <= wall * 1.05 + 1e-4
    m = StepMetrics()
    m.self_cost("engine_core", ZERO_COST)
    fams = {f.name: f for f in m.registry.collect()}
    assert not [s for s in fams["vllm_w2ext_python_gc_seconds"].samples if s.name.endswith("_total")]
    report = ZERO_COST._replace(gc_s=s1, gc_collections=n1)
    m.self_cost("engine_core", report)
    m.self_cost("engine_core", report)
    fams = {f.name: f for f in m.registry.collect()}
    total = {f: [s.value for s in fams[f].samples if s.name.endswith("_total")]
             for f in ("vllm_w2ext_python_gc_seconds", "vllm_w2ext_python_gc_collections")}
    assert total == {"vllm_w2ext_python_gc_seconds": [s1], "vllm_w2ext_python_gc_collections": [n1]}
