"""GPU time of each step and GPU idle between steps, from CUDA events read without syncing.

An event is recorded on the current stream when ``Worker.execute_model`` starts and when the step's
sampling has been launched. Pairs are resolved later with ``Event.query()`` (non-blocking): forward
time = start->end, idle gap = previous end -> start, both on the GPU's own timeline, so under async
scheduling they say what the GPU saw, not when the CPU launched. Events come from a pool: creating
a CUDA event costs more than recording one."""
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

    def stop(self, start_evt) -> None:
        e = self._record()
        if len(self.pending) >= MAX_PENDING:      # never resolved (should not happen): stay bounded
            self.pending.popleft()
            self.prev_end = None
        self.pending.append((start_evt, e))

    def resolve(self) -> tuple[list[float], list[float]] | None:
        """Seconds of GPU time per finished step and of GPU idle before it (0 for the first); None
        when no step finished since the last call."""
        pending = self.pending
        if not pending or not pending[0][1].query():
            return None
        fwd, gaps = [], []
        pool = self.pool
        while pending and pending[0][1].query():
            s, e = pending.popleft()
            fwd.append(s.elapsed_time(e) / 1e3)
            prev = self.prev_end
            if prev is not None:
                gaps.append(prev.elapsed_time(s) / 1e3)
                pool.append(prev)
            else:
                gaps.append(0.0)
            pool.append(s)
            self.prev_end = e
        return fwd, gaps


def make_timer(worker) -> GpuTimer | None:
    dev = getattr(worker, "device", None)
    if getattr(dev, "type", None) != "cuda":
        return None
    try:
        return GpuTimer()
    except Exception:
        return None
