"""GPU time of each step and GPU idle between steps, from CUDA events read without syncing.

An event is recorded on the current stream when ``Worker.execute_model`` starts and when the step's
sampling has been launched. Pairs are resolved later with ``Event.query()`` (non-blocking): forward
time = start->end, idle gap = previous end -> start, both on the GPU's own timeline, so under async
scheduling they say what the GPU saw, not when the CPU launched. Events come from a pool: creating
a CUDA event costs more than recording one.

Placing the idle time on the wall clock needs no clock sync: when the GPU was idle before a step, it
ran that step's start event as soon as it was recorded, so the idle time ended at the recording
(``launch_ns``, taken by the caller) and began ``idle_s`` before it."""
from __future__ import annotations

from collections import deque


MAX_PENDING = 256


class GpuTimer:
    def __init__(self) -> None:
        import torch
        self._event = torch.cuda.Event
        self.pool: list = []
        self.pending: deque = deque()
        self.prev_end = None

    def _record(self):
        e = self.pool.pop() if self.pool else self._event(enable_timing=True)
        e.record()
        return e

    def start(self):
        return self._record()

    def stop(self, start_evt, step: int, launch_ns: int) -> None:
        e = self._record()
        if len(self.pending) >= MAX_PENDING:      # never resolved (should not happen): stay bounded
            self.pending.popleft()
            self.prev_end = None
        self.pending.append((start_evt, e, step, launch_ns))

    def resolve(self) -> tuple | None:
        """A DeviceSample per step finished on the GPU since the last call (idle 0 for the first);
        None when none finished."""
        pending = self.pending
        if not pending or not pending[0][1].query():
            return None
        out = []
        pool = self.pool
        while pending and pending[0][1].query():
            s, e, step, launch = pending.popleft()
            prev = self.prev_end
            idle = 0.0
            if prev is not None:
                idle = prev.elapsed_time(s) / 1e3
                pool.append(prev)
            out.append((step, launch, s.elapsed_time(e) / 1e3, idle))          # steps.facts.DeviceSample
            pool.append(s)
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
