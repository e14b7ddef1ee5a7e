"""One range abstraction: a timed interval that becomes an OpenTelemetry span and an NVTX range.

The hot path (``begin``/``end``) only takes timestamps, pushes/pops an NVTX range and appends the
finished :class:`Range` to a bounded queue. Span objects, links and attributes that need lookups
are built later on the export thread (see ``pipeline.py``), so the engine never waits on an exporter.
"""
from __future__ import annotations

import collections
import random
import threading
import time
from typing import Any, Callable

FRONT, ENGINE, WORKER = "frontend", "engine_core", "worker"
ROLES = (FRONT, ENGINE, WORKER)
# NVTX colours per component (ARGB) and category ids; same order as ROLES.
_NVTX_COLOR = {FRONT: 0xFF4C9BE8, ENGINE: 0xFFE8A33C, WORKER: 0xFF5CB85C}
_NVTX_CATEGORY = {FRONT: 1, ENGINE: 2, WORKER: 3}

_rand = random.Random()
_getrandbits = _rand.getrandbits
_now = time.time_ns


ROOT: tuple = ()     # pass as ``parent`` to start a new trace even inside another range
# torch.profiler.record_function while vLLM's torch profiler is recording (set by the worker hook),
# so the same ranges appear in the profiler's own trace; None otherwise (one list lookup per range).
PROFILER_ANNOTATION: list = [None]


def annotate_profiler(on: bool) -> None:
    if on:
        import torch
        PROFILER_ANNOTATION[0] = torch.profiler.record_function
    else:
        PROFILER_ANNOTATION[0] = None


class Range:
    """A finished or open interval. Plain slots: cheap to create, read by the export thread."""

    __slots__ = ("name", "role", "trace_id", "span_id", "parent_id", "start_ns", "end_ns",
                 "attrs", "links", "finalize", "step", "error", "nvtx_handle", "nested", "data", "annotation")

    def __init__(self, name: str, role: str, trace_id: int, span_id: int, parent_id: int,
                 start_ns: int, attrs: dict | None, step: int):
        self.name = name
        self.role = role
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id      # 0: root
        self.start_ns = start_ns
        self.end_ns = 0
        self.attrs = attrs
        self.links: list[tuple[int, int]] | None = None
        self.finalize: Callable[[Range], Any] | None = None   # runs on the export thread
        self.step = step                # engine step id, -1 when none
        self.error: str | None = None
        self.nvtx_handle = None
        self.nested = True
        self.data: Any = None           # hook payload for finalize
        self.annotation = None          # torch profiler record_function, while profiling

    @property
    def context(self) -> tuple[int, int]:
        return self.trace_id, self.span_id

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Range({self.name!r}, role={self.role}, step={self.step}, dur={self.end_ns - self.start_ns}ns)"


def new_trace_id() -> int:
    return _getrandbits(128) or 1


def new_span_id() -> int:
    return _getrandbits(64) or 1


class _NoNvtx:
    def push_range(self, **kw): return None
    def pop_range(self): return None
    def start_range(self, **kw): return None
    def end_range(self, h): return None


class Recorder:
    """Per-process recorder. Thread-safe: each thread keeps its own stack of open ranges."""

    def __init__(self, queue_size: int, nvtx_domain: str | None):
        self.queue: collections.deque[Range] = collections.deque()
        self.queue_size = queue_size
        self.dropped = 0
        self.recorded = 0
        self._local = threading.local()
        self._nvtx = _NoNvtx()
        if nvtx_domain:
            import nvtx
            self._nvtx = nvtx.get_domain(nvtx_domain)
            for role, cid in _NVTX_CATEGORY.items():
                try:
                    self._nvtx.get_category_id(role)  # registers the name for tools
                except Exception:  # pragma: no cover - older nvtx
                    pass

    # -- stack -------------------------------------------------------------------------------
    def _stack(self) -> list[Range]:
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = []
        return s

    def current(self) -> Range | None:
        s = self._stack()
        return s[-1] if s else None

    # -- hot path ----------------------------------------------------------------------------
    def begin(self, name: str, role: str, *, parent: tuple[int, int] | None = None,
              attrs: dict | None = None, step: int = -1, nested: bool = True) -> Range:
        """Open a range (parent: the innermost open range of this thread unless given; ``ROOT``
        for none). ``nested``: push on this thread's stack and use an NVTX push/pop range;
        otherwise a process-wide NVTX start/end range (for intervals that end on another thread)."""
        stack = self._stack()
        if parent is ROOT:
            parent = None
        elif parent is None and stack:
            top = stack[-1]
            parent = (top.trace_id, top.span_id)
            if step < 0:
                step = top.step
        if parent is None:
            r = Range(name, role, new_trace_id(), new_span_id(), 0, _now(), attrs, step)
        else:
            r = Range(name, role, parent[0], new_span_id(), parent[1], _now(), attrs, step)
        payload = step if step >= 0 else None
        if nested:
            self._nvtx.push_range(message=name, color=_NVTX_COLOR[role],
                                  category=_NVTX_CATEGORY[role], payload=payload)
            stack.append(r)
            rf = PROFILER_ANNOTATION[0]
            if rf is not None:
                r.annotation = rf(name if step < 0 else f"{name} #{step}")
                r.annotation.__enter__()
        else:
            r.nested = False
            r.nvtx_handle = self._nvtx.start_range(message=name, color=_NVTX_COLOR[role],
                                                   category=_NVTX_CATEGORY[role], payload=payload)
        return r

    def end(self, r: Range, error: BaseException | None = None) -> None:
        r.end_ns = _now()
        if error is not None:
            r.error = type(error).__name__
        if r.annotation is not None:
            try:
                r.annotation.__exit__(None, None, None)
            except Exception:  # the profiler stopped in between
                pass
            r.annotation = None
        if r.nested:
            stack = self._stack()
            if stack and stack[-1] is r:
                stack.pop()
                self._nvtx.pop_range()
            elif r in stack:  # an inner range was never closed: unwind to keep NVTX balanced
                while stack:
                    top = stack.pop()
                    self._nvtx.pop_range()
                    if top is r:
                        break
        else:
            self._nvtx.end_range(r.nvtx_handle)
            r.nvtx_handle = None
        self.submit(r)

    def emit(self, name: str, role: str, parent: tuple[int, int] | None, start_ns: int, end_ns: int,
             attrs: dict | None = None, step: int = -1) -> Range:
        """Record an interval measured elsewhere (no NVTX: it is already in the past)."""
        if parent is None:
            r = Range(name, role, new_trace_id(), new_span_id(), 0, start_ns, attrs, step)
        else:
            r = Range(name, role, parent[0], new_span_id(), parent[1], start_ns, attrs, step)
        r.end_ns = end_ns
        r.nested = False
        self.submit(r)
        return r

    def submit(self, r: Range) -> None:
        """Queue a finished range (also used for ranges built after the fact)."""
        if len(self.queue) < self.queue_size:
            self.queue.append(r)
            self.recorded += 1
        else:
            self.dropped += 1

    def drain(self) -> list[Range]:
        q = self.queue
        out = []
        pop = q.popleft
        try:
            for _ in range(len(q)):
                out.append(pop())
        except IndexError:  # pragma: no cover - concurrent drain
            pass
        return out
