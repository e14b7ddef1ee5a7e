"""GPU time of each step and GPU idle between steps, from CUDA events read without syncing.

vLLM's thread records ONE event per step, on the current stream, once the step's sampling has been
launched (its end): one ``cudaEventRecord``, through torch's C method on a stream looked up by id and
rebuilt only when the id changes (``torch.cuda.Event.record()`` builds a Python ``Stream`` on every call:
11.7 us against 3.9 us on the H200 host, ``benchmarks/gpu/event_cost.py``, part ``raw``). Every CUDA call on that
thread is dear inside vLLM, whose own threads are in the driver too: the previous design also recorded a
start event and queried the previous end event at ``Worker.execute_model``, and that hook took a median
23.2 us per step on the H200 host (4-layer model, batch 1, fully traced) against 6.8 us with this one
(five interleaved runs each, ``benchmarks/results/h200/device_timing``).

The export thread places those end events on the wall clock: on each poll it records an *anchor*, an
event on a stream of its own that nothing else uses, so the GPU runs it as soon as it is submitted, and
takes the wall clock right after the record returns. An end event recorded after that anchor ends
``anchor wall + elapsed(anchor, end)``: no clock sync, no second event per step. Then, with ``launch``
the wall clock when the step's ``Worker.execute_model`` started:

- idle before the step = ``launch - previous end`` when the GPU had finished the previous step by then,
  else 0 (async scheduling keeps the GPU a step ahead: the step's work queued behind the previous one);
- busy = ``end - max(launch, previous end)``.

That is what a start event recorded at ``launch`` measured (it ran at once on an idle GPU, or right
after the previous step on a busy one), so the samples mean what they meant. The anchor's error is the
time between the record call's return and the GPU running it on an otherwise idle stream: not measured
on its own; with this timing, explain still finds the H200's planted scheduler sleep at 38.4 % of the wall
time against 36.1 % planted (``benchmarks/results/h200/device_timing/explain``). End events are resolved
on the export thread (``poll``), which hands the samples to the export side as one record per interval: one
``cudaEventElapsedTime`` per step through the CUDA runtime torch loaded (ctypes, the GIL held: a non-blocking
call; "not ready" means the step has not finished), where torch's way takes an ``Event.query()`` of the end event
and an ``elapsed_time`` call, each through its device guard: 7-8.6 µs of the export thread's CPU per resolved step
on the H200 host (``benchmarks/results/h200/event_cost``). Events come from a pool: creating a CUDA event
costs more than recording one."""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Callable, NamedTuple


MAX_PENDING = 4096        # steps recorded and not yet resolved (about 20 s at 5 ms steps); beyond: drop the oldest
_wall = time.time_ns
NOT_READY = 600           # cudaErrorNotReady
# Device idle and busy time (ns) of the steps whose idle was measured (a recorded predecessor), every timer of the
# process together, since it started: the cost budget's bound on what the plugin can delay (hooks.cost_budget).
MEASURED = [0, 0]


def loaded_library(prefix: str) -> str | None:
    """The path of the first shared library this process has loaded whose file name starts with ``prefix``
    (``libcudart.so``: torch's CUDA runtime), from /proc/self/maps; None if none is (a static runtime, or no
    /proc)."""
    try:
        with open("/proc/self/maps") as f:
            for ln in f:
                path = ln.rsplit(None, 1)[-1]
                if os.path.basename(path).startswith(prefix):
                    return path
    except OSError:
        pass
    return None


def loaded_cudart() -> str | None:
    """The CUDA runtime library this process has loaded (``loaded_library``)."""
    return loaded_library("libcudart.so")


class CudaRuntime:
    """The CUDA runtime torch loaded (``loaded_cudart``), called through ctypes with the GIL held (``PyDLL``): the
    event calls the timer makes, on raw event and stream handles. None of them blocks (about a microsecond each), so
    none is worth a GIL hand-off: torch's ``Event.record`` releases the GIL around its record, and vLLM's thread
    then waits to get it back behind whatever thread took it meanwhile (vLLM's output threads, the export thread):
    p90 61 µs against 10 µs this way beside a thread running Python (``benchmarks/results/h200/event_record``).
    Handles are ``c_void_p`` objects and the two per-step calls have no ``argtypes``: ctypes then passes them as
    they are, a third cheaper than converting Python ints. The calling thread must have the events' device current
    (vLLM's thread has; the export thread makes it so, ``GpuTimer.poll``)."""

    def __init__(self, path: str) -> None:
        import ctypes
        lib = ctypes.PyDLL(path)
        self._ctypes = ctypes
        self._create, self.record, self._elapsed_fn, self.clear = (
            lib.cudaEventCreateWithFlags, lib.cudaEventRecord, lib.cudaEventElapsedTime, lib.cudaGetLastError)
        self._create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint]
        self.clear.argtypes = []
        for fn in (self._create, self.record, self._elapsed_fn, self.clear):
            fn.restype = ctypes.c_int
        self._ms = ctypes.c_float()
        self._ms_ref = ctypes.byref(self._ms)

    @classmethod
    def load(cls, path: str | None = None) -> "CudaRuntime | None":
        """The loaded runtime's calls; None when none is found (a static runtime, or no /proc): torch's calls then."""
        path = path or loaded_cudart()
        return cls(path) if path is not None else None

    def handle(self, value: int):
        """A raw handle (a stream's ``cuda_stream``, an event's ``cuda_event``) as ``record`` and ``elapsed`` take it."""
        return self._ctypes.c_void_p(value)

    def new_event(self):
        """A timing event (``cudaEventDefault``) on the current device: its handle. Never destroyed: the timer
        keeps its events in a pool for the life of the process."""
        h = self._ctypes.c_void_p()
        rc = self._create(self._ctypes.byref(h), 0)
        if rc:
            self.clear()
            raise RuntimeError(f"cudaEventCreateWithFlags returned {rc}")
        return h

    def elapsed(self, start, end) -> float | None:
        """Milliseconds from one recorded event to another (handles), or None while either has not run."""
        rc = self._elapsed_fn(self._ms_ref, start, end)
        if rc == 0:
            return self._ms.value
        self.clear()                            # the runtime keeps the code as this thread's last error (torch
        if rc == NOT_READY:                     # clears it the same way after a query that is not ready)
            return None
        raise RuntimeError(f"cudaEventElapsedTime returned {rc}")


def torch_elapsed():
    """The fallback through torch's calls (no runtime library found): ``elapsed(start, end)`` of two torch events
    queries the end event, the start event only until it has once been found done (``start`` is the poll's anchor,
    shared by the steps recorded after it), then ``elapsed_time``."""
    done = [None]                               # the last start event found done

    def elapsed(start, end):
        if not end.query():
            return None
        if start is not done[0]:
            if not start.query():
                return None
            done[0] = start
        return start.elapsed_time(end)
    return elapsed


class CudaCalls(NamedTuple):
    """What a ``GpuTimer`` calls: the CUDA runtime's (``runtime_calls``) or torch's (``torch_calls``); tests pass
    stand-ins."""
    new_event: Callable[[], Any]                # a timing event for vLLM's stream (a handle, or a torch Event)
    record: Callable[[Any, Any], Any]           # record(event, stream): an error code (0: done), or None
    clear: Callable[[], Any]                    # after a failed record: clear the thread's last error
    current: Callable[[int], tuple]             # the current stream's ids (stream id, device index, device type)
    stream: Callable[[tuple], Any]              # what ``record`` takes for the stream of those ids
    device: int
    elapsed: Callable[[Any, Any], float | None]   # ms from an anchor to an end event, None while not run
    use_device: Callable[[], None]              # the events' device made current on the polling thread
    anchor: Callable[[], tuple]                 # record an anchor on the timer's own stream: (for elapsed, keep)


def _torch_stream(torch, device: int):
    """The timer's own stream for anchors (idle: the GPU runs them at once), made on first use."""
    made = []

    def stream():
        if not made:
            made.append(torch.cuda.Stream(device=device))
        return made[0]
    return stream


def runtime_calls(rt: CudaRuntime, device: int) -> CudaCalls:
    """vLLM's thread records its end events through the runtime (the GIL held); anchors stay torch events (one per
    poll, on the export thread: torch frees them once no pending step refers to them), read by their handle."""
    import torch
    own = _torch_stream(torch, device)

    def anchor() -> tuple:
        e = torch.cuda.Event(enable_timing=True)
        e.record(own())
        return rt.handle(e.cuda_event), e

    def stream(sid: tuple):
        return rt.handle(torch.cuda.Stream(stream_id=sid[0], device_index=sid[1], device_type=sid[2]).cuda_stream)
    return CudaCalls(rt.new_event, rt.record, rt.clear, torch._C._cuda_getCurrentStream, stream, device, rt.elapsed,
                     lambda: torch.cuda.set_device(device), anchor)


def torch_calls(device: int) -> CudaCalls:
    """torch's calls throughout (no runtime library found): ``Event.record`` without its Python wrapper, on a
    stream rebuilt only when its id changes (``Event.record()`` builds a Python ``Stream`` on every call)."""
    import torch
    own = _torch_stream(torch, device)

    def anchor() -> tuple:
        e = torch.cuda.Event(enable_timing=True)
        e.record(own())
        return e, e
    return CudaCalls(lambda: torch.cuda.Event(enable_timing=True), torch._C._CudaEventBase.record, lambda: None,
                     torch._C._cuda_getCurrentStream,
                     lambda sid: torch.cuda.Stream(stream_id=sid[0], device_index=sid[1], device_type=sid[2]),
                     device, torch_elapsed(), lambda: torch.cuda.set_device(device), anchor)


class GpuTimer:
    """Two halves on two threads: ``stop`` on vLLM's thread, ``poll`` (and the anchors) on the export thread.
    They share the ``pending`` deque (append / popleft are atomic), the event ``pool`` (list append / pop) and
    ``anchor`` (one attribute, replaced whole)."""

    def __init__(self, cuda: CudaCalls | None = None) -> None:
        """``cuda``: the CUDA runtime's calls when torch's runtime library is found, else torch's (tests pass
        stand-ins)."""
        if cuda is None:
            import torch
            device = torch.cuda.current_device()
            rt = CudaRuntime.load()
            cuda = runtime_calls(rt, device) if rt is not None else torch_calls(device)
        self.calls = cuda
        self._event, self._record, self._clear, self._current = cuda.new_event, cuda.record, cuda.clear, cuda.current
        self._device, self._elapsed = cuda.device, cuda.elapsed
        self._sid = None
        self._stream = None
        self._device_set = False                # the export thread has made the events' device current
        self.anchor = None                      # (for elapsed, wall ns, keep): the newest anchor
        self.pool: list = []
        self.pending: deque = deque()
        self.prev_end = None                    # export thread: the last resolved step's end (wall ns)
        self.fresh = True                       # vLLM's thread: the next step has no previous one (see stop)
        self.dropped = 0                        # steps dropped unresolved (vLLM's thread counts, poll reads)
        self._dropped_seen = 0
        self.failed = 0                         # records the runtime refused (not timed; vLLM's thread counts)

    def stop(self, step: int, launch_ns: int) -> None:
        """vLLM's thread, once the step's last work is launched: its end event."""
        sid = self._current(self._device)
        if sid != self._sid:                    # the first call, or vLLM switched streams
            self._stream = self.calls.stream(sid)
            self._sid = sid
        anchor = self.anchor
        if anchor is None:                      # before the export thread's first poll: one of its own
            anchor = self.new_anchor()
        pool = self.pool
        e = pool.pop() if pool else self._event()
        if self._record(e, self._stream):       # the runtime's error code (torch's record returns None or raises)
            self._refused(e)
            return
        pending = self.pending
        if len(pending) >= MAX_PENDING:         # the export thread is not polling: stay bounded
            pool.append(pending.popleft()[0])
            self.dropped += 1
        pending.append((e, step, launch_ns, anchor, self.fresh))
        self.fresh = False

    def _refused(self, e) -> None:
        """The runtime refused the record: the thread's last error cleared (torch checks it after launches on
        vLLM's thread), the event back in the pool, the step not timed (the next has no previous one)."""
        self._clear()
        self.pool.append(e)
        self.failed += 1
        self.fresh = True

    def forget_previous(self) -> None:
        """The hooks were paused: the paused steps ran unrecorded, so the next step must not measure its idle
        time from the last recorded one (its sample says idle 0; the export side also knows from the
        step's execution record that it has no previous one: ``steps.idle.Execution.first``)."""
        self.fresh = True

    def new_anchor(self) -> tuple:
        """Record an anchor on the timer's own stream (idle: the GPU runs it at once); (for elapsed, wall ns,
        keep)."""
        h, keep = self.calls.anchor()
        self.anchor = a = (h, _wall(), keep)
        return a

    def poll(self) -> tuple:
        """A DeviceSample tuple per step finished on the GPU since the last call (idle 0 for the first one,
        after a pause and after steps were dropped), then a new anchor; export thread only."""
        pending = self.pending
        out = []
        pool = self.pool
        elapsed = self._elapsed
        measured = MEASURED
        if self.dropped != self._dropped_seen:
            self._dropped_seen = self.dropped
            self.prev_end = None
        if not self._device_set:                # the events' device current on this thread, for good
            self.calls.use_device()
            self._device_set = True
        while pending:
            head = pending[0]
            ms = elapsed(head[3][0], head[0])   # from its anchor; None: the step (or the anchor) has not run
            if ms is None:
                break
            item = pending.popleft()
            if item is not head:                # vLLM's thread dropped the head meanwhile (queue full):
                pending.appendleft(item)        # look again at the new head, with no idle across the gap
                self.prev_end = None
                continue
            e, step, launch, (_, anchor_wall, _), fresh = item
            end = anchor_wall + round(ms * 1e6)
            prev = None if fresh else self.prev_end
            if prev is None or prev >= launch:  # no previous step, or the GPU still ran it at launch
                idle, start = 0, launch if prev is None else prev
            else:
                idle, start = launch - prev, launch
            busy = max(0, end - start)
            out.append((step, launch, busy / 1e9, idle / 1e9))   # steps.facts.DeviceSample
            if prev is not None:                # its idle measured: into the process's totals
                measured[0] += idle
                measured[1] += busy
            pool.append(e)
            self.prev_end = end
        self.new_anchor()
        return tuple(out)


def make_timer(worker) -> GpuTimer | None:
    dev = getattr(worker, "device", None)
    if getattr(dev, "type", None) != "cuda":
        return None
    try:
        return GpuTimer()
    except Exception:
        return None
