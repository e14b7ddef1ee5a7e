"""GPU time of each step and GPU idle between steps, from CUDA events read without syncing.

An event is recorded on the current stream when ``Worker.execute_model`` starts and when the step's
sampling has been launched. That is all vLLM's thread does (at most two ``cudaEventRecord`` per step, on a stream
looked up once and kept while its id stays the same, through torch's C method: on the H200 host
``torch.cuda.Event.record()`` costs 11.7 us against 3.9 us with the stream passed, because it builds a
Python ``Stream`` each time; ``benchmarks/gpu/cuda_event_cost.py``). Pairs are resolved on the plugin's
export thread (``poll``: ``Event.query()``, non-blocking, then ``elapsed_time``), which hands the samples
to the export side as one record per interval: forward time = start->end, idle gap = previous end ->
start, both on the GPU's own timeline, so under async scheduling they say what the GPU saw, not when the
CPU launched. Events come from a pool: creating a CUDA event costs more than recording one.

A step that starts while the GPU still runs the previous one (async scheduling keeps the GPU a step
ahead) records no start event: the previous step's end event is still pending (``query()``, 1.4 us on
the H200 host), so everything this step enqueues runs after it, and that end event is this step's start
(idle 0, as a start event recorded there would have measured). ``cudaEventRecord`` behind a deep queue costs
20-35 us of CPU on that host (``benchmarks/gpu/cuda_event_cost.py``), so the GPU-bound steps save the most.

Placing the idle time on the wall clock needs no clock sync: when the GPU was idle before a step, it
ran that step's start event as soon as it was recorded, so the idle time ended at the recording
(``launch_ns``, taken by the caller) and began ``idle_s`` before it."""
from __future__ import annotations

from collections import deque


MAX_PENDING = 4096        # steps recorded and not yet resolved (about 20 s at 5 ms steps); beyond: drop the oldest


class GpuTimer:
    """Two halves on two threads: ``start``/``stop`` on vLLM's thread, ``poll`` on the export thread. They
    share the ``pending`` deque (append / popleft are atomic) and the event ``pool`` (list append / pop)."""

    def __init__(self, cuda=None) -> None:
        """``cuda``: (new event, record(event, stream), query(event), current stream id tuple(device),
        Stream(**ids), device); torch's by default (tests pass stand-ins)."""
        if cuda is None:
            import torch
            cuda = (torch.cuda.Event, torch._C._CudaEventBase.record,    # Event.record without its wrapper
                    torch._C._CudaEventBase.query,
                    torch._C._cuda_getCurrentStream,                      # (stream id, device index, type)
                    torch.cuda.Stream, torch.cuda.current_device())
        new_event, self._record, self._query, self._current, self._stream_of, self._device = cuda
        self._event = lambda: new_event(enable_timing=True)
        self._sid = None
        self._stream = None
        self.pool: list = []
        self.pending: deque = deque()
        self.prev_end = None                    # export thread: the last resolved step's end event
        self.last_end = None                    # vLLM's thread: the last recorded end event (see start)
        self.dropped = 0                        # steps dropped unresolved (vLLM's thread counts, poll reads)
        self._dropped_seen = 0

    def _now(self):
        sid = self._current(self._device)
        if sid != self._sid:                    # the first call, or vLLM switched streams
            self._stream = self._stream_of(stream_id=sid[0], device_index=sid[1], device_type=sid[2])
            self._sid = sid
        pool = self.pool
        e = pool.pop() if pool else self._event()
        self._record(e, self._stream)
        return e

    def start(self):
        """This step's start event: the previous step's end event while the GPU has not reached it (no
        idle can come between them), else a new one."""
        last = self.last_end
        if last is not None and not self._query(last):
            return last
        return self._now()

    def stop(self, start_evt, step: int, launch_ns: int) -> None:
        e = self.last_end = self._now()
        pending = self.pending
        if len(pending) >= MAX_PENDING:         # the export thread is not polling: stay bounded
            pending.popleft()
            self.dropped += 1
        pending.append((start_evt, e, step, launch_ns))

    def forget_previous(self) -> None:
        """The hooks were paused: the paused steps ran unrecorded, so the next step must not take the last
        recorded end event as its start. (Its idle sample spans the pause; the export side ignores it, as the
        step's execution record says it has no previous one: ``steps.idle.Execution.first``.)"""
        self.last_end = None

    def poll(self) -> tuple:
        """A DeviceSample tuple per step finished on the GPU since the last call (idle 0 for the first one,
        and after steps were dropped); export thread only."""
        pending = self.pending
        out = []
        pool = self.pool
        if self.dropped != self._dropped_seen:
            self._dropped_seen = self.dropped
            self.prev_end = None
        while pending:
            head = pending[0]
            if not head[1].query():
                break
            item = pending.popleft()
            if item is not head:                # vLLM's thread dropped the head meanwhile (queue full):
                pending.appendleft(item)        # look again at the new head, with no idle across the gap
                self.prev_end = None
                continue
            s, e, step, launch = item
            prev = self.prev_end
            idle = 0.0
            if prev is not None and prev is not s:    # s is prev: started behind it, no idle
                idle = prev.elapsed_time(s) / 1e3
                pool.append(prev)
            out.append((step, launch, s.elapsed_time(e) / 1e3, idle))          # steps.facts.DeviceSample
            pool.append(s)                            # (once, also when it was the previous end)
            self.prev_end = e
        return tuple(out)


def make_timer(worker) -> GpuTimer | None:
    dev = getattr(worker, "device", None)
    if getattr(dev, "type", None) != "cuda":
        return None
    try:
        return GpuTimer()
    except Exception:
        return None
