"""The one hook runner: run ``pre``, the call, ``post``; contain faults; sample the plugin's own cost.

Every way a hook is driven goes through :class:`HookRunner`: ``bind`` (a plain function set in place of
a sync method) and ``async_`` (a wrapt wrapper of a coroutine method), both attached by ``wrapping.py``,
and ``enter``/``exit`` from vLLM's native step observers (``native.py``). ``pre`` returning None means it
recorded nothing: ``post`` is not called (the cheap way out of a call that is not recorded). A fault inside
``pre``/``post`` disables that hook (counted, one log line) and never reaches the request;
``VLLM_W2EXT_FAULT_INJECT`` makes chosen hooks raise (tests). One call in ``selfcost.SAMPLE_EVERY`` on average
is timed (thread CPU and wall time of pre + post), async hooks included, at random gaps (1 to 2N-1 calls;
each sample weighs the gap before it): a fixed period would alias with anything periodic in the calls
(``VLLM_W2EXT_SAMPLE`` records 2 steps in every N, and a timed call every 64th would always land on a
recorded step).

A bounds hook (``hooks/bounds.py``) whose runner is ``bounds_on`` notes its call's start, end and what it keeps
in its buffer where no marks are wanted, in the front itself and in ``enter``/``exit``, instead of running ``pre``
and ``post``: two Python calls less per call, for the enclosing hook to read. Its calls all run inside calls of
its process's clock hook (the engine step, or the worker's execution where no engine step runs in the process:
``bounds.Mode.clock``), so it is timed inside the clock's timed calls (their window: each of its calls there
stands for as many calls as the clock's does) and counts no calls down itself: while ``fast`` (active, a bounds
hook, no window open) its front's way through is two clock readings and an append, nothing else.

Where the C extension was built (``hooks/_cfront.c``), the front on vLLM's class is a C ``Front`` with no Python frame
of its own: a bounds hook's fast calls, and any other hook's calls that are not timed, take their way in C (the same
``pre``, ``post``, countdown and fault handling); it hands every other call to the Python front (``python_front``).

A runner is ``active`` unless its hook failed, is paused (``Instrumentor.set_active``) or is gated
(``StepGate``: a ``recorded_only`` hook while the EngineCore runs a step it does not record); the hot path
reads that one flag. Nothing here assigns to a vLLM class after the hooks are attached: an assignment to
a class attribute invalidates every attribute load CPython has specialized for that class's instances
(vLLM's Scheduler, Worker, model runner: their ``self.x`` loads), and from Python 3.12 a class assigned to
about a thousand times is never specialized again (``benchmarks/gpu/type_version_check.py``). A sync
hook's function is written for the method's own parameters (``_exact_front``): no call packs its arguments
into a tuple and a dict and unpacks them again, and a light step's call to a gated hook costs a flag test and a
plain call.
"""
from __future__ import annotations

import functools
import gc
import inspect
import logging
import time
import types

from vllm_w2ext.hooks.bounds import MODE
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.telemetry import selfcost
from vllm_w2ext.telemetry.recording import PHASE_MARKS, fork_safe_random

try:
    from vllm_w2ext.hooks._cfront import Front as CFront    # the front in C, where it was built
    from vllm_w2ext.hooks._cfront import clock as _front_clock
    from vllm_w2ext.hooks._cfront import collections as _collections, gc_phase as _gc_phase
except ImportError:                                         # pragma: no cover - the Python front alone
    CFront = _front_clock = _gc_phase = _collections = None

log = logging.getLogger("vllm_w2ext")
_KEEP = {"": 0, "arg": 1, "result": 2}                  # Hook.bounds_keep as CFront takes it
# enter's result when post must not run: the hook is off, pre failed, or pre recorded nothing (returned None,
# the same signal, so every driver tests one value)
SKIP = None
_randrange = fork_safe_random().randrange           # a forked child times other calls than its parent
_cpu = time.thread_time_ns
_wall = time.perf_counter_ns
_time_ns = time.time_ns


def _gap() -> int:
    """Calls until the next timed one: uniform in 1 .. 2N-1 (mean N = selfcost.SAMPLE_EVERY)."""
    return _randrange(1, 2 * selfcost.SAMPLE_EVERY)


def _sample(c0: int, w0: int, weight: int) -> None:
    """End a timed half begun at (c0, w0), standing for ``weight`` calls; an empty section timed the same way
    right after it is the cost of the clock reads inside the half, taken out (see ``selfcost``)."""
    c1, w1 = _cpu(), _wall()
    c2, w2 = _cpu(), _wall()
    selfcost.add_sample((c1 - c0) - (c2 - c1), (w1 - w0) - (w2 - w1), weight)


class InjectedFault(RuntimeError):
    """Raised by a hook chosen with VLLM_W2EXT_FAULT_INJECT (tests only)."""


def injected(name: str, fault: str) -> bool:
    return bool(fault) and (fault == "all" or name in fault.split(","))


class _BoundsCall:
    """``enter``'s state for a bounds hook's call (hooks/bounds.py): its start and what it keeps."""
    __slots__ = ("start", "kept")

    def __init__(self, start: int, kept) -> None:
        self.start, self.kept = start, kept


class HookRunner:
    __slots__ = ("spec", "pre", "post", "active", "failed", "paused", "gated", "left", "gap", "counted",
                 "timed_weight", "bounds_on", "windowed", "window", "fast", "opened")

    def __init__(self, spec: Hook, fault: str = ""):
        self.spec = spec
        self.pre = self._raise if injected(spec.name, fault) else spec.pre
        self.post = spec.post
        # a bounds hook noting its calls' bounds instead of running pre/post (hooks/bounds.py): from the start where
        # its consumer always runs in its process, else once bounds.MODE finds the worker in the EngineCore's
        # thread; never for an injected fault (its pre must raise)
        self.bounds_on = self.can_bound and not spec.in_process_bounds
        self.active = True                      # = not (failed or paused or gated): the one flag the hot path reads
        self.failed = self.paused = self.gated = False
        # timed only inside its process's clock's timed calls (bounds.Mode.clock); the weight of the one open now
        # (0: none); fast: a bounds hook's front takes its way through (active, bounds_on, windowed, no window)
        self.windowed = spec.bounds is not None and MODE.windowed(self)
        self.window = 0
        self.fast = False
        self.opened = False                     # a clock whose timed call opened the window now open
        self._refresh()
        # The next timed call is a countdown (``left`` calls to go, the timed one at 0) rather than a call number
        # compared with a running count: the count passes 256 at once, and from there each increment makes a new
        # int object and frees the old one (~300 more instructions per hooked call, CPython 3.12); a countdown of
        # at most 2 * SAMPLE_EVERY stays among the interpreter's cached small ints.
        self.gap = self.left = _gap()           # this gap's length (the calls its timed call stands for), calls to go
        self.counted = 0                        # calls in the gaps before this one
        self.timed_weight = 0                   # the calls the last timed call stands for

    @property
    def can_bound(self) -> bool:
        return self.spec.bounds is not None and self.pre is self.spec.pre

    def needs_exit(self, state) -> bool:
        """Must ``exit`` run after a call ``enter`` returned ``state`` for?"""
        return state is not SKIP and (self.post is not None or type(state) is _BoundsCall)

    @property
    def calls(self) -> int:
        """Calls counted down so far (that ran ``pre``, or would have): not those while the hook was off, nor a
        windowed hook's (a bounds hook timed in its clock's windows counts none)."""
        return self.counted + self.gap - self.left

    def _raise(self, instance, args, kwargs):
        raise InjectedFault(f"injected fault in {self.spec.name}")

    def _set(self, failed: bool, paused: bool, gated: bool) -> None:
        self.failed, self.paused, self.gated = failed, paused, gated
        self.active = active = not (failed or paused or gated)
        self.fast = active and self.bounds_on and self.windowed and not self.window     # _refresh (the gate runs
                                                                                       # this twice in N steps)

    def _refresh(self) -> None:
        self.fast = self.active and self.bounds_on and self.windowed and not self.window

    def set_bounds(self, on: bool, windowed: bool) -> None:
        """A bounds hook noting its calls' bounds (``on``; never an injected fault's), timed in its clock's windows
        (``windowed``): ``bounds.Mode``."""
        self.bounds_on = on and self.can_bound
        self.windowed = windowed
        self._refresh()

    def set_window(self, weight: int) -> None:
        """A clock's timed call opened (``weight``: the calls it stands for) or closed (0) a window."""
        self.window = weight
        self._refresh()

    def pause(self, on: bool) -> None:
        """Pause (``on`` False) or resume; resuming also re-enables a hook a fault switched off."""
        self._set(self.failed and not on, not on, self.gated)

    def gate(self, shut: bool) -> None:
        """Shut: off (vLLM's method called straight through, one flag test); open: on again. The flag only,
        never the class: see the module docstring (a shut gate used to put vLLM's own method back in its
        class, twice per hook in every N steps, invalidating CPython's specialization of vLLM's classes to
        save one frame; ``benchmarks/results/h200/gate_flags``)."""
        self._set(self.failed, self.paused, shut)

    def fail(self, exc: BaseException) -> None:
        """A fault inside the plugin: count it, switch this hook off, say so once."""
        selfcost.hook_failed(self.spec.name)
        try:   # make sure this process reports the fault even if no hook ever recorded anything
            from vllm_w2ext.telemetry import identity, pipeline
            if self.spec.role:
                identity.set_role(self.spec.role)
            pipeline.get()
        except Exception:  # pragma: no cover - reporting must not raise either
            pass
        from vllm_w2ext.hooks.bounds import MODE
        MODE.failed(self)
        if not self.failed:
            self._set(True, self.paused, self.gated)
            s = self.spec
            log.error("vllm_w2ext: hook %s (%s.%s) raised %r and is now disabled; vLLM continues "
                      "without it", s.name, s.module, s.target, exc)

    # -- the two halves, shared by every way of driving a hook ---------------------------------------
    def enter(self, instance, args, kwargs):
        """Run ``pre`` (a bounds hook's start, while ``bounds_on`` and no marks); its state, or SKIP."""
        if not self.active:
            return SKIP
        if self.windowed:                         # timed in its clock's windows only, never counted down
            if self.window:
                return self._timed_half(self.window, instance, args, kwargs)
            return self._pre(instance, args, kwargs)
        self.left = left = self.left - 1
        if left:                                  # _pre written out: the native observers call this on every call
            if self.bounds_on and not PHASE_MARKS[0]:
                return _BoundsCall(_time_ns(), self._kept_arg(args, kwargs) if self.spec.bounds_keep == "arg" else None)
            try:
                return self.pre(instance, args, kwargs)
            except Exception as e:
                self.fail(e)
                return SKIP
        self.timed_weight = gap = self.gap
        self.counted += gap
        self.gap = self.left = _gap()
        c0, w0 = _cpu(), _wall()
        try:
            state = self._pre(instance, args, kwargs)
            # the process's clock: the bounds hooks' calls inside this one are timed too, standing for as many, until
            # its exit (which runs wherever needs_exit says so) closes the window
            if self.spec.clock == MODE.clock and self.needs_exit(state):
                self.opened = MODE.open_window(gap)
            return state
        finally:
            _sample(c0, w0, self.timed_weight)

    def _timed_half(self, weight: int, instance, args, kwargs):
        """``_pre`` timed, standing for ``weight`` calls (a windowed hook's call inside its clock's timed one)."""
        c0, w0 = _cpu(), _wall()
        try:
            return self._pre(instance, args, kwargs)
        finally:
            _sample(c0, w0, weight)

    def _pre(self, instance, args, kwargs):
        if self.bounds_on and not PHASE_MARKS[0]:
            return _BoundsCall(_time_ns(), self._kept_arg(args, kwargs) if self.spec.bounds_keep == "arg" else None)
        try:
            return self.pre(instance, args, kwargs)
        except Exception as e:
            self.fail(e)
            return SKIP

    @staticmethod
    def _kept_arg(args, kwargs):
        return args[0] if args else next(iter(kwargs.values()), None)

    def exit(self, state, result, error) -> None:
        """Run ``post`` (after ``enter`` returned ``state``, not SKIP); timed if no call came since the timed one (a
        windowed hook's: if its clock's window is open)."""
        if self.windowed:
            if self.window:
                self._timed_post(self.window, state, result, error)
            else:
                self._post(state, result, error)
            return
        if self.left != self.gap:
            if type(state) is _BoundsCall:
                self._post(state, result, error)
                return
            try:                                  # _post written out, as in enter
                self.post(state, result, error)
            except Exception as e:
                self.fail(e)
            return
        if self.opened:                           # this clock's call ends: its window closes
            self.opened = False
            MODE.close_window()
        self._timed_post(self.timed_weight, state, result, error)

    def _timed_post(self, weight: int, state, result, error) -> None:
        c0, w0 = _cpu(), _wall()
        try:
            self._post(state, result, error)
        finally:
            _sample(c0, w0, weight)

    def _post(self, state, result, error) -> None:
        if type(state) is _BoundsCall:            # what the bounds front appends (hooks/bounds.py)
            kept = result if self.spec.bounds_keep == "result" and error is None else state.kept
            self.spec.bounds.append((state.start, _time_ns(), kept, error))
            return
        try:
            self.post(state, result, error)
        except Exception as e:
            self.fail(e)

    # -- the sync path: a plain function in place of vLLM's method ---------------------------------
    def bind(self, fn):
        """A plain function that calls ``fn`` (an unbound method) through this runner, to be set on the
        class in its place (``_front``): written for ``fn``'s own parameters where ``_exact_front`` can copy them,
        else through ``(instance, *args, **kwargs)``. Written out rather than a ``wrapt.FunctionWrapper``: the
        runner's halves inlined cost about half as much per call (``benchmarks/hook_overhead.py``: 0.4 against
        0.8 µs for an empty hook on the 2-core CPU machine), and these run on every step. Where the extension was
        built, a C ``CFront`` around that function: for a bounds hook with copied parameters (it finds the first
        argument by position or by the name the copy gives it), and for any other hook whose parameters are all
        positional-or-keyword (``_c_layout``)."""
        exact = _exact_front(fn) if self.spec.method != "__init__" else None
        front = _front(fn, self, *(exact or _GENERIC))
        bounds = self.spec.bounds
        layout = _c_layout(fn) if CFront is not None and exact is not None and bounds is None else None
        if CFront is not None and exact is not None and (bounds is not None or layout is not None):
            functools.update_wrapper(front, fn)
            front.__w2ext_runner__ = self
            front = CFront(fn, front, self, PHASE_MARKS, bounds.append if bounds is not None else None,
                           _KEEP[self.spec.bounds_keep], exact[-1] if exact[-1] != "None" else None, self.pre,
                           self.post, layout, _NO_KWARGS)
            if self.spec.direct:
                selfcost.add_front(front, _front_clock)
                if _gc_phase not in gc.callbacks:   # collections timed once a front counts: its counter leaves them out
                    gc.callbacks.append(_gc_phase)
                    selfcost.add_collections(_collections)
        functools.update_wrapper(front, fn)
        front.__w2ext_runner__ = self
        return front

    def _through(self, fn, instance, args, kwargs):
        """A call through ``enter`` and ``exit``: a windowed hook's where its front does not take its own way (timed
        if its clock's window is open; ``pre``/``post`` where marks are wanted or it is not a bounds hook now), and
        the timed call of any other (``_timed``)."""
        state = self.enter(instance, args, kwargs)
        if not self.needs_exit(state):
            return fn(instance, *args, **kwargs)
        try:
            result = fn(instance, *args, **kwargs)
        except BaseException as e:
            self.exit(state, None, e)
            raise
        self.exit(state, result, None)
        return result

    def _timed(self, fn, instance, args, kwargs):
        self.left += 1                        # enter() counts this call again
        return self._through(fn, instance, args, kwargs)

    # -- the async path: a wrapt wrapper (the front end's coroutines) --------------------------------
    def async_(self, wrapped, instance, args, kwargs):
        return self._run_async(wrapped, instance, args, kwargs)

    async def _run_async(self, wrapped, instance, args, kwargs):
        state = self.enter(instance, args, kwargs)
        if state is SKIP or self.post is None:
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as e:
            self.exit(state, None, e)
            raise
        self.exit(state, result, None)
        return result


_PLAIN = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_FORWARDING = [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]
# A front's code, as stack samplers show it: ``front (<vllm_w2ext hook front>:N)``; its lines
# FRONT_HANDOFF_LINES are the calls into vLLM's method (``benchmarks/gpu/pyspy_share.py`` counts samples there as
# vLLM's, as it does on ``_through``'s ``fn(instance, *args, **kwargs)`` lines in this file).
# _FRONT_SOURCE's layout fixes them: a test checks each on a real front.
FRONT_FILE = "<vllm_w2ext hook front>"
FRONT_HANDOFF_LINES = (3, 7, 22, 24, 26)
# Lines 4-12 are a bounds hook's way through while ``fast`` and no marks (hooks/bounds.py), lines 13-14 a windowed
# hook's other calls (timed in its clock's windows, never counted down): ``{bounds}`` is ``if`` for a bounds hook's
# front and ``if False and`` (no code at all) for any other; ``{kept}`` is what its Bounds keep, ``{kept_error}``
# the same when vLLM's method raised.
_FRONT_SOURCE = """def front({head}):
    if not _w2_runner.active:
        return _w2_fn({call})
    {bounds} _w2_runner.fast and not _w2_marks[0]:
        _w2_t0 = _w2_now()
        try:
            _w2_result = _w2_fn({call})
        except BaseException as _w2_e:
            _w2_into((_w2_t0, _w2_now(), {kept_error}, _w2_e))
            raise
        _w2_into((_w2_t0, _w2_now(), {kept}, None))
        return _w2_result
    {bounds} _w2_runner.windowed:
        return _w2_runner._through(_w2_fn, {self}, {args}, {kwargs})
    _w2_left = _w2_runner.left = _w2_runner.left - 1
    if not _w2_left:
        return _w2_runner._timed(_w2_fn, {self}, {args}, {kwargs})
    try:
        _w2_state = _w2_pre({self}, {args}, {kwargs})
    except Exception as _w2_e:
        _w2_runner.fail(_w2_e)
        return _w2_fn({call})
    if _w2_state is None or _w2_post is None:
        return _w2_fn({call})
    try:
        _w2_result = _w2_fn({call})
    except BaseException as _w2_e:
        try:
            _w2_post(_w2_state, None, _w2_e)
        except Exception as _w2_e2:
            _w2_runner.fail(_w2_e2)
        raise
    try:
        _w2_post(_w2_state, _w2_result, None)
    except Exception as _w2_e:
        _w2_runner.fail(_w2_e)
    return _w2_result
"""


def _parameters(fn) -> list:
    """``fn``'s parameters; for a decorator's ``(*args, **kwargs)`` wrapper, its function's own."""
    params = list(inspect.signature(fn, follow_wrapped=False).parameters.values())
    if getattr(fn, "__wrapped__", None) is not None and [p.kind for p in params] == _FORWARDING:
        params = list(inspect.signature(fn).parameters.values())
    return params


def _exact_front(fn):
    """The parts of ``_FRONT_SOURCE`` for ``fn``'s own parameters (same names, same default objects), so that no
    call packs and unpacks its arguments: through ``(instance, *args, **kwargs)`` each call builds a tuple and a
    dict and calls vLLM's method through them again, ~1.9k instructions per call against a few hundred
    (``benchmarks/hook_instructions.sh``), on every hooked call of every step. Required parameters reach ``pre``
    positionally (keyword-only ones by keyword) and the defaulted ones by keyword, whichever way the caller
    passed them; a ``**kwargs`` is passed on as it is. None (the generic parts) for a signature this does not
    copy: positional-only parameters, ``*args``, or a name of its own. Not used for constructors (``bind``):
    they run once, and a ``pre`` may tell whether a parameter was passed at all."""
    try:
        params = _parameters(fn)
    except (TypeError, ValueError):
        return None
    var_kw = params.pop() if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD else None
    if not params or any(p.kind not in _PLAIN or p.name.startswith("_w2_") for p in params):
        return None
    head, call, positional, keyword, defaults = [], [], [], [], {}
    star = False
    for i, p in enumerate(params):
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not star:
            head.append("*")
            star = True
        if p.default is inspect.Parameter.empty:
            head.append(p.name)
            if p.kind is inspect.Parameter.KEYWORD_ONLY:     # a required keyword-only one: by keyword too
                call.append(f"{p.name}={p.name}")
                keyword.append(f"{p.name!r}: {p.name}")
            else:
                call.append(p.name)
                if i:
                    positional.append(p.name)
        else:
            defaults[f"_w2_d{i}"] = p.default
            head.append(f"{p.name}=_w2_d{i}")
            call.append(f"{p.name}={p.name}")
            keyword.append(f"{p.name!r}: {p.name}")
    if var_kw is not None:
        head.append(f"**{var_kw.name}")
        call.append(f"**{var_kw.name}")
        keyword.append(f"**{var_kw.name}")
    return (", ".join(head), ", ".join(call), params[0].name, "(" + "".join(f"{a}, " for a in positional) + ")",
            "{" + ", ".join(keyword) + "}" if keyword else "_w2_no_kwargs", defaults,
            params[1].name if len(params) > 1 else "None")


def _c_layout(fn) -> tuple | None:
    """How the C front hands ``pre`` a call's arguments as the exact front does (``_exact_front``: the required ones
    after self as a tuple, the defaulted ones by name): (required parameters, self included; the defaulted ones'
    names; their defaults). None where a parameter is keyword-only or the method takes ``**kwargs`` (the Python
    front then takes every call). A call passing defaulted ones by keyword fits it (``_cfront.c``'s ``call_fits``); a
    required one by keyword, an unknown keyword or one given twice goes the Python front's way. Called only where
    ``_exact_front`` copied the signature."""
    params = _parameters(fn)
    if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params):
        return None
    defaulted = [p for p in params if p.default is not inspect.Parameter.empty]
    return (len(params) - len(defaulted), tuple(p.name for p in defaulted), tuple(p.default for p in defaulted))


# the parts for any signature: (instance, *args, **kwargs), handed to pre as they came
_GENERIC = ("_w2_self, *_w2_args, **_w2_kwargs", "_w2_self, *_w2_args, **_w2_kwargs", "_w2_self", "_w2_args",
            "_w2_kwargs", {}, None)


def _front(fn, runner, head: str, call: str, instance: str, args: str, kwargs: str, defaults: dict,
           first: str | None):
    """The front's code for these parts (``first``: the name of the method's first argument, None in the
    generic parts)."""
    spec = runner.spec
    keep = spec.bounds_keep if spec.bounds is not None else ""
    kept_arg = first or "_w2_runner._kept_arg(_w2_args, _w2_kwargs)"
    kept = {"arg": kept_arg, "result": "_w2_result"}.get(keep, "None")
    src = _FRONT_SOURCE.format(head=head, call=call, self=instance, args=args, kwargs=kwargs, kept=kept,
                               kept_error=kept_arg if keep == "arg" else "None",
                               bounds="if" if spec.bounds is not None else "if False and")
    ns = {"_w2_runner": runner, "_w2_fn": fn, "_w2_pre": runner.pre, "_w2_post": runner.post,
          "_w2_no_kwargs": _NO_KWARGS, "_w2_marks": PHASE_MARKS, "_w2_now": time.time_ns,
          "_w2_into": spec.bounds.append if spec.bounds is not None else None, **defaults}
    exec(compile(src, FRONT_FILE, "exec"), ns)
    return ns["front"]


def front_kind(front) -> str:
    """What stands in a vLLM method's place, for the doctor: "C" (``CFront``), "python" (the Python front: the
    extension was not built, or the signature is not one the C front takes) or "wrapt" (a coroutine's wrapper)."""
    raw = getattr(front, "__func__", front)                 # a staticmethod's or classmethod's function
    if CFront is not None and type(raw) is CFront:
        return "C"
    return "python" if hasattr(raw, "__w2ext_runner__") else "wrapt"


FRONTS = ("C extension built (vllm_w2ext.hooks._cfront)" if CFront is not None else
          "Python only: the C extension vllm_w2ext.hooks._cfront was not built (no compiler or Python headers at "
          "install), so each hooked call costs more")


def python_front(front):
    """The Python front of a front ``bind`` made: itself, or the one a C front (``CFront``) hands the calls it does
    not take to."""
    return getattr(front, "__w2ext_slow__", front)


_NO_KWARGS = types.MappingProxyType({})    # what ``pre`` gets as kwargs from a method without defaulted parameters


class StepGate:
    """Switches the ``recorded_only`` hooks off while the EngineCore runs a step it does not record
    (``VLLM_W2EXT_SAMPLE``; ``hooks.engine_core`` shuts and opens it), in the EngineCore's process: there the
    wrapper then calls vLLM's method straight through after one flag test, instead of running their ``pre``,
    which would only find the step unrecorded (the worker at TP=1 on the GPU runs in that process). Workers
    in processes of their own keep it open and tell from the missing stamp. ``on_shut``
    callbacks run once per shut: what a gated ``pre`` would have done on the first unrecorded step (the
    worker forgets its last execution)."""

    def __init__(self) -> None:
        self.runners: list[HookRunner] = []
        self.shut = False
        self._on_shut: list = []

    def use(self, runners) -> None:
        """The runners of this process's instrumentation (the gated ones kept), the gate open (the previous
        runners switched on again first)."""
        if self.shut:
            self.open()
        self.runners = [r for r in runners if r.spec.recorded_only]

    def on_shut(self, fn) -> None:
        if fn not in self._on_shut:
            self._on_shut.append(fn)

    def close(self) -> None:
        self.shut = True
        for r in self.runners:
            r.gate(True)
        for fn in self._on_shut:
            fn()

    def open(self) -> None:
        self.shut = False
        for r in self.runners:
            r.gate(False)


GATE = StepGate()
