"""GPU time of each step and GPU idle between steps, from CUDA events read without syncing.

vLLM's thread records ONE event per step, on the current stream, once the step's sampling has been
launched (its end): one ``cudaEventRecord``, through torch's C method on a stream looked up by id and
rebuilt only when the id changes (``torch.cuda.Event.record()`` builds a Python ``Stream`` on every call:
11.7 us against 3.9 us on the H200 host, ``benchmarks/gpu/event_cost.py``, part ``raw``). With vLLM's V2
runner it records none: the worker hook hands over the timing event vLLM records once the sampled tokens' copy
is queued (``end_event``), and its constructor hands those events out again once resolved (``spent``). Every CUDA call
on that thread is dear inside vLLM, whose own threads are in the driver too: the previous design also recorded a
start event and queried the previous end event at ``Worker.execute_model``, and that hook took a median
23.2 us per step on the H200 host (4-layer model, batch 1, fully traced) against 6.8 us with this one
(five interleaved runs each, ``benchmarks/results/h200/device_timing``). torch's record releases the GIL around the
call; recording through the CUDA runtime with the GIL held (ctypes, as ``poll`` resolves them) was tried and costs
~3 µs more per step in the engine (``benchmarks/results/h200/event_record``).

The export thread places those end events on the wall clock: it records an *anchor* (on a poll, once the last
one is a second old), an event on a stream of its own that nothing else uses, so the GPU runs it as soon as it is
submitted, and takes the wall clock right after the record returns. An end event recorded after that anchor ends
``anchor wall + elapsed(anchor, end)``: no clock sync, no second event per step. Then, with ``launch``
the wall clock when the step's forward was launched (the worker's ``worker.forward_launch`` hook on the V2
runner, its forward hook on the V1 runner; ``Worker.execute_model``'s start where neither runs):

- idle before the step = ``launch - previous end`` when the GPU had finished the previous step by then,
  else 0 (async scheduling keeps the GPU a step ahead: the step's work queued behind the previous one);
- busy = ``end - max(launch, previous end)``.

That is what a start event recorded at ``launch`` measured (it ran at once on an idle GPU, or right
after the previous step on a busy one). Before the V2 runner's launch hook ``launch`` was ``execute_model``'s
start, so the runner's input preparation on the CPU before the forward read as busy: 2.06 ms per batch-1 decode
step of the 4-layer 8B-shaped model on the H200 against 0.86 ms of kernels in CUPTI's record of the same steps
(``benchmarks/results/h200/device_busy``). What can still read busy: the GPU waiting, inside the forward and the
sampling, for launches the CPU has not made yet (one CUDA graph per decode forward leaves little of that). The
anchor's error is the time between the record call's return and the GPU running it on an otherwise idle stream:
not measured on its own; with this timing, explain still finds the H200's planted scheduler sleep at 38.4 % of the wall
time against 36.1 % planted (``benchmarks/results/h200/device_timing/explain``). End events are resolved
on the export thread (``poll``), which hands the samples to the export side as one record per interval: one
``cudaEventElapsedTime`` per step through the CUDA runtime torch loaded (a non-blocking call; "not ready" means the
step has not finished), where torch's way takes an ``Event.query()`` of the end event and an ``elapsed_time`` call,
each through its device guard: 7-8.6 µs of the export thread's CPU per resolved step on the H200 host against
4.7-5.1 through the runtime (``benchmarks/results/h200/event_cost``). Where the C extension ``_event_times`` was
built, the whole poll loop is one C call (``runtime_resolve``): every pending step's runtime call with the GIL released
once around them (the driver's time is spent beside vLLM's thread, not on its GIL), then each step placed as the
Python loop places it (0.27 against 1.5 µs per step around the driver's call on the 2-core CPU machine,
``benchmarks/results/cpu/event_times``); else through ctypes with the GIL held, one call per step
(``runtime_elapsed``), and the Python loop. Events come from a pool: creating a CUDA event costs more than recording one."""
from __future__ import annotations

import logging
import os
import time
from collections import deque

try:
    from vllm_w2ext.hooks._event_times import resolve as _c_resolve    # the poll's loop in C, where it was built
except ImportError:                                                    # pragma: no cover - the Python loop alone
    _c_resolve = None
try:                                                                   # stop_by_result's closure in C (an extension
    from vllm_w2ext.hooks._event_times import borrow_stop as _c_borrow_stop   # from before it has none)
except ImportError:                                                    # pragma: no cover
    _c_borrow_stop = None

log = logging.getLogger("vllm_w2ext")


MAX_PENDING = 4096        # steps recorded and not yet resolved (about 20 s at 5 ms steps); beyond: drop the oldest
# Resolved borrowed events kept for vLLM's constructor to hand out again (``end_event.RECYCLED``); vLLM's thread frees
# the oldest beyond this many. One export interval's steps must fit (the auto wait aims at 1,024 records a wake), or the
# constructor runs dry before each poll and makes new events again.
MAX_SPENT = 2048
# A poll records a new anchor only once the current one is this old (ns). Each anchor costs the export thread an
# event made, recorded and later freed, ~100 µs a poll inside the engine with the rest of the poll's fixed work
# (``benchmarks/results/h200/export_parts``); an older anchor places end events as well: the elapsed time is a
# float32 of ms, whose step at 1,200 ms is 0.12 µs (CUDA's event resolution is about 0.5 µs).
ANCHOR_EVERY_NS = 1_000_000_000
_wall = time.time_ns
NOT_READY = 600           # cudaErrorNotReady
RACED = -1                # _event_times.resolve: vLLM's thread dropped the head meanwhile; look again
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


def runtime_elapsed(path: str | None = None):
    """``elapsed(start, end)``: milliseconds from one recorded torch event to another, or None while either has not
    run; ``cudaEventElapsedTime`` of the loaded CUDA runtime through ctypes with the GIL held (``PyDLL``: a
    non-blocking call of about a microsecond, not worth a GIL hand-off). The calling thread must have the events'
    device current. None when no runtime library is found (``torch_elapsed`` then)."""
    import ctypes
    path = path or loaded_cudart()
    if path is None:
        return None
    lib = ctypes.PyDLL(path)
    fn, clear = lib.cudaEventElapsedTime, lib.cudaGetLastError
    fn.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = clear.restype = ctypes.c_int
    clear.argtypes = []
    ms = ctypes.c_float()
    out = ctypes.byref(ms)

    def elapsed(start, end):
        rc = fn(out, start.cuda_event, end.cuda_event)
        if rc == 0:
            return ms.value
        clear()                                 # the runtime keeps the code as this thread's last error (torch
        if rc == NOT_READY:                     # clears it the same way after a query that is not ready)
            return None
        raise RuntimeError(f"cudaEventElapsedTime returned {rc}")
    return elapsed


def runtime_resolve(path: str | None = None):
    """``resolve(pending, prev_end, pool, spent, measured, out) -> (prev_end, code, released_ns, head)``:
    ``GpuTimer.poll``'s loop in C (the extension ``_event_times``): the pending steps' end events timed from their
    anchors in one pass, the GIL released around the loaded CUDA runtime's ``cudaEventElapsedTime`` calls, then placed
    as the loop places them (``code``: 0; 600 for a step not run yet; ``RACED``; or the code of the call the runtime
    refused, for ``head``; ``released_ns``: how long the GIL was let go). None where the
    extension was not built or no runtime library is found (``runtime_elapsed`` then, one call per step)."""
    resolve = _c_resolve
    if resolve is None:                         # pragma: no cover - the extension not built
        return None
    import ctypes
    path = path or loaded_cudart()
    if path is None:
        return None
    lib = ctypes.CDLL(path)                     # only for the two functions' addresses

    def address(fn) -> int:
        return ctypes.cast(fn, ctypes.c_void_p).value
    elapsed, clear = address(lib.cudaEventElapsedTime), address(lib.cudaGetLastError)
    return lambda *state: resolve(elapsed, clear, *state)


# the device timer's poll, for the doctor
POLL = ("C extension built (vllm_w2ext.hooks._event_times): the CUDA runtime's calls with the GIL released"
        if _c_resolve is not None else
        "Python only: the C extension vllm_w2ext.hooks._event_times was not built, so the export thread holds the "
        "GIL through each step's CUDA runtime call")


def torch_elapsed():
    """``runtime_elapsed``'s fallback through torch's calls: ``elapsed(start, end)`` queries the end event, the start
    event only until it has once been found done (``start`` is the poll's anchor, shared by the steps recorded
    after it), then ``elapsed_time``."""
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


class GpuTimer:
    """Two halves on two threads: ``stop`` on vLLM's thread, ``poll`` (and the anchors) on the export thread.
    They share the ``pending`` deque (append / popleft are atomic), the event ``pool`` (list append / pop) and
    ``anchor`` (one attribute, replaced whole)."""

    def __init__(self, cuda=None, spent: list | None = None) -> None:
        """``cuda``: (new event, record(event, stream), current stream id tuple(device), Stream(**ids), new
        stream(), device, elapsed(start, end) -> ms or None, use_device() on the polling thread[, resolve or None]);
        torch's and the CUDA runtime's by default (tests pass stand-ins). ``resolve`` (``runtime_resolve``) is the
        poll's loop in C; without it, ``elapsed`` one step at a time in Python. ``spent``: the list the resolved
        borrowed events go to (``end_event.RECYCLED``, whose constructor hands them out again); a new one by default."""
        if cuda is None:
            import torch
            device = torch.cuda.current_device()
            path = loaded_cudart()              # read from /proc/self/maps once for both ways
            elapsed = runtime_elapsed(path) if path is not None else None
            cuda = (torch.cuda.Event, torch._C._CudaEventBase.record,    # Event.record without its wrapper
                    torch._C._cuda_getCurrentStream,                      # (stream id, device index, type)
                    torch.cuda.Stream, lambda: torch.cuda.Stream(device=device), device,
                    elapsed or torch_elapsed(), lambda: torch.cuda.set_device(device),
                    runtime_resolve(path) if path is not None else None)
        (new_event, self._record, self._current, self._stream_of, self._new_stream, self._device, self._elapsed,
         self._use_device) = cuda[:8]
        self._resolve = cuda[8] if len(cuda) > 8 else None
        self._event = lambda: new_event(enable_timing=True)
        self._sid = None
        self._stream = None
        self._anchor_stream = None
        self.anchor = None                      # (event, wall ns): the newest anchor
        self.pool: list = []
        self.pending: deque = deque()
        self.prev_end = None                    # export thread: the last resolved step's end (wall ns)
        self.fresh = True                       # vLLM's thread: the next step has no previous one (see stop)
        self.dropped = 0                        # steps dropped unresolved (vLLM's thread counts, poll reads)
        self.borrow = True                      # take the end events vLLM hands over (poll turns it off)
        # Borrowed events the export thread has resolved, oldest first: handed out again by vLLM's constructor
        # (end_event), the oldest beyond MAX_SPENT freed by vLLM's thread at its next stop. Freeing a CUDA event
        # takes the driver's lock; on the export thread, beside vLLM's launches, it cost ~3-12 µs of that thread's
        # CPU per step on the H200 host (benchmarks/results/h200/end_event).
        self.spent: list = [] if spent is None else spent
        self._dropped_seen = 0
        self._device_set = False                # the polling thread has the events' device current
        self.released_ns = 0                    # export thread: wall time polls ran with the GIL released (resolve)

    def stop(self, step: int, launch_ns: int, event=None) -> None:
        """vLLM's thread, once the step's last work is launched: its end event. ``event``: a timing event vLLM
        recorded there itself (``end_event``), taken as it is while ``borrow`` holds: no CUDA call here."""
        anchor = self.anchor
        if anchor is None:                      # before the export thread's first poll: one of its own
            anchor = self.new_anchor()
        if event is not None and self.borrow:
            e, own = event, False
            if len(self.spent) > MAX_SPENT:     # not handed out as fast as resolved: the oldest freed here
                self.free_oldest()
        else:
            sid = self._current(self._device)
            if sid != self._sid:                # the first call, or vLLM switched streams
                self._stream = self._stream_of(stream_id=sid[0], device_index=sid[1], device_type=sid[2])
                self._sid = sid
            pool = self.pool
            e = pool.pop() if pool else self._event()
            self._record(e, self._stream)
            own = True
        pending = self.pending
        if len(pending) >= MAX_PENDING:         # the export thread is not polling: stay bounded
            pending.popleft()
            self.dropped += 1
        pending.append((e, step, launch_ns, anchor, self.fresh, own))
        self.fresh = False

    def stop_by_result(self, carrier, event_of, c: bool = True):
        """``stop(step, launch, result)``: the step's end as vLLM's sample left it, one call per step. Where
        ``result`` is a ``carrier`` (vLLM's output that holds its step-end event, ``end_event.CARRIER``), its event
        (``event_of(result)``) is borrowed as ``stop`` borrows it, written out here; anything else goes through
        ``stop`` (no carrier: the timer records its own; borrowing off, no anchor yet, a queue or the spent list
        full). Where the extension was built (and ``c``), the same in C (``_event_times.borrow_stop``: no Python frame;
        this closure read 2.2 µs per step on an H100 host, ``benchmarks/results/h100/issue19_52efeb7_frees``). A unit
        test holds both to ``stop``'s result, branch by branch."""
        pending, spent, timer_stop = self.pending, self.spent, self.stop
        if c and _c_borrow_stop is not None and isinstance(carrier, type):
            return _c_borrow_stop(self, carrier, event_of, pending, spent, timer_stop, MAX_PENDING, MAX_SPENT)

        def stop(step: int, launch: int, result) -> None:
            if type(result) is not carrier:
                return timer_stop(step, launch)
            anchor = self.anchor
            if anchor is None or not self.borrow or len(pending) >= MAX_PENDING or len(spent) > MAX_SPENT:
                return timer_stop(step, launch, event_of(result))
            pending.append((event_of(result), step, launch, anchor, self.fresh, False))
            self.fresh = False
        return stop

    def free_oldest(self) -> int:
        """vLLM's thread: the resolved borrowed events beyond ``MAX_SPENT`` freed, oldest first (the list stays the
        same object: vLLM's constructor holds it); how many."""
        spent = self.spent
        n = len(spent) - MAX_SPENT
        if n > 0:
            del spent[:n]
        return max(n, 0)

    def forget_previous(self) -> None:
        """The hooks were paused: the paused steps ran unrecorded, so the next step must not measure its idle
        time from the last recorded one (its sample says idle 0; the export side also knows from the
        step's execution record that it has no previous one: ``steps.idle.Execution.first``)."""
        self.fresh = True

    def _refused(self, head) -> None:
        """The runtime would not time a borrowed end event (not a timing event after all): that step is dropped,
        the next one measures no idle across it, and vLLM's thread records its own events from now on."""
        if self.pending and self.pending[0] is head:
            self.pending.popleft()
        self.prev_end = None
        if self.borrow:
            self.borrow = False
            log.warning(
                "vllm_w2ext: vLLM's step-end event could not be timed; the plugin records its own from now on")

    def new_anchor(self) -> tuple:
        """Record an anchor on the timer's own stream (idle: the GPU runs it at once); (event, wall ns)."""
        if self._anchor_stream is None:
            self._anchor_stream = self._new_stream()
        e = self._event()
        self._record(e, self._anchor_stream)
        self.anchor = a = (e, _wall())
        return a

    def poll(self) -> tuple:
        """A DeviceSample tuple per step finished on the GPU since the last call (idle 0 for the first one,
        after a pause and after steps were dropped), then a new anchor if the current one is ``ANCHOR_EVERY_NS``
        old; export thread only (the events' device is made current on it once)."""
        pending = self.pending
        out = []
        pool = self.pool
        spent = self.spent
        elapsed = self._elapsed
        measured = MEASURED
        if self.dropped != self._dropped_seen:
            self._dropped_seen = self.dropped
            self.prev_end = None
        if pending and not self._device_set:
            self._use_device()                  # the events' device current on this thread (the runtime's call)
            self._device_set = True
        resolve = self._resolve
        while pending:
            if resolve is not None:             # in C: every pending step timed in one pass with the GIL released
                self.prev_end, code, released, head = resolve(pending, self.prev_end, pool, spent, measured, out)
                self.released_ns += released    # and placed as below (_event_times.c)
                if code == RACED:
                    continue
                if code == NOT_READY:
                    break
                if code:
                    if head[5]:
                        raise RuntimeError(f"cudaEventElapsedTime returned {code}")
                    self._refused(head)         # a borrowed event the runtime cannot time: own events from now
                continue
            head = pending[0]                   # one runtime (or torch) call per step, the GIL held
            try:
                ms = elapsed(head[3][0], head[0])   # from its anchor; None: the step (or the anchor) has not run
            except RuntimeError:
                if head[5]:
                    raise
                self._refused(head)             # a borrowed event the runtime cannot time: own events from now
                continue
            if ms is None:
                break
            item = pending.popleft()
            if item is not head:                # vLLM's thread dropped the head meanwhile (queue full):
                pending.appendleft(item)        # look again at the new head, with no idle across the gap
                self.prev_end = None
                continue
            e, step, launch, (anchor, anchor_wall), fresh, own = item
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
            if own:
                pool.append(e)
            else:
                spent.append(e)
            self.prev_end = end
        anchor = self.anchor
        if anchor is None or _wall() - anchor[1] >= ANCHOR_EVERY_NS:
            self.new_anchor()
        return tuple(out)


def make_timer(worker, spent: list | None = None) -> GpuTimer | None:
    """A worker's timer on a CUDA device (None elsewhere, or if it cannot be made); ``spent`` as ``GpuTimer``'s."""
    dev = getattr(worker, "device", None)
    if getattr(dev, "type", None) != "cuda":
        return None
    try:
        return GpuTimer(spent=spent)
    except Exception:
        return None
