"""The CPU view of the time between two model executions on a worker, split by what the EngineCore
was doing then (the intervals carried in the step's :class:`~vllm_w2ext.telemetry.wire.Stamp`)."""
from __future__ import annotations

from vllm_w2ext.steps.facts import Stamp
from vllm_w2ext.vocab import Attr


def overlap(g0: int, g1: int, a: int, b: int) -> int:
    """Nanoseconds of [a, b] inside [g0, g1] (0 when the interval is unset)."""
    return max(0, min(g1, b) - max(g0, a)) if a and b else 0


def gap_attrs(prev_end: int, start: int, stamp: Stamp) -> dict:
    """Seconds between the previous model execution's end and this one's start, and where they went."""
    gap = start - prev_end
    sched = overlap(prev_end, start, stamp.schedule_start, stamp.schedule_end)
    upd = overlap(prev_end, start, stamp.update_start, stamp.update_end)
    idle = overlap(prev_end, start, stamp.prev_step_end, stamp.step_start)
    other = max(0, gap - sched - upd - idle)
    return {Attr.GAP_CPU: gap / 1e9, Attr.GAP_SCHEDULE: sched / 1e9, Attr.GAP_UPDATE: upd / 1e9,
            Attr.GAP_ENGINE_IDLE: idle / 1e9, Attr.GAP_OTHER: other / 1e9}
