"""The C front of a bounds hook (``hooks/_cfront.c``): what makes it a drop-in for the Python front on vLLM's class.
Known answers: a method call through an instance, the class and ``super()``; the same signature, and vLLM's function
back on detach; a fast call notes (start, end, first argument by position or by name, error) and runs no ``pre`` or
``post``, any other call goes through them; the error re-raised with vLLM's frames in its traceback; no reference
kept or lost per call. (``test_bounds_front.py`` runs every bounds-hook test through both fronts.) CI builds the
extension (``W2EXT_REQUIRE_C_FRONT=1`` in ``.ci/test``): there its absence is a failure, not a skip."""
import gc
import inspect
import os
import sys
import traceback
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks import runner, wrapping
from vllm_w2ext.hooks.bounds import buffer as bounds_buffer
from vllm_w2ext.hooks.runner import HookRunner
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.telemetry import recording


def test_built_where_ci_asks_for_it():
    if os.environ.get("W2EXT_REQUIRE_C_FRONT") == "1":
        assert runner.BoundsFront is not None, "the C extension vllm_w2ext.hooks._cfront was not built"


needs_c = pytest.mark.skipif(runner.BoundsFront is None, reason="the C front is not built here")


@pytest.fixture
def marks():
    saved = recording.PHASE_MARKS[0]
    recording.PHASE_MARKS[0] = False
    yield recording.PHASE_MARKS
    recording.PHASE_MARKS[0] = saved


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

    calls, buf = [], bounds_buffer()
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
    assert type(front) is runner.BoundsFront and wrapping.is_wrapped(Scheduler, "update")
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
    s.update(so, out)
    buf.clear()
    gc.collect()
    before = sys.getrefcount(so), sys.getrefcount(out), sys.getrefcount(s)
    for _ in range(1000):
        s.update(so, out)
        buf.clear()
        try:
            s.update("raise", out)
        except KeyError:
            pass
        buf.clear()
    gc.collect()
    assert (sys.getrefcount(so), sys.getrefcount(out), sys.getrefcount(s)) == before


@needs_c
def test_bad_arguments_name_what_is_wrong():
    r = HookRunner(Hook("t.x", "m", "C.x", lambda i, a, k: None, bounds=bounds_buffer()))
    args = (lambda self: None, lambda self: None, r)
    with pytest.raises(TypeError, match="'nope' is not a slot"):
        runner.BoundsFront(*args, "nope", recording.PHASE_MARKS, [].append, 0, None)
    with pytest.raises(ValueError, match="keep is 0, 1 or 2"):
        runner.BoundsFront(*args, "fast", recording.PHASE_MARKS, [].append, 3, None)
    front = runner.BoundsFront(*args, "fast", recording.PHASE_MARKS, [].append, 0, None)
    with pytest.raises(TypeError, match="must be a callable"):
        front.__w2ext_fn__ = 1
    front.__w2ext_fn__ = print
    assert front.__w2ext_fn__ is print
