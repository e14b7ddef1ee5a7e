"""Bounds hooks (spec.Hook.bounds): where no marks are wanted their front takes the call's two clock readings
itself and appends ``spec.Bounds`` for the enclosing hook that reads them, instead of calling ``pre`` and
``post``. Known answers: the entry (start, end, first argument, error) of a call, the error re-raised as it was;
``pre``/``post`` in its place with marks, on a timed call and for an injected fault; nothing while off; and on the
real hooks (update_from_output read by the step's post, the V1 forward by the execution's post) the same spans
through the front as through ``pre``/``post``."""
import dataclasses
import itertools
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks import bounds, engine_core, runner, worker
from vllm_w2ext.hooks.bounds import Bounds
from vllm_w2ext.hooks.bounds import buffer as bounds_buffer
from vllm_w2ext.hooks.runner import GATE, HookRunner
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.steps.assemble import Assembler
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.vocab import Attr, Span


class Target:
    def method(self, so, out=None):
        if so == "raise":
            raise KeyError(so)
        return ("ran", so, out)


FRONT = ["c"]                  # which front ``bind_front`` hands out: the C one where built, or the Python one


@pytest.fixture(autouse=True, params=["c", "python"])
def front_kind(request):
    """Every test here twice: through the C front (``hooks/_cfront.c``) and through the Python front alone (where
    the extension is not built; also every C front's way for calls that are not fast)."""
    if request.param == "c" and runner.CFront is None:
        pytest.skip("the C front is not built here")
    FRONT[0] = request.param
    yield request.param
    FRONT[0] = "c"


def bind_front(r: HookRunner, fn):
    front = r.bind(fn)
    return runner.python_front(front) if FRONT[0] == "python" else front


@pytest.fixture
def marks(no_marks):
    return no_marks


def bound(calls: list, keep="arg", fault=""):
    """A bounds hook on Target.method (pre and post note their calls), its buffer and its front."""
    buf = bounds_buffer()

    def pre(instance, args, kwargs):
        calls.append(("pre", args, dict(kwargs)))
        return [0, args[0]]

    def post(state, result, error):
        calls.append(("post", result, error))
        buf.append((state[0], 1, state[1], error))

    r = HookRunner(Hook("t.bounds", "m", "Target.method", pre, post, bounds=buf, bounds_keep=keep), fault)
    r.set_bounds(True, True)                          # as bounds.Mode makes it under the engine step's clock
    return r, buf, bind_front(r, vars(Target)["method"])


def test_a_call_leaves_its_bounds_and_no_pre_or_post(marks):
    calls = []
    r, buf, front = bound(calls)
    assert front(Target(), "so-1", out=3) == ("ran", "so-1", 3)
    first = Bounds._make(buf[-1])
    assert front(Target(), so="so-2") == ("ran", "so-2", None)           # the first argument by keyword too
    second = Bounds._make(buf[-1])                    # (the last call: what a consumer takes)
    assert calls == []
    assert first.kept == "so-1" and second.kept == "so-2" and first.error is None is second.error
    assert 0 < first.start <= first.end <= second.start <= second.end
    _, buf2, front2 = bound(calls, keep="")
    front2(Target(), "so-3")
    assert buf2[0][2] is None
    _, buf3, front3 = bound(calls, keep="result")
    front3(Target(), "so-4")
    assert buf3[0][2] == ("ran", "so-4", None) and calls == []


def test_the_error_is_noted_and_re_raised(marks):
    calls = []
    _, buf, front = bound(calls)
    with pytest.raises(KeyError) as info:
        front(Target(), "raise")
    b = Bounds._make(buf[-1])
    assert b.error is info.value and b.kept == "raise" and b.start <= b.end and calls == []


def test_with_marks_pre_and_post_run_instead(marks):
    calls = []
    _, buf, front = bound(calls)
    marks[0] = True
    assert front(Target(), "so") == ("ran", "so", None)
    assert [c[0] for c in calls] == ["pre", "post"] and calls[0][1] == ("so",)
    assert list(buf) == [(0, 1, "so", None)]          # what this test's post appends, not the front


def test_a_timed_call_notes_the_same_through_enter_and_exit(marks, monkeypatch):
    """A call inside its clock's timed call (a window open) is timed through the runner's enter/exit, as the native
    observers drive it: the same Bounds, no pre or post, both halves standing for the window's calls; its own
    countdown untouched."""
    weights = []
    monkeypatch.setattr(runner, "_sample", lambda c0, w0, weight: weights.append(weight))
    for keep, kept in (("arg", "so"), ("result", ("ran", "so", None)), ("", None)):
        calls = []
        r, buf, front = bound(calls, keep=keep)
        left = r.left
        r.set_window(5)                               # the clock's timed call, standing for 5 calls, is open
        assert not r.fast
        assert front(Target(), "so") == ("ran", "so", None)
        b = Bounds._make(buf[-1])
        assert calls == [] and b.kept == kept and b.error is None and 0 < b.start <= b.end
        with pytest.raises(KeyError):
            front(Target(), "raise")
        assert isinstance(buf[-1][3], KeyError) and buf[-1][2] == ("raise" if keep == "arg" else None)
        assert weights == [5, 5, 5, 5] and r.left == left
        weights.clear()
        r.set_window(0)
        assert r.fast
        front(Target(), "so")
        assert weights == [] and buf[-1][2] == kept and buf[-1][3] is None


def test_the_clock_times_the_bounds_hooks_inside_its_timed_calls_and_the_estimate_is_unbiased(marks, monkeypatch):
    """Known answer: a clock (the engine step) whose every call holds 3 calls of a bounds hook. The clock counts its
    calls down as any hook does; each timed call opens a window, and the bounds hook's calls in it are timed with the
    clock call's weight. Over the run the weights of the bounds hook's timed halves sum to exactly 3 x 2 x the clock
    calls counted up to its last timed one, as the clock's own do to 2 x those calls; none of its calls outside a
    window is timed, and its countdown never moves."""
    samples = []
    monkeypatch.setattr(runner, "_sample", lambda c0, w0, weight: samples.append((who[0], weight)))
    who = ["clock"]
    _, buf, inner = bound([])
    inner_runner = inner.__w2ext_runner__

    class Clock:
        def step(self):
            who[0] = "bounds"
            for _ in range(3):
                inner(Target(), "so")
            who[0] = "clock"
            return 1

    clock = HookRunner(Hook("engine.step", "m", "Clock.step", lambda i, a, k: 0, lambda st, res, err: None,
                            clock="engine"))
    step = clock.bind(vars(Clock)["step"])
    saved = bounds.MODE.bounded, bounds.MODE.clock
    bounds.MODE.bounded, bounds.MODE.clock = [inner_runner], "engine"
    left = inner_runner.left
    try:
        for _ in range(5000):
            step(Clock())
    finally:
        bounds.MODE.bounded, bounds.MODE.clock = saved
    assert bounds.MODE.window == 0 and inner_runner.fast and inner_runner.left == left
    counted = clock.counted                           # clock calls up to (and with) its last timed one
    assert 5000 - 2 * 64 < counted <= 5000
    by = {w: sum(x for k, x in samples if k == w) for w in ("clock", "bounds")}
    assert by == {"clock": 2 * counted, "bounds": 3 * 2 * counted}
    assert 1 <= len(buf) <= 4                         # no consumer here: the calls do not pile up


def test_an_injected_fault_reaches_pre_and_off_notes_nothing(marks):
    calls = []
    r, buf, front = bound(calls, fault="t.bounds")
    assert front(Target(), "so") == ("ran", "so", None)
    assert r.failed and not r.active and len(buf) == 0
    r2, buf2, front2 = bound(calls)
    r2.gate(True)                                     # a light step (VLLM_W2EXT_SAMPLE)
    front2(Target(), "so")
    r2.gate(False)
    r2.pause(False)
    front2(Target(), "so")
    assert len(buf2) == 0 and calls == []


# -- the real hooks ------------------------------------------------------------------------------------
class Runner:
    def _model_forward(self, x=None):
        return None


class Worker:
    def __init__(self):
        self.model_runner = Runner()

    def execute_model(self, so):
        return self.model_runner._model_forward()

    def sample_tokens(self, grammar):
        return "sampled"


class Scheduler:
    def __init__(self):
        self.requests = {"a": NS(num_prompt_tokens=12, trace_headers=None, arrival_time=0.0)}
        self.running, self.waiting = ["a"], []

    def schedule(self):
        cached = NS(req_ids=["a"], resumed_req_ids=set(), num_output_tokens=[3], num_computed_tokens=[8])
        return NS(scheduled_new_reqs=[], scheduled_cached_reqs=cached, num_scheduled_tokens={"a": 1},
                  total_num_scheduled_tokens=1, preempted_req_ids=set(), finished_req_ids=set(),
                  scheduled_spec_decode_tokens={})

    def update_from_output(self, so, out):
        return {}


class Core:
    def __init__(self):
        self.scheduler, self.worker = Scheduler(), Worker()

    def step(self):
        so = self.scheduler.schedule()
        self.worker.execute_model(so)
        out = self.worker.sample_tokens(None)
        return self.scheduler.update_from_output(so, out), True


TARGETS = {"engine.step": (Core, "step"), "engine.schedule": (Scheduler, "schedule"),
           "engine.update_from_output": (Scheduler, "update_from_output"),
           "worker.execute_model": (Worker, "execute_model"), "worker.sample_tokens": (Worker, "sample_tokens"),
           "worker.forward_v1": (Runner, "_model_forward")}


class Timer:
    """Stands for the worker's GpuTimer: what ``stop`` was handed."""

    def __init__(self):
        self.stops = []

    def stop(self, step, launch, event=None):
        self.stops.append((step, launch))

    def forget_previous(self):
        self.stops.append("forget")


def run_steps(monkeypatch, in_process: bool, n: int = 3, every: int = 1) -> tuple:
    """``n`` sync steps through runners of the real specs, the worker in the EngineCore's process: its hooks as
    bounds hooks read by the step's post (``in_process``: bounds.MODE started), or every hook through pre/post
    (their bounds taken off the spec). The spans assembled, and the GPU timer's stops."""
    es, ws = engine_core._State(), worker._State()
    es.finished, es.identity_done, ws.identity_done = [], True, True
    es.set_sample(every)
    ws.timer = Timer()
    rec = Recorder(1 << 12, None)
    for mod, st in ((engine_core, es), (worker, ws)):
        monkeypatch.setattr(mod, "S", st)
        monkeypatch.setattr(mod, "recorder", lambda: rec)
        monkeypatch.setattr(mod, "RECORDER", [rec])
    bounds.clear()
    bounds.MODE.reset()                              # a process where neither has been seen yet
    specs = {h.name: h for h in engine_core.HOOKS + worker.HOOKS}
    runners = []
    for name, (cls, method) in TARGETS.items():
        spec = specs[name] if in_process else dataclasses.replace(specs[name], bounds=None)
        r = HookRunner(spec)
        r.left = 1 << 30
        runners.append(r)
        monkeypatch.setattr(cls, method, bind_front(r, vars(cls)[method].__dict__.get("__wrapped__",
                                                                                     vars(cls)[method])))
    bounds.MODE.use(runners)
    GATE.use(runners)
    ws.device_stop = lambda step, launch, result: ws.timer.stop(step, launch)     # stop_by_result, no carrier
    monkeypatch.setattr(bounds.MODE, "device_stop", ws.device_stop)
    if in_process:
        bounds.MODE.arrive(engine=True, worker=lambda: 0)
        bounds.MODE.start()
    assert [r.bounds_on for r in runners] == [in_process and specs[n].bounds is not None for n in TARGETS]
    core = Core()
    for _ in range(n):
        core.step()
    bounds.MODE.use(())
    bounds.MODE.reset()
    GATE.use(())
    assert not any(bounds.ALL)                       # every bounds entry read in its own step
    ids = itertools.count(1)
    assemble = Assembler(lambda h: None, lambda: next(ids), lambda: next(ids))
    spans = assemble([Range.from_record(x) for x in rec.take()])
    spans += assemble.drain()                       # executions held for device samples that will not come
    by_id = {s.span_id: s for s in spans}
    return ({(s.name, s.step): (by_id[s.parent_id].name if s.parent_id in by_id else None, untimed(s.attrs), s.error,
                                s.start_ns, s.end_ns, s.role, s.nested, Attr.GAP_CPU in (s.attrs or {}))
             for s in spans}, ws.timer.stops)


def untimed(attrs: dict | None) -> dict | None:
    """The attributes that are not timings (the gap's and the device's, which these runs' clocks set, down to
    which causes of idle time appear at all)."""
    return attrs and {k: v for k, v in attrs.items() if not k.startswith(("vllm.gap.", "vllm.device."))}


def test_the_worker_on_the_engine_thread_gets_the_same_spans_from_its_bounds(monkeypatch, marks):
    """Known answer: the spans the worker's hooks record through pre/post. Read from bounds, the execution, its
    forward and its sample come out with the same names, parents, steps, attributes (timings aside), roles and
    tracks; the update's batch is its step; the GPU timer stops once per step at the forward's start; the gap
    before each execution after the first is measured."""
    bounded, bounded_stops = run_steps(monkeypatch, True)
    plain, plain_stops = run_steps(monkeypatch, False)
    assert sorted(bounded) == sorted(plain)
    for key in bounded:
        assert bounded[key][:3] + bounded[key][5:] == plain[key][:3] + plain[key][5:], key
    for k in (1, 2, 3):
        parent, attrs, error, start, end, *_ = bounded[(Span.UPDATE, k)]
        assert parent == Span.STEP and attrs == {Attr.STEP_BATCH_ID: k} and error is None
        ex, fwd, sa = (bounded[(n, k)] for n in (Span.WORKER_EXECUTE, Span.FORWARD, Span.WORKER_SAMPLE))
        assert ex[0] == sa[0] == Span.STEP and fwd[0] == Span.WORKER_EXECUTE
        assert ex[3] <= fwd[3] <= fwd[4] <= ex[4] <= sa[3] <= sa[4] <= start <= end
        assert (k, fwd[3]) in bounded_stops
        assert ex[7] is (k > 1)                     # the gap before it measured (the same in both: compared above)
    assert bounded_stops == [s for s in bounded_stops if s != "forget"]
    assert [s for s, _ in bounded_stops] == [s for s, _ in plain_stops] == [1, 2, 3]


def test_sampled_steps_read_from_bounds_measure_gaps_after_a_recorded_one_only(monkeypatch, marks):
    """VLLM_W2EXT_SAMPLE=8: two consecutive steps in eight recorded, the worker's hooks off on the others (the
    gate). Read from bounds as through pre/post: an execution span on the recorded steps only, a gap measured on
    the second step of each pair only, the timer stopped on recorded steps only."""
    recorded = [k for k in range(1, 41) if k % 8 in (0, 1)]
    for in_process in (True, False):
        got, stops = run_steps(monkeypatch, in_process, 40, every=8)
        executed = sorted(k for (name, k) in got if name == Span.WORKER_EXECUTE)
        assert executed == recorded, in_process
        assert [k for k in executed if got[(Span.WORKER_EXECUTE, k)][7]] == [k for k in recorded if k - 1 in recorded]
        assert [s[0] for s in stops if s != "forget"] == recorded


def test_the_worker_becomes_a_bounds_hook_once_both_are_seen_and_back_if_the_step_hook_fails():
    """bounds.MODE: the in-process bounds hooks switch on at ``start`` (the engine step's post, once the engine step
    and the worker have set their identity in the process), never for an injected fault; a failed step hook (their
    consumer) switches them off again; instrumenting anew in a process already seen makes it ready again. The clock
    (self-cost, ``Mode.clock``): the worker's execution until the engine step runs in the process, then the step for
    every bounds hook; the worker's again once the step hook fails (the update then counts its own calls down)."""
    mode = bounds.MODE
    mode.reset()
    specs = {h.name: h for h in engine_core.HOOKS + worker.HOOKS}
    update, execute, sample = (HookRunner(specs[n]) for n in ("engine.update_from_output", "worker.execute_model",
                                                               "worker.sample_tokens"))
    faulty = HookRunner(specs["worker.forward_v1"], "worker.forward_v1")
    mode.use([update, execute, sample, faulty])
    try:
        assert (update.bounds_on, execute.bounds_on, sample.bounds_on, faulty.bounds_on) == (True, False, False, False)
        assert mode.clock == "worker" and [r.windowed for r in (update, execute, sample, faulty)] == [
            False, False, False, True]                                  # the forward runs inside the execution
        assert not update.fast
        mode.arrive(engine=True)
        assert not mode.ready
        assert mode.clock == "engine" and all(r.windowed for r in (update, execute, sample, faulty)) and update.fast
        mode.arrive(worker=lambda: 7)
        assert mode.ready and not execute.bounds_on
        mode.start()
        assert mode.in_process and mode.last_end == 7 and execute.bounds_on and sample.bounds_on
        assert not faulty.bounds_on and not mode.ready
        mode.failed(HookRunner(specs["engine.update_from_output"]))     # not the consumer: nothing changes
        assert execute.bounds_on
        assert mode.open_window(9) and not mode.open_window(3) and update.window == 9 and not update.fast
        mode.failed(HookRunner(specs["engine.step"]))                   # in its timed call: its window closes
        assert not mode.in_process and not execute.bounds_on and update.bounds_on
        assert mode.window == 0 == update.window and mode.clock == "worker" and not update.windowed
        assert faulty.windowed and not update.fast
        mode.arrive(engine=True, worker=lambda: 0)
        mode.use([update, execute, sample])                              # instrumented again
        assert mode.ready and not execute.bounds_on
    finally:
        mode.use(())
        mode.reset()


@pytest.mark.skipif(bounds._Slot is None, reason="the C extension is not built")
def test_a_slot_is_the_deque_its_consumers_read():
    """The hooks' buffer where the extension was built (``_cfront.Slot``): the last call noted, raw, read back as the
    Bounds tuple a deque held, the older calls gone as a consumer's pop and clear left them; bad input refused with
    the setting's shape named."""
    s = bounds.buffer()
    assert type(s) is bounds._Slot and len(s) == 0 and not s and list(s) == []
    with pytest.raises(IndexError):
        s.pop()
    so, err = object(), KeyError("e")
    s.append((1, 2, "old", None))
    s.append((10, 20, so, err))                       # replaces the call not taken
    assert len(s) == 1 and s[0] == s[-1] == (10, 20, so, err) and list(s) == [(10, 20, so, err)]
    with pytest.raises(IndexError):
        s[1]
    assert s.pop() == (10, 20, so, err) and len(s) == 0
    s.extend([(3, 4, None, None), (5, 6, "x", None)])
    assert list(s) == [(5, 6, "x", None)]
    s.clear()
    assert not s
    for bad in ((1, 2), [1, 2, None, None], ("a", 2, None, None)):
        with pytest.raises(TypeError):
            s.append(bad)
    assert not s
    big = 1 << 62                                     # int64 ns round-trip
    s.append((big, big + 1, None, None))
    assert s.pop()[:2] == (big, big + 1)
