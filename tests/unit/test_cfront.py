"""The C front (``hooks/_cfront.c``): what makes it a drop-in for the Python front on vLLM's class. Known answers: a
method call through an instance, the class and ``super()``; the same signature, and vLLM's function back on detach;
a bounds hook's fast call notes (start, end, first argument by position or by name, error) and runs no ``pre`` or
``post``, any other call goes through them; the error re-raised with vLLM's frames in its traceback; any other hook's
calls see, call for call, what the Python front's see (``pre``'s arguments, ``post``'s, the countdown, faults, the
timed call); no reference kept or lost per call. (``test_bounds_front.py`` runs every bounds-hook test through both
fronts.) CI builds the extension (``W2EXT_REQUIRE_C_FRONT=1`` in ``.ci/test``): there its absence is a failure."""
import gc
import inspect
import os
import sys
import traceback
from collections import deque
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks import runner, wrapping
from vllm_w2ext.hooks.bounds import buffer as bounds_buffer
from vllm_w2ext.hooks.runner import HookRunner
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.telemetry import recording


def test_built_where_ci_asks_for_it():
    if os.environ.get("W2EXT_REQUIRE_C_FRONT") == "1":
        assert runner.CFront is not None, "the C extension vllm_w2ext.hooks._cfront was not built"


needs_c = pytest.mark.skipif(runner.CFront is None, reason="the C front is not built here")


@pytest.fixture
def marks(no_marks):
    return no_marks


def make(keep="arg"):
    """A class whose ``update(so, out=None)`` is hooked by a bounds hook (attached as the plugin attaches it), its
    runner, its buffer and what its pre and post saw."""
    class Scheduler:
        def update(self, so, out=None):
            if so == "raise":
                raise KeyError(so)
            return ("ran", so, out)

    class Child(Scheduler):
        def update(self, so, out=None):
            return ("child",) + super().update(so, out)

    # a deque, not the hooks' buffer (bounds.buffer(), a Slot: the last call only, test_bounds_front): these tests
    # look at every call noted
    calls, buf = [], deque(maxlen=4)
    own = vars(Scheduler)["update"]
    spec = Hook("t.update", "m", "Scheduler.update", lambda i, a, k: calls.append(("pre", a, dict(k))) or 1,
                lambda st, res, err: calls.append(("post", res, err)), bounds=buf, bounds_keep=keep)
    r = HookRunner(spec)
    r.left = 1 << 30                                # no timed call in these tests
    r.set_bounds(True, True)
    module = NS(Scheduler=Scheduler)
    assert wrapping.attach(r, module)
    return module, Scheduler, Child, own, r, buf, calls


@needs_c
def test_a_method_on_the_class(marks):
    module, Scheduler, Child, own, r, buf, calls = make()
    front = vars(Scheduler)["update"]
    assert type(front) is runner.CFront and wrapping.is_wrapped(Scheduler, "update")
    assert Scheduler.update is front and front.__wrapped__ is own and front.__w2ext_runner__ is r
    assert front.__name__ == "update" and front.__qualname__ == own.__qualname__
    assert inspect.signature(Scheduler.update) == inspect.signature(own)
    assert inspect.signature(Scheduler().update) == inspect.signature(own.__get__(Scheduler()))
    s = Scheduler()
    assert s.update("a") == ("ran", "a", None)                      # through an instance
    assert getattr(s, "update")("b", 2) == ("ran", "b", 2)          # a bound method
    assert Scheduler.update(s, "c") == ("ran", "c", None)           # through the class
    assert Child().update("d") == ("child", "ran", "d", None)       # super()
    assert [b[2] for b in buf] == ["a", "b", "c", "d"] and calls == []
    wrapping.detach(r.spec, module)
    assert vars(Scheduler)["update"] is own


@needs_c
def test_fast_calls_note_bounds_others_run_pre_and_post(marks):
    _, Scheduler, _, _, r, buf, calls = make()
    s = Scheduler()
    assert s.update(out=1, so="kw") == ("ran", "kw", 1)            # the first argument by name, in any order
    assert s.update("pos", out=3) == ("ran", "pos", 3)
    (s0, e0, kept0, err0), (s1, e1, kept1, err1) = buf
    assert (kept0, err0, kept1, err1) == ("kw", None, "pos", None) and 0 < s0 <= e0 <= s1 <= e1
    assert calls == []
    buf.clear()
    marks[0] = True                                                 # marks wanted: pre and post
    assert s.update("m") == ("ran", "m", None)
    marks[0] = False
    r.set_window(3)                                                 # its clock's timed call is open: not fast
    assert s.update("w") == ("ran", "w", None)
    r.set_window(0)
    r.pause(False)                                                  # off: vLLM's method alone
    assert s.update("off") == ("ran", "off", None)
    r.pause(True)
    assert [c[0] for c in calls] == ["pre", "post"] and calls[0][1] == ("m",)
    assert [b[2] for b in buf] == ["w"]                            # the window's call through enter/exit


@needs_c
def test_the_error_is_noted_and_re_raised_with_its_traceback(marks):
    _, Scheduler, _, _, r, buf, calls = make()
    with pytest.raises(KeyError) as info:
        Scheduler().update("raise")
    start, end, kept, error = buf[-1]
    assert error is info.value and kept == "raise" and start <= end and calls == []
    assert "update" in [f.name for f in traceback.extract_tb(info.value.__traceback__)]     # vLLM's frame in it
    _, S2, _, _, _, buf2, _ = make(keep="result")
    with pytest.raises(KeyError):
        S2().update("raise")
    assert buf2[-1][2] is None and isinstance(buf2[-1][3], KeyError)
    assert S2().update("r") == buf2[-1][2] == ("ran", "r", None)


@needs_c
def test_no_reference_kept_or_lost_per_call(marks):
    _, Scheduler, _, _, r, buf, _ = make(keep="result")
    s, so, out = Scheduler(), object(), object()
    assert_no_reference_kept_or_lost(s.update, so, out, buf.clear)


def assert_no_reference_kept_or_lost(method, so, arg, forget) -> None:
    """300 calls of ``method(so, arg)`` and as many that raise (``method("raise", arg)``), ``forget()`` after each:
    the references to both arguments and to the method's instance are as many as before."""
    method(so, arg)
    forget()
    gc.collect()
    objs = (so, arg, method.__self__)
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(300):
        method(so, arg)
        forget()
        try:
            method("raise", arg)
        except KeyError:
            pass
        forget()
    gc.collect()
    assert [sys.getrefcount(o) for o in objs] == before


@needs_c
def test_bad_arguments_name_what_is_wrong():
    r = HookRunner(Hook("t.x", "m", "C.x", lambda i, a, k: None, bounds=bounds_buffer()))
    fn = lambda self: None                                                  # noqa: E731
    marks = recording.PHASE_MARKS

    def make_front(runner_=r, keep=0, layout=None):
        return runner.CFront(fn, fn, runner_, marks, [].append, keep, None, fn, None, layout, {})
    with pytest.raises(TypeError, match="has no slot active"):
        make_front(runner_=object())
    with pytest.raises(ValueError, match="keep is 0, 1 or 2"):
        make_front(keep=3)
    with pytest.raises(ValueError, match="layout is"):
        make_front(layout=(0, (), ()))
    with pytest.raises(ValueError, match="layout is"):
        make_front(layout=(1, ("a",), ()))
    front = make_front()
    with pytest.raises(TypeError, match="must be a callable"):
        front.__w2ext_fn__ = 1
    front.__w2ext_fn__ = print
    assert front.__w2ext_fn__ is print


# -- any other hook: call for call what the Python front does -------------------------------------------------
class Quiet(HookRunner):
    """A runner whose faults are only noted (no process-wide reporting in a unit test)."""
    __slots__ = ("faults",)

    def fail(self, exc):
        self.faults.append(repr(exc))
        self._set(True, self.paused, self.gated)


def traced(kind: str, monkeypatch):
    """A hook on ``Engine.schedule(self, so, budget=4)`` through the C front or the Python front alone: what its pre,
    post and the method saw, its runner, and the front. The timed call's halves are noted (``_sample``)."""
    seen = []
    monkeypatch.setattr(runner, "_sample", lambda c0, w0, weight: seen.append(("timed", weight)))

    def pre(instance, args, kwargs):
        seen.append(("pre", type(instance).__name__, args, dict(kwargs)))
        if args and args[0] == "pre-fails":
            raise ValueError("pre")
        return None if args and args[0] == "skip" else len(seen)

    def post(state, result, error):
        seen.append(("post", state, result, repr(error)))
        if result == ("ran", "post-fails", 4):
            raise ValueError("post")

    class Engine:
        def schedule(self, so, budget=4):
            seen.append(("method", so, budget))
            if so == "raise":
                raise KeyError(so)
            return ("ran", so, budget)

    r = Quiet(Hook("t.schedule", "m", "Engine.schedule", pre, post))
    r.faults = []
    front = r.bind(vars(Engine)["schedule"])
    if kind == "python":
        front = runner.python_front(front)
    else:
        assert type(front) is runner.CFront
    Engine.schedule = front
    return Engine, r, seen


# keywords: a defaulted one (the C front takes it: vLLM's callers pass process_outputs' so), a required one by name,
# one given twice, an unknown one (those three go the Python front's way, which raises the same TypeError)
CALLS = [(("a",), {}), (("b", 7), {}), (("c",), {"budget": 2}), ((), {"so": "d"}), (("skip",), {}),
         (("raise",), {}), (("pre-fails",), {}), (("e", 3), {"budget": 5}), (("f",), {"nope": 1}),
         ((), {"so": "g", "budget": 6})]


def drive(Engine, r):
    """Every kind of call, then the countdown run down to a timed call, then a post that fails (the hook off after
    it), then a call while off."""
    e, out = Engine(), []
    for args, kwargs in CALLS:
        r.pause(True)                                      # on again (a failing pre switched it off)
        try:
            out.append(e.schedule(*args, **kwargs))
        except (KeyError, TypeError) as err:
            out.append(repr(err))
    r.pause(True)
    r.left = 3
    for so in ("t1", "t2", "t3", "t4"):
        out.append(e.schedule(so))
    out.append(e.schedule("post-fails"))
    out.append(e.schedule("off"))
    return out, r.left, r.gap, r.failed, list(r.faults)


@needs_c
def test_any_other_hook_sees_what_the_python_front_shows_it(marks, monkeypatch):
    """Known answer: the Python front's record of the same calls. Positional and defaulted arguments (pre gets the
    required ones as a tuple and the defaulted ones by name, given or not), keywords (handed to the Python front),
    a pre that records nothing, a method that raises (post sees it, it is raised again), a pre that fails (the
    method still runs), the countdown to the timed call (timed through the Python front, the count the same), a
    post that fails, and a call while the hook is off."""
    monkeypatch.setattr(runner, "_gap", lambda: 2)         # the same countdown in both
    got = {}
    for kind in ("python", "c"):
        Engine, r, seen = traced(kind, monkeypatch)
        got[kind] = drive(Engine, r), seen
    assert got["c"] == got["python"]
    (out, left, gap, failed, faults), seen = got["c"]
    assert out[:3] == [("ran", "a", 4), ("ran", "b", 7), ("ran", "c", 2)] and faults == [
        "ValueError('pre')", "ValueError('post')"] and failed
    assert ("pre", "Engine", ("b",), {"budget": 7}) in seen and ("pre", "Engine", ("a",), {"budget": 4}) in seen
    assert ("timed", 2) in seen and ("post", 5, None, "KeyError('raise')") not in seen      # states count calls
    assert [x for x in seen if x[0] == "method"][-1] == ("method", "off", 4)
    assert ("pre", "Engine", ("c",), {"budget": 2}) in seen and ("method", "g", 6) in seen
    assert "got multiple values" in out[7] and "unexpected keyword" in out[8]


@needs_c
def test_a_defaulted_parameter_by_keyword_is_the_c_fronts_call(marks, monkeypatch):
    """vLLM calls ``OutputProcessor.process_outputs(outs, engine_core_timestamp=..., iteration_stats=...)``: such a
    call (keywords naming defaulted parameters) is the C front's own, counted and timed by its direct counter, and its
    pre sees every defaulted parameter by name. A required one by keyword, or an unknown keyword, goes the Python
    front's way (not counted)."""
    Engine, r, seen = traced("c", monkeypatch)
    r.left = 1 << 20                                       # no timed call
    front, e = vars(Engine)["schedule"], Engine()
    calls = front.calls
    assert e.schedule("k", budget=9) == ("ran", "k", 9)
    assert front.calls == calls + 1 and ("pre", "Engine", ("k",), {"budget": 9}) in seen
    assert e.schedule(so="m") == ("ran", "m", 4) and front.calls == calls + 1
    with pytest.raises(TypeError):
        e.schedule("n", nope=1)
    assert front.calls == calls + 1


@needs_c
def test_no_reference_kept_or_lost_per_hooked_call(marks, monkeypatch):
    Engine, r, seen = traced("c", monkeypatch)
    r.left = 1 << 20                                       # no timed call
    assert_no_reference_kept_or_lost(Engine().schedule, object(), object(), seen.clear)
    assert r.left == (1 << 20) - 601 and not r.failed

    class ByKeyword(Engine):                               # the defaulted argument by keyword (vLLM's process_outputs)
        def by_keyword(self, so, budget):
            return self.schedule(so, budget=budget)
    assert_no_reference_kept_or_lost(ByKeyword().by_keyword, object(), object(), seen.clear)
    assert r.left == (1 << 20) - 1202 and not r.failed
