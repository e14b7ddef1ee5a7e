"""``VLLM_W2EXT_COST_BUDGET``: the EngineCore keeps the plugin's cost in its process under a share of the wall
time by recording fewer steps while it is over (``VLLM_W2EXT_SAMPLE``'s N raised), and more again once well under.

Why: fully traced, the hooks cost a fixed ~40-60 µs per engine step on the H200 host (EngineCore + worker, batch 1),
which is ~2 % of a CPU-bound 2 ms step and ~0.1 % of a GPU-bound 40 ms one, and recording 2 steps in every 16
brings it to ~17 µs (``benchmarks/results/h200/sample_sweep``). No fixed N suits both: the budget lets the plugin
trace everything where that is cheap and thin itself out where it is not, from what it measures of itself.

The cost is what ``SelfCost`` reports for the process: the hooks' time on its threads (``selfcost``'s sampled
wall-time estimate, every hook of the process: the worker's too when it runs inside the EngineCore) plus the
export thread's CPU time, per second of wall time, over windows of ``WINDOW_S``; where the process has a device
timeline (the worker inside the EngineCore, on the GPU), no more than the device's idle share: a cost the device
does not wait for costs no throughput (``effective_share``). It is read on the export thread
(a pipeline poller); vLLM's thread only takes the N decided, at the end of a recorded step (``hooks.engine_core``).
N moves in powers of two from the configured ``SAMPLE`` up to ``MAX_EVERY`` (never 2: two steps in every 2 is every
step): doubled after a window over the budget, halved after a window under ``LOWER`` x the budget; a window in
which the engine ran no step decides nothing. The gap
between the two is the hysteresis: halving N at most doubles the recorded steps' part of the cost, so a share
under ``LOWER`` x budget stays under the budget after the step down.

Pure logic: no vLLM, no clock of its own (the caller passes the time and the cumulative cost)."""
from __future__ import annotations

WINDOW_S = 1.0          # seconds of wall time per decision
LOWER = 0.4             # step down only under this share of the budget
MAX_EVERY = 1024        # most steps per recorded pair


def effective_share(cost_share: float, idle_share: float | None) -> float:
    """What the plugin can cost the engine's throughput: its share of the wall time, but no more than the share of
    its stepping time the device spent idle, where that was measured. The plugin's work delays the model only while
    the device waits for the host: with async scheduling and a GPU-bound model the device has the next step queued
    and its idle share is ~0 whatever the host does (the 8B model on the H200: busy 99.99 % while the plugin took
    1.78 % of the EngineCore's time, ``benchmarks/results/h200/cost_budget``). Without a device timeline (CPU, or
    workers in processes of their own) the cost share stands alone."""
    return cost_share if idle_share is None else min(cost_share, idle_share)


class CostBudget:
    """Decides N from successive (time, cumulative cost) readings."""

    def __init__(self, budget_percent: float, base: int = 1) -> None:
        if budget_percent <= 0:
            raise ValueError("budget_percent must be > 0")
        self.budget = budget_percent / 100.0    # a share of wall time
        self.base = base                        # the configured VLLM_W2EXT_SAMPLE: the floor
        self.every = base                       # the N in effect (as decided)
        self.top = max(MAX_EVERY, base)
        self.share: float | None = None         # the last window's measured share
        self.cost_share: float | None = None    # the plugin's cost over the last window's wall time
        self.idle_share: float | None = None    # the device's idle share of its stepping then (None: unmeasured)
        self._t0: float | None = None
        self._c0 = 0.0
        self._s0 = 0
        self._d0 = (0, 0)

    def update(self, now_s: float, cost_s: float, steps: int, device: tuple[int, int] = (0, 0)) -> int | None:
        """One reading: ``now_s`` a monotonic time, ``cost_s`` the plugin's cumulative cost (seconds), ``steps`` the
        engine steps so far, ``device`` the device's cumulative (idle, busy) time of the steps whose idle was
        measured (any unit; (0, 0): none measured). The new N when this reading closes a window that changes it,
        else None. A window without a step decides nothing (an idle engine costs nothing to trace: N stays for
        the next burst). The window's share is the cost's share of the wall time, bounded by the device's idle
        share of its stepping time when the window measured any (``effective_share``)."""
        if self._t0 is None:
            self._t0, self._c0, self._s0, self._d0 = now_s, cost_s, steps, device
            return None
        span = now_s - self._t0
        if span < WINDOW_S:
            return None
        no_steps = steps == self._s0
        self.cost_share = max(0.0, cost_s - self._c0) / span
        idle, busy = device[0] - self._d0[0], device[1] - self._d0[1]
        self.idle_share = idle / (idle + busy) if idle + busy > 0 else None
        self.share = share = effective_share(self.cost_share, self.idle_share)
        self._t0, self._c0, self._s0, self._d0 = now_s, cost_s, steps, device
        if no_steps:
            return None
        n = self.every
        if share > self.budget and n < self.top:
            n = min(self.top, max(4, 2 * n))
        elif share < LOWER * self.budget and n > self.base:
            n = n // 2
            if n < max(4, self.base):
                n = self.base
        if n == self.every:
            return None
        self.every = n
        return n
