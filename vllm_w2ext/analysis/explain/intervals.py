"""Wall-clock intervals (nanoseconds): merging into a disjoint union and measuring overlap with one."""
from __future__ import annotations

import bisect


def merge(intervals, bridge_ns: int = 0) -> list[tuple[int, int]]:
    """The sorted disjoint union of ``(start, end)`` pairs; gaps up to ``bridge_ns`` are closed."""
    out: list[list[int]] = []
    for a, b in sorted((a, b) for a, b in intervals if b > a):
        if out and a <= out[-1][1] + bridge_ns:
            if b > out[-1][1]:
                out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


class Union:
    """A merged set of intervals, queried for how much of ``[a, b]`` it covers."""

    def __init__(self, intervals, bridge_ns: int = 0):
        self.spans = merge(intervals, bridge_ns)
        self.starts = [a for a, _ in self.spans]

    def __bool__(self) -> bool:
        return bool(self.spans)

    def overlap(self, a: int, b: int) -> int:
        if b <= a or not self.spans:
            return 0
        i = max(0, bisect.bisect_right(self.starts, a) - 1)
        total = 0
        for s, e in self.spans[i:]:
            if s >= b:
                break
            lo, hi = max(s, a), min(e, b)
            if hi > lo:
                total += hi - lo
        return total

    def total(self) -> int:
        return sum(b - a for a, b in self.spans)
