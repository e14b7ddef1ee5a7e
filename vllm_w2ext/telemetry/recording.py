"""The hot path: record a range's ids and timestamps, and nothing else.

A range is a plain list in :class:`~vllm_w2ext.telemetry.wire.RangeRecord` field order; ``end`` stamps
it and appends it to a buffer that the export thread swaps out whole. A phase inside a range (schedule,
update, sample, forward) is cheaper still: its start is a clock read, and its end appends an
:class:`~vllm_w2ext.telemetry.wire.Interval` (bounds and parent; no span id, no thread stack), or, for the
EngineCore's schedule and update, two fields of the step's record (``phase_end`` says when). Spans, attributes that need
lookups, links, trace-file packets and metrics are all built later from these records, in the export
process by default (see ``pipeline.py``). NVTX ranges use the domain handle with one pre-built
``EventAttributes`` per name (a registered string), and cost nothing when no NVTX tool is attached.
"""
from __future__ import annotations

import collections
import os
import random
import threading
import time

from vllm_w2ext.telemetry.wire import DATA, END, ERROR, NESTED, ON_THREAD, SPAN_ID, STEP, TRACE_ID, open_range
from vllm_w2ext.vocab import ENGINE, FRONT, WORKER, profiler_annotation



def fork_safe_random() -> random.Random:
    """A generator of the plugin's own, seeded again in a forked child (Python does that for the random
    module's global one only): a forked EngineCore or worker would otherwise draw the very numbers its parent
    draws (vLLM forks them on the GPU; tests/unit/test_ids_after_fork.py)."""
    rng = random.Random()
    os.register_at_fork(after_in_child=rng.seed)
    return rng


_getrandbits = fork_safe_random().getrandbits          # span and trace ids
_now = time.time_ns
# The same generator's getrandbits, for a hook that writes a range's list out itself (``Recorder.begin``'s list,
# without the call): a span id is ``span_bits(64) or 1``.
span_bits = _getrandbits

ROOT: tuple = ()     # pass as ``parent`` to start a new trace even inside another range
# torch.profiler.record_function while vLLM's torch profiler is recording (set by the worker hook),
# so the same ranges appear in the profiler's own trace; None otherwise (one list lookup per range).
PROFILER_ANNOTATION: list = [None]
# Does a phase need marks (NVTX on a recorder of this process, or the profiler's annotations)? While not, a hook
# takes a phase's start as ``_now()`` itself instead of calling ``Recorder.phase_begin`` (a Python call less
# on every phase: ~0.6k instructions). Once True for NVTX it stays so: the full path is never wrong, only dearer.
PHASE_MARKS: list = [False]
_nvtx_on = [False]

# NVTX colours (ARGB) and category ids per role.
NVTX_COLOR = {FRONT: 0xFF4C9BE8, ENGINE: 0xFFE8A33C, WORKER: 0xFF5CB85C}
NVTX_CATEGORY = {FRONT: 1, ENGINE: 2, WORKER: 3}


def annotate_profiler(on: bool) -> None:
    if on:
        import torch
        PROFILER_ANNOTATION[0] = torch.profiler.record_function
    else:
        PROFILER_ANNOTATION[0] = None
    PHASE_MARKS[0] = on or _nvtx_on[0]


def new_trace_id() -> int:
    return _getrandbits(128) or 1


def new_span_id() -> int:
    return _getrandbits(64) or 1


def context(r: list) -> tuple[int, int]:
    """(trace_id, span_id) of an open or finished range."""
    return r[TRACE_ID], r[SPAN_ID]


class Nvtx:
    """NVTX ranges through one domain handle; one cached ``EventAttributes`` per (name, role)."""

    def __init__(self, domain) -> None:
        self.dom = domain
        self._attrs: dict = {}
        for role, cid in NVTX_CATEGORY.items():
            try:
                domain.get_category_id(role)      # names the category for tools
            except Exception:  # pragma: no cover - older nvtx
                pass

    @classmethod
    def attach(cls, domain_name: str, mode: str) -> "Nvtx | None":
        """``auto``: only when an NVTX tool is attached (Nsight Systems/Compute or any injection
        library); without one every NVTX call is a no-op and is skipped altogether."""
        if mode == "off":
            return None
        import nvtx
        dom = nvtx.get_domain(domain_name)
        if mode == "auto" and type(dom).__name__ == "DummyDomain":
            return None
        return cls(dom)

    def attributes(self, name: str, role: str, step: int):
        key = (name, role)
        a = self._attrs.get(key)
        if a is None:
            a = self._attrs[key] = self.dom.get_event_attributes(   # registers the message string
                message=name, color=NVTX_COLOR[role], category=NVTX_CATEGORY[role])
        a.payload = step if step >= 0 else None
        return a

    def push(self, name: str, role: str, step: int) -> None:
        self.dom.push_range(self.attributes(name, role, step))

    def pop(self) -> None:
        self.dom.pop_range()

    def start(self, name: str, role: str, step: int):
        return self.dom.start_range(self.attributes(name, role, step))

    def end(self, handle) -> None:
        self.dom.end_range(handle)


def _exit_annotation(a) -> None:
    """Close an open record_function annotation (None: nothing open)."""
    if a is not None:
        try:
            a.__exit__(None, None, None)
        except Exception:  # the profiler stopped in between
            pass


class _ThreadStack(threading.local):
    """Each thread's stack of open nested ranges, made on the thread's first access: a plain attribute load
    on the hot path (no lookup with a default, no method call)."""

    def __init__(self) -> None:
        self.s: list[list] = []


class Recorder:
    """Per-process recorder. Each thread keeps its own stack of open nested ranges. Slots: the C hooks read ``buf``
    and ``capacity`` at their offsets (``_cfront.slots_setup``), one cache line where an attribute lookup touched
    the type's and the instance dict's too, on every step."""
    __slots__ = ("buf", "capacity", "dropped", "recorded", "nvtx", "_local", "_handles", "_annotations")

    def __init__(self, capacity: int, nvtx: Nvtx | None):
        self.buf: collections.deque[list] = collections.deque()   # append/popleft: thread-safe
        self.capacity = capacity
        self.dropped = 0
        self.recorded = 0
        self.nvtx = nvtx
        if nvtx is not None:
            _nvtx_on[0] = PHASE_MARKS[0] = True
        self._local = _ThreadStack()
        self._handles: dict[int, object] = {}      # id(range) -> NVTX start/end handle
        self._annotations: dict[int, object] = {}  # id(range) -> open record_function

    # -- hot path ----------------------------------------------------------------------------
    def begin(self, name: str, role: str, parent: tuple | None = None, attrs: dict | None = None,
              step: int = -1, nested: bool = True) -> list:
        """Open a range (parent: the innermost open range of this thread unless given; ``ROOT`` for
        none). ``nested``: True, on this thread's stack (NVTX push/pop); False, a free-standing interval that
        may end on another thread (NVTX start/end); ``wire.ON_THREAD``, on the thread's track, and on its stack
        only while ``PHASE_MARKS[0]`` (NVTX or the profiler's annotations want marks): for ranges nothing nests in
        implicitly (every child names its parent). The step's hooks pass it, and their arguments by position (a
        call by keyword costs more)."""
        if nested is ON_THREAD and PHASE_MARKS[0]:
            nested = True
        stack = self._local.s if nested is True or parent is None else None
        if parent is ROOT:
            parent = None
        elif parent is None and stack:
            top = stack[-1]
            parent = (top[TRACE_ID], top[SPAN_ID])
            if step < 0:
                step = top[STEP]
        # a list in RangeRecord's field order (wire.open_range, written out: this runs on every range)
        if parent is None:
            r = [name, role, _getrandbits(128) or 1, _getrandbits(64) or 1, 0, _now(), 0, step, attrs, None, None,
                 nested, None]
        else:
            r = [name, role, parent[0], _getrandbits(64) or 1, parent[1], _now(), 0, step, attrs, None, None,
                 nested, None]
        nv = self.nvtx
        if nested is True:
            stack.append(r)
            if nv is not None:
                nv.push(name, role, step)
            rf = PROFILER_ANNOTATION[0]
            if rf is not None:
                a = self._annotations[id(r)] = rf(profiler_annotation(name, step))
                a.__enter__()
        elif nv is not None:
            self._handles[id(r)] = nv.start(name, role, step)
        return r

    def end(self, r: list, error: BaseException | None = None) -> None:
        r[END] = _now()
        if error is not None:
            r[ERROR] = type(error).__name__
        if r[NESTED] is True:
            if self._annotations:
                self._close_annotation(r)
            stack = self._local.s
            nv = self.nvtx
            if stack and stack[-1] is r:
                stack.pop()
                if nv is not None:
                    nv.pop()
            elif r in stack:  # an inner range was never closed: unwind to keep NVTX balanced
                while stack:
                    top = stack.pop()
                    if nv is not None:
                        nv.pop()
                    if top is r:
                        break
        elif self.nvtx is not None:
            h = self._handles.pop(id(r), None)
            if h is not None:
                self.nvtx.end(h)
        buf = self.buf
        if len(buf) < self.capacity:
            buf.append(r)
        else:
            self._full()

    def _full(self) -> None:
        """The buffer is full (the export thread is not taking it): the range ending now is dropped, and so
        are the phases appended since the buffer filled (hooks append a phase's Interval without a check, see
        ``phase_end``): every range's end bounds them, the newest dropped first."""
        buf = self.buf
        self.dropped += 1
        try:                     # take() leaves more than ``capacity`` - 1 here; defensive all the same: a
            while len(buf) > self.capacity:     # raise here would switch the hook off
                buf.pop()
                self.dropped += 1
        except IndexError:
            pass

    def phase_begin(self, name: str, role: str, step: int):
        """Start of a phase: its wall-clock start (ns), or ``(start, annotation)`` while NVTX or profiler
        marks are on (they are pushed here and popped by ``phase_end``). Hand the result to ``phase_end``. Hooks
        call it only while ``PHASE_MARKS[0]``, and take ``time.time_ns()`` themselves otherwise."""
        if self.nvtx is None and PROFILER_ANNOTATION[0] is None:
            return _now()
        return _now(), self._open_marks(name, role, step)

    def phase_end(self, state, name: str, role: str, trace_id: int, parent_id: int, step: int,
                  error: BaseException | None = None, attrs: dict | None = None) -> tuple:
        """Record the phase begun with ``state`` as a child of (trace_id, parent_id); its Interval tuple
        (bounds at ``wire.IV_START`` / ``wire.IV_END``).

        The step's hooks call this only for a phase with marks to close or an error to name, or outside a
        recorded step. Otherwise (``state`` an int: no marks) the worker's hooks append the Interval tuple to
        ``buf`` themselves, without this call and without a capacity check (``end`` bounds the buffer for
        them), and the EngineCore's keep the schedule and update bounds in the step's ``StepRecord``; each
        Python call and each record left alive for the collector counts on a step's budget
        (``benchmarks/hook_instructions.sh``, ``benchmarks/hook_allocations.py``)."""
        end = _now()
        if type(state) is tuple:
            state, annotation = state
            self._close_marks(annotation)
        iv = (name, role, trace_id, parent_id, state, end, step, attrs,             # wire.Interval
              None if error is None else type(error).__name__)
        buf = self.buf
        if len(buf) < self.capacity:
            buf.append(iv)
        else:
            self.dropped += 1
        return iv

    def _open_marks(self, name: str, role: str, step: int):
        if self.nvtx is not None:
            self.nvtx.push(name, role, step)
        rf = PROFILER_ANNOTATION[0]
        if rf is None:
            return None
        a = rf(profiler_annotation(name, step))
        a.__enter__()
        return a

    def _close_marks(self, annotation) -> None:
        _exit_annotation(annotation)
        if self.nvtx is not None:
            self.nvtx.pop()

    def _close_annotation(self, r: list) -> None:
        _exit_annotation(self._annotations.pop(id(r), None))

    def emit(self, name: str, role: str, parent: tuple | None, start_ns: int, end_ns: int,
             attrs: dict | None = None, step: int = -1, data=None) -> list:
        """Record an interval measured elsewhere (no NVTX: it is already in the past); ``data``: raw facts
        for the export side."""
        if parent is None:
            r = open_range(name, role, new_trace_id(), new_span_id(), 0, start_ns, step, attrs, False)
        else:
            r = open_range(name, role, parent[0], new_span_id(), parent[1], start_ns, step, attrs, False)
        r[END] = end_ns
        r[DATA] = data
        buf = self.buf
        if len(buf) < self.capacity:
            buf.append(r)
        else:
            self.dropped += 1
        return r

    def take(self) -> list[list]:
        """Everything recorded so far (the export thread's only touch of the buffer)."""
        q = self.buf
        pop = q.popleft
        # At most ``capacity``: vLLM's thread may trim a full buffer meanwhile (``_full``, from the right, never
        # below ``capacity``), so that many are always there to pop; the rest go with the next take.
        out = [pop() for _ in range(min(len(q), self.capacity))]
        self.recorded += len(out)
        return out
