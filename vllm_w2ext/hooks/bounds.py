"""Bounds hooks: calls whose only work on a recorded step without marks is to note when they began and ended.

Their front (``runner._FRONT_SOURCE``, while ``HookRunner.fast``) takes the call's two clock readings itself
and notes a ``Bounds`` in the hook's buffer here, instead of calling the hook's ``pre`` and ``post``: two
Python calls less per hooked call, and nothing interpreted on vLLM's thread (the C front writes the readings into a
``_cfront.Slot`` as raw values; the Python front appends the tuple). The timed calls (``selfcost``) and the
native observers append the same through ``HookRunner.enter``/``exit``. Where marks are wanted (NVTX, vLLM's
profiler) the hook's ``pre`` and ``post`` run as everywhere else.

- Everywhere: ``engine.update_from_output`` (the step's post reads UPDATES: its bounds and batch into the
  StepRecord), and the worker's V1 forward and V2 forward launch (read by the execution's post, or by the engine
  step's post where that reads the execution too).
- ``engine.schedule``, whose buffer is a consumer (``engine_core.SCHEDULES``: its ``append`` is
  ``engine_core.scheduled``): each call's Bounds go at once to the function that stamps the SchedulerOutput and reads
  the batch, one Python call per schedule where ``pre`` and ``post`` took two and a clock read.
- The worker's ``execute_model`` and ``sample_tokens`` only where the worker runs on the EngineCore's thread (TP=1
  on the GPU: ``MODE.in_process``), from the step after both have set their identity there: the engine step's post
  takes the execution's bounds raw into the StepRecord (``steps.facts.WorkerBounds``), and the export side makes
  the worker's spans of them as the worker's hooks make them elsewhere (``steps.assemble``). Elsewhere those two
  run their ``pre``/``post``.

Each buffer holds the last call (``buffer``: a ``_cfront.Slot``, else a deque of 4): its consumer reads the last entry
once per call it encloses and clears it, and calls no consumer reads (warm-up, dummy runs, a consumer switched off)
cannot pile up.

Self-cost: a bounds hook counts no calls down to its next timed one (``runner.HookRunner``). Its calls all run inside
calls of its process's **clock** (``Mode.clock``): the EngineCore's step where one runs in the process (every bounds
hook is inside it), else the worker's ``execute_model`` (the forward and its launch are inside it). A timed call of
the clock opens a window (``Mode.open_window``): the bounds hooks' calls inside it are timed too, each standing for as
many calls as the clock's call does, so the estimate stays unbiased and their fronts do nothing else. Calls outside
any call of the clock (the worker's warm-up and dummy runs before the first step) are not timed.
"""
from __future__ import annotations

import os
from collections import deque
from typing import Any, NamedTuple

from vllm_w2ext.telemetry.recording import Recorder
from vllm_w2ext.vocab import WORKER


class Bounds(NamedTuple):
    """One call of a bounds hook (a plain tuple in this order on the hot path)."""
    start: int                      # ns (time.time_ns) before the call
    end: int                        # ns after it
    kept: Any                       # its first argument or its result (``Hook.bounds_keep``), else None
    error: BaseException | None     # what the method raised (the front re-raises it)


try:                                # a buffer whose C fronts note each call raw (no tuple, no ints: ``_cfront.Slot``)
    from vllm_w2ext.hooks._cfront import Slot as _Slot
except ImportError:                 # (no extension, or one from before Slot)
    _Slot = None


def buffer():
    """A bounds hook's buffer: where the C extension was built a ``_cfront.Slot`` (its last call's Bounds held as raw
    values, written by the hook's C front; for Python the deque below as the hooks use one), else a deque."""
    return _Slot() if _Slot is not None else deque(maxlen=4)


UPDATES = buffer()      # engine.update_from_output, its SchedulerOutput kept
EXECUTIONS = buffer()   # worker.execute_model, its SchedulerOutput kept
SAMPLES = buffer()      # worker.sample_tokens, its result kept (vLLM's step-end event rides on it)
FORWARDS = buffer()     # worker.forward_v1 (V1 runner)
LAUNCHES = buffer()     # worker.forward_launch (V2 runner): its start is the forward's launch
ALL = (UPDATES, EXECUTIONS, SAMPLES, FORWARDS, LAUNCHES)


class Mode:
    """Where the worker's hooks run as bounds hooks (this process runs the EngineCore's step and the worker's
    hooks on one thread), and the worker's state its consumer carries from step to step there. Slots: the engine
    step's post in C reads ``ready``, ``in_process``, ``last_end`` and ``device_stop`` at their offsets
    (``_cfront.slots_setup``)."""
    __slots__ = ("runners", "bounded", "clock", "window", "engine_here", "worker_here", "in_process", "ready",
                 "last_end", "device_stop", "_worker_last_end")

    def __init__(self) -> None:
        self.runners: list = []        # runners of the hooks that are bounds hooks only in_process
        self.bounded: list = []        # runners of every bounds hook (their windows)
        self.clock = "worker"          # this process's clock: "engine" once the EngineCore's step ran here
        self.window = 0                # the weight of the clock's timed call open now (0: none)
        self.engine_here = False       # the EngineCore's step hook recorded a step in this process
        self.worker_here = False       # the worker set its identity in this process
        self.in_process = False
        self.ready = False             # both seen, not started yet
        self.last_end = 0              # ns: end of the last execution read from bounds (0: none to measure from)
        self.device_stop = None        # the worker's GPU timer (stop(step, launch, result)); None: not timed
        self._worker_last_end = int    # () -> the end of the worker's last execution its own hooks recorded

    def use(self, runners) -> None:
        """The runners of this process's instrumentation: the always-on bounds hooks switched on, the in-process ones
        kept for ``start``."""
        runners = list(runners)
        self._off()
        self.bounded = [r for r in runners if r.spec.bounds is not None]
        self.runners = [r for r in self.bounded if r.spec.in_process_bounds]
        self.window = 0
        for r in self.bounded:
            r.set_window(0)
            r.set_bounds(not r.spec.in_process_bounds, self.windowed(r))
        self.ready = self.engine_here and self.worker_here     # instrumented again in a process already seen

    def windowed(self, r) -> bool:
        """Are all of ``r``'s calls inside calls of this process's clock? The engine step encloses every bounds hook;
        the worker's execution encloses the worker's that are bounds hooks in every process (the forward, its
        launch)."""
        return self.clock == "engine" or (r.spec.role == WORKER and not r.spec.in_process_bounds)

    def _set_clock(self, clock: str) -> None:
        self.clock = clock
        for r in self.bounded:
            r.set_bounds(r.bounds_on, self.windowed(r))

    def open_window(self, weight: int) -> bool:
        """The clock's timed call (standing for ``weight`` calls) begins: the bounds hooks' calls are timed until it
        ends (``close_window``). False: one is open already (nothing to close after this call)."""
        if self.window:
            return False
        self.window = weight
        for r in self.bounded:          # HookRunner.set_window written out (once per timed step of the clock's, light
            r.window = weight           # steps included)
            r.fast = False
        return True

    def close_window(self) -> None:
        self.window = 0
        for r in self.bounded:
            r.window = 0
            r.fast = r.active and r.bounds_on and r.windowed

    def arrive(self, engine: bool = False, worker=None) -> None:
        """The EngineCore's step (``engine``) or the worker set its identity in this process (``worker``: a callable,
        the end of its last execution, where its hooks keep it); both: ``ready``, and the engine step's post calls
        ``start`` at its end."""
        if engine and self.clock != "engine":      # the step encloses every bounds hook's call from here on
            self._set_clock("engine")
        self.engine_here |= engine
        if worker is not None:
            self.worker_here = True
            self._worker_last_end = worker
        self.ready = self.engine_here and self.worker_here and not self.in_process

    def start(self) -> None:
        """Between two steps: the worker's hooks become bounds hooks (the gap before the next execution measured from
        the last one its own hooks recorded)."""
        self.ready = False
        self.in_process = True
        self.last_end = self._worker_last_end()     # the gap before the first execution read from bounds too
        clear()
        for r in self.runners:
            r.set_bounds(True, self.windowed(r))

    def forget(self) -> None:
        """Unrecorded steps ran (pause, gate, dummy runs): the next execution has no previous one to measure from."""
        self.last_end = 0

    def failed(self, runner) -> None:
        """A hook fault: the engine step's hook, the consumer of the worker's bounds, switched off means the worker's
        hooks must record their own spans again."""
        if runner.spec.name.startswith("engine.step"):
            if self.window:                        # its timed call's window (a fault in its post)
                self.close_window()
            if self.in_process:
                self.leave()
            self._set_clock("worker")              # nothing times the bounds hooks' calls in its windows now

    def leave(self) -> None:
        """Neither seen (a forked child), or the consumer gone: the worker's hooks record their own spans again."""
        self.engine_here = self.worker_here = False
        self._off()

    def reset(self) -> None:
        """As in a new process (a forked child): neither seen, no window open, and the clock the worker's until an
        engine step runs here."""
        self.leave()
        if self.window:
            self.close_window()
        self._set_clock("worker")

    def _off(self) -> None:
        self.in_process = self.ready = False
        for r in self.runners:
            r.set_bounds(False, self.windowed(r))


MODE = Mode()
os.register_at_fork(after_in_child=MODE.reset)      # a forked child is neither until it says so itself

try:                                # the C hooks read Mode's and Recorder's slots at their offsets (_cfront.c)
    from vllm_w2ext.hooks._cfront import slots_setup
except ImportError:                 # (no extension, or one from before slots_setup: attribute lookups, as in Python)
    pass
else:
    slots_setup(Mode, Recorder)


def clear() -> None:
    for b in ALL:
        b.clear()
