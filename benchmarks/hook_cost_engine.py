"""Every hook's exact cost inside a REAL vLLM engine, per call and per engine step (issue #19).

    python benchmarks/hook_cost_engine.py MODEL_FOLDER [--batches 1,64] [--out FILE] [--engine-json '{}'] [--cpu]

Why: ``benchmarks/hook_overhead.py`` runs the hooks in a tight loop on stand-in classes, where their code and
data stay hot in the CPU caches; inside vLLM each hook runs once per step between megabytes of vLLM's own
work, cold. This script times each hook's ``pre`` and ``post`` (``time.perf_counter_ns`` around the call) in a
real engine: front end, EngineCore and worker in ONE process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, the
``uni`` executor: the GPU's TP=1 layout without the front end's IPC), the plugin on with its trace folder.
Each batch size runs ``--rounds`` generate calls of ``--max-tokens`` tokens after one warm-up call; the
counters are reset between batch sizes. Per step = total / engine steps (``engine.step`` calls). Beside
them: the export thread's CPU (and waiting) time per step over the same window, by part (``parts``: each poller,
the send by its parts (take, encode, deliver), the own counters: ``Pipeline.export_cpu_parts``); Python's cyclic collections over the window by the
thread they ran on (``gc_by_thread``: a collection runs on whichever thread's allocation sets it off, and counts
in that thread's clock, the export thread's too, whoever made the garbage); and the hooks per step over
the steady decode steps alone (``steady_decode``: each round's steps 5 to max_tokens - 4, where no request
starts or ends; the all-steps figure also holds the per-request work, which short rounds of a large batch
spread over few steps).

On CUDA, ``event_free``: of the worker's ``sample_tokens`` post, the time spent freeing the step-end events vLLM
made and the plugin borrowed (``TimedFrees``): vLLM frees one such event per step without the plugin too, so that
part of the hook's figure is vLLM's own work moved into the hook, not work the plugin adds. Since the plugin
recycles those events (``hooks/end_event.py``) it frees only those beyond ``MAX_SPENT``; ``events_made_per_step``
says how many vLLM's constructor still made (stock vLLM: one per step).

The timing wrapper itself adds two clock reads per call (about 0.1 us each); the numbers include them. The
plugin's own sampled counter (``selfcost_sampled``) times the runner's call of ``pre``/``post``, which is this
wrapper in a timed run, so there it reads the wrapper too (~0.5 µs a call warm on the 2-core CPU machine);
``--counter-only`` runs the hooks unwrapped and reads the plugin's own counters alone (``results/cpu/selfcost_vs_direct``):
the sampled one and the direct counter of each C front (``direct``: every call the front takes timed in C, by hook).

The fronts (what ``bind`` set in vLLM's method's place: C or Python, ``hooks/runner.py``) are timed too,
``NAME.front`` (``timed_fronts``): the whole call less vLLM's method and the hook's own ``pre``/``post``. That is the
flag test, the countdown, the calls into ``pre``/``post`` and argument handling of every hooked call, and all a bounds
hook's fast call costs (``hooks/bounds.py``; here, in one process, the worker's hooks after its first execution and
``engine.update_from_output``: they run no ``pre`` or ``post``, their fronts note each call's bounds and the engine
step's post reads them, in its figure). Before this script timed every front (commit 22a7d7b and older results) only
the bounds hooks' fronts were in its figures. ``benchmarks/hook_instructions.py`` counts the same work in
instructions (``results/cpu/hook_fronts``, ``results/cpu/bounds_hooks``). ``bounds_hooks`` lists the bounds hooks per
batch.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

from gc_by_thread import CollectionTimer


STEP_PRES = ("engine.step.pre", "engine.step_with_batch_queue.pre")


class Window:
    """The steady decode steps of a round: engine steps ``skip + 1`` to ``max_tokens - skip`` of each
    ``generate`` call, where no request starts, prefills or finishes. The per-request hooks and the work
    a step does for the requests it starts or ends are outside it, so its per-step figure is what a step
    costs whatever the batch (issue #19: "independent of batch size")."""

    def __init__(self, skip: int, max_tokens: int):
        self.skip, self.last = skip, max_tokens - skip
        self.k, self.on = 0, False

    def new_round(self) -> None:
        self.k, self.on = 0, False

    def step(self) -> None:
        self.k += 1
        self.on = self.skip < self.k <= self.last


def tally(acc: dict, steady: dict, window: Window, name: str):
    """``add(ns)``: one timed call of ``name`` into ``acc`` (calls, ns, max ns) and, inside the steady window,
    ``steady`` (calls, ns)."""
    rec = acc.setdefault(name, [0, 0, 0])
    srec = steady.setdefault(name, [0, 0])

    def add(d: int) -> None:
        rec[0] += 1
        rec[1] += d
        rec[2] = max(rec[2], d)
        if window.on:
            srec[0] += 1
            srec[1] += d
    return add


def timed(acc: dict, steady: dict, window: Window, name: str, fn):
    """``fn`` (a hook's ``pre`` or ``post``) timed into ``name``; its time also goes to its hook's ``INSIDE`` (ns,
    calls), which ``timed_fronts`` takes out of the hook's front."""
    if fn is None:
        return None
    add = tally(acc, steady, window, name)
    inside = INSIDE.setdefault(name.rsplit(".", 1)[0], [0, 0])
    clock = time.perf_counter_ns
    starts_step = name in STEP_PRES

    def run(*a):
        if starts_step:
            window.step()
        t = clock()
        try:
            return fn(*a)
        finally:
            d = clock() - t
            inside[0] += d
            inside[1] += 1
            add(d)
    return run


# the time of each hook's timed pre and post (ns) and their calls: inside its front's time, not the front's own
INSIDE: dict = {}


def timed_fronts(acc: dict, steady: dict, window: Window, holders=()) -> dict:
    """Time the front of every hook that ``bind`` set on vLLM's classes (its C or its Python front, ``hooks/runner.py``;
    not the coroutine hooks' wrapt wrappers, whose ``pre``/``post`` alone are timed): each front is wrapped (the time
    of the whole call), and so is vLLM's method inside it (``_w2_fn`` in the Python front's namespace, and the C
    front's ``__w2ext_fn__``). The front's own time, ``NAME.front``, is the whole call less vLLM's method, less the
    hook's ``pre`` and ``post`` as timed (``INSIDE``), less what the wrappers add around empty calls (measured here,
    warm: ``wrappers_ns`` per front call and ``pre_post_wrapper_ns`` per timed ``pre``/``post``; cold they add more,
    and the front's figure reads high by that much: ``null.front`` shows how high). For a bounds hook on its fast way that is all of its
    cost (it runs no ``pre``/``post``); for any other, its countdown, the calls into ``pre``/``post`` and the runner's
    timed call (``HookRunner._timed``). vLLM looks most of these methods up on their class at every call; a method
    bound once at start-up (the EngineCore's ``step_fn``) is swapped on the instances in ``holders`` that hold it.
    Set up at the time of the call (once the engine runs); the names of those wrapped and the calibration are
    returned."""
    import sys

    from vllm_w2ext.hooks import INSTRUMENTOR
    from vllm_w2ext.hooks import runner as runner_mod
    python_front = getattr(runner_mod, "python_front", lambda front: front)     # trees before the C front
    clock = time.perf_counter_ns
    wrapped = []

    def pair(name, front, fn, runner):
        add = tally(acc, steady, window, name + ".front")
        inside = [0]
        hooks_inside = INSIDE.setdefault(name, [0, 0])
        windowed = WINDOWED.setdefault(name, [0])

        def inner(*a, **k):
            t = clock()
            try:
                return fn(*a, **k)
            finally:
                inside[0] += clock() - t

        def outer(*a, **k):
            if runner.active and getattr(runner, "windowed", False):
                windowed[0] += 1            # a call its runner does not count (see _executions)
            before, ns0, n0 = inside[0], hooks_inside[0], hooks_inside[1]
            t = clock()
            try:
                return front(*a, **k)
            finally:
                d = clock() - t
                add(d - (inside[0] - before) - (hooks_inside[0] - ns0) - (hooks_inside[1] - n0) * overhead[1]
                    - overhead[0])
        return inner, outer

    overhead = [0, 0]
    # a timed pre/post: what its wrapper adds beyond the time it records
    probe = timed({}, {}, Window(0, 0), "calibration.pre", lambda *a: None)
    t = clock()
    for _ in range(20000):
        probe()
    overhead[1] = (clock() - t - INSIDE.pop("calibration")[0]) // 20000
    inner, outer = pair("calibration", lambda: inner(), lambda: None,    # a runner on but not windowed: the
                        types.SimpleNamespace(active=True, windowed=False))  # same tests as a real front's
    for _ in range(20000):
        outer()
    n, ns, _ = acc.pop("calibration.front")
    steady.pop("calibration.front")
    WINDOWED.pop("calibration")
    INSIDE.pop("calibration")
    overhead[0] = ns // n
    for r in INSTRUMENTOR.runners.values():
        spec = r.spec
        cls = getattr(sys.modules.get(spec.module), spec.cls_name, None)
        front = vars(cls).get(spec.method) if cls is not None else None
        if getattr(front, "__w2ext_runner__", None) is not r:      # a wrapt wrapper, a static method, not attached
            continue
        slow = python_front(front)                  # a C front hands the other calls to it (hooks/_cfront.c)
        ns = slow.__globals__
        inner, outer = pair(spec.name, front, ns["_w2_fn"], r)
        ns["_w2_fn"] = inner
        if slow is not front:
            front.__w2ext_fn__ = inner
        setattr(cls, spec.method, outer)
        for obj in holders:                         # a bound method of the front kept at start-up
            for attr, value in list(vars(obj).items()):
                if getattr(value, "__func__", None) is front and getattr(value, "__self__", None) is obj:
                    setattr(obj, attr, types.MethodType(outer, obj))
        wrapped.append(spec.name)
    null = _null_front(pair)
    return {"wrapped": wrapped, "wrappers_ns": overhead[0], "pre_post_wrapper_ns": overhead[1], "null": null}


# A method of vLLM's that no hook wraps, called once per engine step (0.26 to 0.32): ``null.front`` wraps it as the
# fronts are wrapped, around a Python function of a hook's shape whose ``pre`` and ``post`` do nothing (timed as
# theirs are). What that reads per call is what the wrappers add in place (cold, between vLLM's work) beyond the warm
# calibration, plus that function's own frame and two empty calls: how high a front's figure can read for work that
# is not the front's.
NULL_TARGET = ("vllm.v1.core.sched.scheduler", "Scheduler", "get_grammar_bitmask")


def _null_target() -> tuple | None:
    """``NULL_TARGET``'s (class, method name, function), or None where vLLM has no such method or a hook wraps it."""
    import importlib
    mod, cls_name, method = NULL_TARGET
    try:
        cls = getattr(importlib.import_module(mod), cls_name)
    except (ImportError, AttributeError):
        return None
    fn = vars(cls).get(method)
    if not isinstance(fn, types.FunctionType) or hasattr(fn, "__w2ext_runner__"):
        return None
    return cls, method, fn


def _null_front(pair) -> str | None:
    """Wrap ``NULL_TARGET`` (its name, or None where vLLM has no such method or a hook wraps it)."""
    target = _null_target()
    if target is None:
        return None
    cls, method, fn = target

    pre = timed({}, {}, Window(0, 0), "null.pre", lambda *a: True)
    post = timed({}, {}, Window(0, 0), "null.post", lambda *a: None)

    def front(*a, **k):                         # a hook's shape: pre, vLLM's method, post, each doing nothing
        state = pre(a[0], a[1:], k)
        result = inner(*a, **k)
        post(state, result, None)
        return result
    inner, outer = pair("null", front, fn, types.SimpleNamespace(active=True, windowed=False))
    setattr(cls, method, outer)
    return ".".join(NULL_TARGET[1:])


class TimedFrees:
    """Times ``GpuTimer.free_oldest`` (``hooks/gpu_timing.py``): vLLM's thread freeing the resolved borrowed end events
    beyond ``MAX_SPENT`` at its next ``stop`` (inside the worker's ``sample_tokens`` post); vLLM's constructor hands
    the others out again (``hooks/end_event.py``). So the hook's figure can say how much of it is freeing events
    (``event_free`` in the output; already inside the hook's own time); ``take`` also reads how many events vLLM's
    constructor made rather than took again (``end_event.MADE``: stock vLLM makes and frees one every step). Older
    trees in A/B arms free every resolved event at each stop (``spent.clear()``) and have no ``free_oldest``: there
    the list's ``clear`` is timed instead (``_ClearTimed``)."""

    def __init__(self, window: Window):
        self.window = window
        self.ns = self.calls = self.freed = self.steady_ns = 0
        self.made = self._made()

    @staticmethod
    def _made() -> int:
        from vllm_w2ext.hooks import end_event
        return getattr(end_event, "MADE", [0])[0]  # (older trees in A/B arms: none counted)

    def timed(self, fn, n_of=lambda got: got):
        """``fn`` timed into these counters; ``n_of(result)``: the events it freed."""
        def run(*a):
            t = time.perf_counter_ns()
            got = fn(*a)
            d = time.perf_counter_ns() - t
            self.ns += d
            self.calls += 1
            self.freed += n_of(got)
            if self.window.on:
                self.steady_ns += d
            return got
        return run

    def take(self) -> tuple[int, int, int, int, int]:
        made = self._made()
        got = (self.ns, self.calls, self.freed, self.steady_ns, made - self.made)
        self.ns = self.calls = self.freed = self.steady_ns = 0
        self.made = made
        return got


class _ClearTimed(list):
    """An older tree's ``spent`` list whose ``clear`` (every resolved event freed at each stop) is timed."""

    def __init__(self, items, frees: TimedFrees):
        super().__init__(items)
        self._clear = frees.timed(lambda n: super(_ClearTimed, self).clear() or n)

    def clear(self) -> None:
        if self:
            self._clear(len(self))


def _timed_frees(window: Window) -> TimedFrees | None:
    """Time the worker timer's frees of resolved end events (None: no timer here, as on the CPU)."""
    from vllm_w2ext.hooks import worker
    timer = worker.S.timer
    if timer is None:
        return None
    frees = TimedFrees(window)
    if hasattr(timer, "free_oldest"):
        timer.free_oldest = frees.timed(timer.free_oldest)
    else:
        timer.spent = _ClearTimed(timer.spent, frees)
    return frees


FREED = "(vLLM's frees)"
COLLECTED = "(collections in hooks)"
# what the fronts time apart, outside the direct counter: _fronts_direct's key -> (the _cfront reader, its figure's
# name in direct_by_hook, what its count counts)
APART = {FREED: ("freed", "vllm_frees", "releases_per_step"),
         COLLECTED: ("collected", "collections_in_hooks", "sections_per_step")}


def _fronts_direct() -> dict:
    """Each C front's direct counter (``selfcost.fronts``: its ``spent`` ticks and ``calls``) by hook name, as
    ``{name: (ticks, calls)}``, and what the fronts time apart, outside the direct counter (``APART``): under
    ``FREED`` their releases of vLLM's objects the step's post took from the bounds buffers (``_cfront.freed``), under
    ``COLLECTED`` the collections inside their sections (``_cfront.collected``); empty where the extension was not
    built."""
    from vllm_w2ext.telemetry import selfcost
    out: dict = {}
    for f in list(selfcost.fronts):
        runner = getattr(f, "__w2ext_runner__", None)
        name = runner.spec.name if runner is not None else repr(f)
        ticks, calls = out.get(name, (0, 0))
        out[name] = (ticks + f.spent, calls + f.calls)
    try:
        from vllm_w2ext.hooks import _cfront
    except ImportError:                             # (not built)
        return out
    for key, (reader, _, _) in APART.items():
        read = getattr(_cfront, reader, None)       # (None in an older tree of an A/B arm)
        if read is not None:
            out[key] = read()
    return out


def _timed_stop() -> list | None:
    """``--time-stop``: the device timer's stop that the engine step's post calls (``bounds.MODE.device_stop``) timed
    into ``[ns, calls]``; None where there is none (no GPU, or the worker not on the EngineCore's thread)."""
    from vllm_w2ext.hooks.bounds import MODE
    stop = MODE.device_stop
    if stop is None:
        return None
    got = [0, 0]
    clock = time.perf_counter_ns

    def timed_stop(*a):
        t = clock()
        try:
            return stop(*a)
        finally:
            got[0] += clock() - t
            got[1] += 1
    MODE.device_stop = timed_stop
    return got


class SteadyDirect:
    """``--counter-only``: the direct counter over the steady decode steps alone (``Window``), where nothing times
    the hooks: a wrapper of ``NULL_TARGET`` (a method of vLLM's no hook wraps, called once per scheduled step) counts the
    round's steps and reads ``_fronts_direct`` as the window opens and closes; the steps between are the EngineCore's
    own count. The wrapper is outside every front, so its own time is in no figure."""

    def __init__(self, window: Window):
        self.window = window
        self.acc: dict = {}
        self.steps = 0
        self._open = None                           # (fronts' reading, engine step) as the window opened

    def install(self) -> bool:
        from vllm_w2ext.hooks import engine_core
        target = _null_target()
        if target is None:
            return False
        cls, method, fn = target
        window, state = self.window, engine_core.S

        def tick(*a, **k):
            was = window.on
            window.step()
            if window.on and not was:
                self._open = (_fronts_direct(), state.step)
            elif was and not window.on:
                self.close()
            return fn(*a, **k)
        setattr(cls, method, tick)
        return True

    def close(self) -> None:
        """The window ends (or the round does): its reading's difference into the sums."""
        if self._open is None:
            return
        from vllm_w2ext.hooks import engine_core
        (before, step0), now = self._open, _fronts_direct()
        self._open = None
        self.steps += engine_core.S.step - step0
        for name, (ticks, calls) in now.items():
            t_b, c_b = before.get(name, (0, 0))
            t, c = self.acc.get(name, (0, 0))
            self.acc[name] = (t + ticks - t_b, c + calls - c_b)

    def take(self) -> dict | None:
        """The steady steps' direct figures (``direct_by_hook``'s form, with ``steps``) since the last take."""
        self.close()
        acc, steps = self.acc, self.steps
        self.acc, self.steps = {}, 0
        got = direct_by_hook({}, acc, steps)
        if got is not None:
            got["steps"] = steps
        return got


def direct_by_hook(before: dict, after: dict, steps: int) -> dict | None:
    """``--counter-only``: the direct counter of each C front between two ``_fronts_direct`` readings, in µs per
    engine step and per call, at the ticks' rate the plugin's own ``selfcost.direct`` converts them by
    (``selfcost.ns_per_tick``); None without the extension or steps."""
    from vllm_w2ext.telemetry import selfcost
    ns_per_tick = selfcost.ns_per_tick()
    if not ns_per_tick or not steps or not after:
        return None
    rows = {}
    apart = {figure: None for _, figure, _ in APART.values()}
    for name, (ticks, calls) in after.items():
        if name in APART:                           # not the plugin's work: beside the hooks, not in their sum
            _, figure, count = APART[name]
            t_b, c_b = before.get(name, (0, 0))
            apart[figure] = {"us_per_step": round((ticks - t_b) * ns_per_tick / steps / 1e3, 2),
                             count: round((calls - c_b) / steps, 3)}
            continue
        t_b, c_b = before.get(name, (0, 0))
        dt, dc = ticks - t_b, calls - c_b
        if dc:
            rows[name] = {"calls_per_step": round(dc / steps, 3), "us_per_step": round(dt * ns_per_tick / steps / 1e3, 2),
                          "ns_per_call": round(dt * ns_per_tick / dc, 1)}
    rows = dict(sorted(rows.items(), key=lambda kv: -kv[1]["us_per_step"]))
    by_role: dict = {}
    for name, r in rows.items():
        role = name.split(".")[0]
        by_role[role] = round(by_role.get(role, 0.0) + r["us_per_step"], 2)
    return {"us_per_step": round(sum(r["us_per_step"] for r in rows.values()), 2), "by_role": by_role, "hooks": rows,
            **apart}


def _brief(direct: dict | None) -> dict | None:
    """A direct figure's by-role sums, its vLLM's frees and steps, for the log line."""
    if not direct:
        return None
    return {**direct["by_role"], "frees": (direct.get("vllm_frees") or {}).get("us_per_step"),
            "collections": (direct.get("collections_in_hooks") or {}).get("us_per_step"), "steps": direct.get("steps")}


def _steady(steady: dict) -> dict:
    """Hooks per steady decode step, in all and by role."""
    steps = sum(steady.get(k, (0, 0))[0] for k in STEP_PRES)
    if not steps:
        return {"steps": 0}
    by_role: dict = {}
    for k, (n, ns) in steady.items():
        role = k.split(".")[0]
        by_role[role] = by_role.get(role, 0.0) + ns / steps / 1e3
    return {"steps": steps, "us_per_step": round(sum(by_role.values()), 2),
            "by_role": {k: round(v, 2) for k, v in sorted(by_role.items())},
            "hooks": {k: {"calls": n, "us_per_step": round(ns / steps / 1e3, 2)}
                      for k, (n, ns) in sorted(steady.items(), key=lambda kv: -kv[1][1]) if n}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--cpu", action="store_true", help="the CPU build: float32, eager, 1 GiB KV cache")
    ap.add_argument("--engine-json", default="{}", help="extra LLM kwargs (JSON)")
    ap.add_argument("--out", default="benchmarks/results/cpu/hook_cost_engine.json")
    ap.add_argument("--churn", action="store_true",
                    help="requests come and go in every step, as in serving: each round sends 2 x batch requests "
                         "with output lengths spread over 0.5-1.5 x --max-tokens to an engine that runs at most "
                         "batch at once (max_num_seqs; one batch size), so requests finish and join all through "
                         "the round (the steady decode figure then has no meaning)")
    ap.add_argument("--counter-only", action="store_true",
                    help="time no hook here (the steps: the EngineCore hooks' own count), so the plugin's own "
                         "counters read the hooks as they run: the sampled one (selfcost_sampled) and the direct "
                         "one of each C front (direct: µs per step and ns per call by hook); this script's own "
                         "figures are then absent")
    ap.add_argument("--sample-every", type=int, default=0,
                    help="selfcost.SAMPLE_EVERY for this run (0: the plugin's default): more timed calls, a "
                         "steadier counter")
    ap.add_argument("--steady-skip", type=int, default=4,
                    help="engine steps left out at each end of a round for the steady decode figure")
    ap.add_argument("--time-stop", action="store_true",
                    help="time the device timer's stop where the engine step's post calls it (MODE.device_stop: "
                         "the worker on the EngineCore's thread); its wrapper's time reads inside the step hook's "
                         "figure, so not for an A/B")
    a = ap.parse_args()
    trace_dir = tempfile.mkdtemp(prefix="w2ext-hook-cost-")
    os.environ.update(VLLM_W2EXT="1", VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_W2EXT_TRACE_DIR=trace_dir)
    if a.cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from vllm_w2ext.hooks import INSTRUMENTOR, engine_core
    from vllm_w2ext.telemetry import selfcost
    acc: dict = {}
    steady: dict = {}
    window = Window(a.steady_skip, a.max_tokens)
    if a.sample_every:
        selfcost.SAMPLE_EVERY = a.sample_every
    if not a.counter_only:                         # counter-only: the hooks as they are (steps: the step hook's count)
        INSTRUMENTOR.hooks = [dataclasses.replace(h, pre=timed(acc, steady, window, h.name + ".pre", h.pre),
                                                  post=timed(acc, steady, window, h.name + ".post", h.post))
                              for h in INSTRUMENTOR.hooks]
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    kw = {"model": a.model, "max_model_len": 2048, "enable_prefix_caching": False, "distributed_executor_backend": "uni",
              "load_format": "dummy" if not a.cpu else "auto"}
    if a.cpu:
        kw.update(dtype="float32", enforce_eager=True)
    kw.update(json.loads(a.engine_json))
    if a.churn:                                    # at most the batch at once: vLLM's own bound
        if "," in a.batches:
            ap.error("--churn runs one batch size (--batches N): it sets the engine's max_num_seqs to it")
        kw["max_num_seqs"] = int(a.batches)
    llm = LLM(**kw)
    sp = SamplingParams(max_tokens=a.max_tokens, ignore_eos=True, temperature=1.0)
    prompt = TokensPrompt(prompt_token_ids=[10 + (i * 31) % 9000 for i in range(a.prompt_len)])
    llm.generate([prompt], sp, use_tqdm=False)
    frees = None if a.counter_only else _timed_frees(window)
    core = getattr(getattr(llm.llm_engine, "engine_core", None), "engine_core", None)   # in-process: the EngineCore
    fronts = None if a.counter_only else timed_fronts(acc, steady, window, [core] if core is not None else [])
    steady_direct = SteadyDirect(window) if a.counter_only else None
    if steady_direct is not None and not steady_direct.install():
        steady_direct = None
    stops = _timed_stop() if a.time_stop else None
    rows = []
    for bs in (int(b) for b in a.batches.split(",")):
        for v in acc.values():
            v[:] = [0, 0, 0]
        for v in steady.values():
            v[:] = [0, 0]
        selfcost.hook_cpu_ns[0] = selfcost.hook_wall_ns[0] = 0
        if frees is not None:
            frees.take()
        export0 = _export_thread()
        executions0 = _executions()
        GC.clear()
        if stops is not None:
            stops[:] = [0, 0]
        direct0 = _fronts_direct()
        if steady_direct is not None:
            steady_direct.take()
        engine_steps0 = engine_core.S.step
        t0 = time.perf_counter()
        if a.churn:
            n = 2 * bs
            params = [SamplingParams(max_tokens=max(1, a.max_tokens // 2 + (i * 37) % (a.max_tokens + 1)),
                                     ignore_eos=True, temperature=1.0) for i in range(n)]
        for _ in range(a.rounds):
            if steady_direct is not None:
                steady_direct.close()
            window.new_round()
            if a.churn:
                llm.generate([prompt] * n, params, use_tqdm=False)
            else:
                llm.generate([prompt] * bs, sp, use_tqdm=False)
        window.new_round()
        wall = time.perf_counter() - t0
        direct1 = _fronts_direct()
        steps = acc.get("engine.step.pre", [0])[0] or acc.get("engine.step_with_batch_queue.pre", [0])[0]
        if a.counter_only:                         # no hook timed here: the EngineCore hooks' own step count
            steps = engine_core.S.step - engine_steps0
        hooks = {k: {"calls": n, "us_per_call": round(ns / n / 1e3, 2), "us_per_step": round(ns / steps / 1e3, 2),
                     "max_us": round(mx / 1e3, 1)}
                 for k, (n, ns, mx) in sorted(acc.items(), key=lambda kv: -kv[1][1]) if n}
        by_role: dict = {}
        for k, v in hooks.items():
            role = k.split(".")[0]
            by_role[role] = round(by_role.get(role, 0.0) + v["us_per_step"], 2)
        total = round(sum(v["us_per_step"] for v in hooks.values()), 2)
        export1 = _export_thread()
        export = [round((b - a) / steps * 1e6, 2) if steps else None for a, b in zip(export0[:3], export1[:3])]
        parts = {k: round((v - export0[3].get(k, 0.0)) / steps * 1e6, 2) for k, v in export1[3].items()} if steps else {}
        from vllm_w2ext.telemetry import pipeline
        send_parts = [k for k in getattr(pipeline, "SEND_PARTS", ("send",)) if k in parts]   # (older trees: "send")
        collections = GC.by_thread(steps)
        # with VLLM_W2EXT_SAMPLE the EngineCore gates the worker's hooks off on the steps it does not record: the
        # recorded executions are its runner's calls (through pre, or as a bounds hook)
        recorded = _executions() - executions0
        bounds_on = sorted(n for n, r in INSTRUMENTOR.runners.items() if getattr(r, "bounds_on", False))   # (older
        # trees in A/B arms have none)
        if a.counter_only:                         # nothing timed, the worker's hooks not counted: no direct figures
            hooks, by_role, total, recorded = {}, {}, None, None
        # the plugin's own sampled estimate over the same window (1 call in SAMPLE_EVERY timed, scaled up):
        # set beside the exact sum above, it says whether the dashboard's self-cost counter is biased
        sampled = {"hook_cpu_us_per_step": round(selfcost.hook_cpu_ns[0] / steps / 1e3, 2) if steps else None,
                   "hook_wall_us_per_step": round(selfcost.hook_wall_ns[0] / steps / 1e3, 2) if steps else None}
        steady_decode = _steady(steady)
        # of the worker's sample_tokens post: freeing the resolved end events vLLM made (``TimedFrees``)
        if frees is not None and steps:
            ns, calls, freed, steady_ns, made = frees.take()
            st_steps = steady_decode["steps"]
            event_free = {"us_per_step": round(ns / steps / 1e3, 2), "calls": calls, "events": freed,
                          "steady_us_per_step": round(steady_ns / st_steps / 1e3, 2) if st_steps else None,
                          "events_made": made, "events_made_per_step": round(made / steps, 4)}
        else:
            event_free = None
        rows.append({"batch": bs, "engine_steps": steps, "recorded_executions": recorded, "bounds_hooks": bounds_on,
                     "wall_s": round(wall, 3),
                     "event_free": event_free,
                     "us_per_step": total, "selfcost_sampled": sampled,
                     "direct": direct_by_hook(direct0, direct1, steps) if a.counter_only else None,
                     "direct_steady_decode": steady_direct.take() if steady_direct is not None else None,
                     "device_stop": ({"us_per_step": round(stops[0] / steps / 1e3, 2), "calls": stops[1]}
                                     if stops is not None and steps else None),
                     "us_per_step_by_role": by_role,
                     "export_thread_us_per_step": {"cpu": export[0], "wait": export[1], "gil_hold": export[2],
                                                   "parts": parts, "send_parts": send_parts,
                                                   "send": round(sum(parts[k] for k in send_parts), 2)},
                     "gc_by_thread": collections,
                     "steady_decode": steady_decode,
                     "step_ms": round(wall / steps * 1e3, 3) if steps else None, "hooks": hooks})
        st = rows[-1]["steady_decode"]
        print(f"batch {bs}: {steps} steps ({recorded} executions recorded), hooks {total} us per step ({by_role}); "
              f"steady decode {st.get('us_per_step')} us per step over {st['steps']} steps ({st.get('by_role')}); "
              f"export thread {export[0]} us CPU per step {parts}; gc {collections}; sampled counter {sampled}; "
              f"direct {rows[-1]['direct'] and rows[-1]['direct']['by_role']}; "
              f"vLLM's frees {rows[-1]['direct'] and rows[-1]['direct'].get('vllm_frees')}; "
              f"collections in hooks {rows[-1]['direct'] and rows[-1]['direct'].get('collections_in_hooks')}; "
              f"steady direct {_brief(rows[-1]['direct_steady_decode'])}; top: " +
              ", ".join(f"{k} {v['us_per_step']}" for k, v in list(hooks.items())[:5]), flush=True)
    import vllm
    end = _end_event()
    device = _device_check(llm, trace_dir)
    shutil.rmtree(trace_dir, ignore_errors=True)   # read back by explain above; nothing else needs it
    doc = {"what": __doc__.split("\n\n")[0], "machine": {"cpu": _cpu(), "python": platform.python_version(),
                                                         "vllm": vllm.__version__, "cores": os.cpu_count()},
           "model": Path(a.model).name, "engine": {k: v for k, v in kw.items() if k != "model"},
           "sample": int(os.environ.get("VLLM_W2EXT_SAMPLE", "1")),
           "rounds": a.rounds, "max_tokens": a.max_tokens, "prompt_len": a.prompt_len, "churn": a.churn, "per_batch": rows,
           "device_timeline": device, "end_event": end, "fronts": fronts}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    return 0


GC = CollectionTimer()
GC.start()


# calls of each wrapped bounds front while its runner was on and timed in its clock's windows (``hooks/bounds.py``):
# calls the runner does not count down (``HookRunner.calls``)
WINDOWED: dict = {}


def _executions() -> int:
    """The worker's recorded executions so far: its ``execute_model`` runner's calls (through ``pre``, or noted as a
    bounds hook's), 0 before it is made; with the bounds hooks timed in their clock's windows, the calls of its front
    while on (the engine gates it off on steps it does not record) are added from ``WINDOWED``."""
    from vllm_w2ext.hooks import INSTRUMENTOR
    r = INSTRUMENTOR.runners.get("worker.execute_model")
    return (r.calls if r is not None else 0) + WINDOWED.get("worker.execute_model", [0])[0]


def _export_thread() -> tuple[float, float, float, dict]:
    """CPU, waiting and GIL-holding seconds of this process's export thread so far (one process: the whole engine's),
    and its CPU by part (``Pipeline.export_cpu_parts``)."""
    from vllm_w2ext.telemetry import pipeline
    p = pipeline._pipeline
    return ((p.export_cpu_s, p.export_wait_s, p.export_hold_s, dict(p.export_cpu_parts)) if p is not None
            else (0.0, 0.0, 0.0, {}))


def _end_event() -> dict:
    """Whose events ended the steps (``hooks/end_event.py``): the class vLLM's event was borrowed from (None: the
    plugin recorded its own), whether the timer still borrows, and the events the timer made of its own (its pool)."""
    from vllm_w2ext.hooks import worker
    S = worker.S
    carrier = getattr(S, "borrow", None)
    timer = S.timer
    return {"carrier": getattr(carrier, "__name__", None), "borrowing": getattr(timer, "borrow", None),
            "own_events": len(timer.pool) if timer is not None else None}


def _device_check(llm, trace_dir: str) -> dict:
    """The trace folder of this run read back by ``vllm-w2ext explain``: does every worker step carry its
    device time (on the GPU: CUDA events resolved on the export thread), and what was the device doing."""
    import subprocess
    from vllm_w2ext.telemetry import pipeline
    llm.llm_engine.engine_core.shutdown()
    pipeline.flush_if_started(30)
    out = subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", "explain", trace_dir, "--format", "json"],
                         capture_output=True, text=True, timeout=300)
    try:
        ex = json.loads(out.stdout)
    except ValueError:
        return {"error": (out.stderr or out.stdout)[-2000:]}
    r = {"devices": ex.get("devices"), "device_idle_by_cause": ex.get("device_idle_by_cause"),
         "verdict": ex.get("verdict")}
    print("device timeline:", json.dumps(r), flush=True)
    return r


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
