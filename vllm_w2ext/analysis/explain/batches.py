"""Each engine step's batch (``engine.step`` attributes) joined with the device time of its forward
(``vllm.device.busy_s`` of the step's ``worker.execute_model``, averaged over the engine's ranks), and
what a decode-only step of the same size would have cost (the decode baseline), so that the device
time of a step's prefill can be told apart from its decodes.

The baseline: decode-only steps (no prefill tokens) grouped by their decode tokens, the median device
time of each group, a line fitted through those medians (weighted by group size, slope >= 0); with a
single group, its median. A step carrying prefill costs ``busy - baseline(decode tokens)`` more than
its decodes alone; that extra splits between fresh prefill and the recompute of resumed (preempted)
requests in proportion to their tokens (``vllm.batch.resumed_tokens`` is part of the prefill tokens)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from vllm_w2ext.analysis.explain.timeline import Timeline
from vllm_w2ext.analysis.readers.pftrace import Slice
from vllm_w2ext.vocab import Attr


def _int(args: dict, key: str) -> int:
    v = args.get(key)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


@dataclass
class StepRow:
    engine: str
    step: int
    slice: Slice                # the engine.step
    num_reqs: int
    prefill: int
    decode: int
    preemptions: int
    resumed: int
    running: int
    waiting: int
    busy_s: float | None        # device time of its forward (None: not executed on a device we saw)
    pid: int = 0                # a worker that ran it (to open in Perfetto)
    fresh_extra_s: float = 0.0  # device time its fresh prefill added to the step
    recompute_s: float = 0.0    # device time spent recomputing resumed requests

    @property
    def fresh(self) -> int:
        return max(0, self.prefill - self.resumed)

    @property
    def mixed(self) -> bool:
        """Decodes that waited for other requests' (fresh) prefill in the same forward."""
        return self.decode > 0 and self.fresh > 0


class Baseline:
    def __init__(self, rows: list[StepRow]):
        groups: dict[int, list[float]] = {}
        for r in rows:
            if r.prefill == 0 and r.decode > 0 and r.busy_s is not None:
                groups.setdefault(r.decode, []).append(r.busy_s)
        self.n = sum(len(v) for v in groups.values())
        pts = [(d, statistics.median(v), len(v)) for d, v in groups.items()]
        self.a, self.b = 0.0, 0.0
        if len(pts) == 1:
            self.a = pts[0][1]
        elif pts:
            w = sum(p[2] for p in pts)
            mx = sum(p[0] * p[2] for p in pts) / w
            my = sum(p[1] * p[2] for p in pts) / w
            sxx = sum(p[2] * (p[0] - mx) ** 2 for p in pts)
            self.b = max(0.0, sum(p[2] * (p[0] - mx) * (p[1] - my) for p in pts) / sxx) if sxx else 0.0
            self.a = my - self.b * mx

    def __bool__(self) -> bool:
        return self.n > 0

    def __call__(self, decode_tokens: int) -> float:
        return max(0.0, self.a + self.b * decode_tokens)


def rows(tl: Timeline) -> dict[str, list[StepRow]]:
    """Per engine, its steps in order, with device time and the split of prefill steps' extra time."""
    busy: dict[tuple[str, int], list[float]] = {}
    pids: dict[tuple[str, int], int] = {}
    for (engine, _rank), exs in tl.executions.items():
        for ex in exs:
            if ex.busy_s is not None:
                busy.setdefault((engine, ex.step), []).append(ex.busy_s)
            pids.setdefault((engine, ex.step), ex.pid)
    out: dict[str, list[StepRow]] = {}
    for engine, steps in tl.engine_steps.items():
        rs = []
        for s in steps:
            a = s.args
            b = busy.get((engine, s.step))
            rs.append(StepRow(engine, s.step, s, _int(a, Attr.NUM_REQS), _int(a, Attr.PREFILL_TOKENS),
                              _int(a, Attr.DECODE_TOKENS), _int(a, Attr.PREEMPTIONS),
                              _int(a, Attr.BATCH_RESUMED_TOKENS), _int(a, Attr.RUNNING), _int(a, Attr.WAITING),
                              sum(b) / len(b) if b else None, pids.get((engine, s.step), 0)))
        _split(rs)
        out[engine] = rs
    return out


def _split(rs: list[StepRow]) -> None:
    base = Baseline(rs)
    for r in rs:
        if r.prefill <= 0 or r.busy_s is None:
            continue
        if r.decode > 0:
            if base:
                extra = max(0.0, r.busy_s - base(r.decode))
            else:       # no decode-only step to compare with: by tokens
                extra = r.busy_s * r.prefill / (r.prefill + r.decode)
        else:
            extra = r.busy_s
        resumed = min(r.resumed, r.prefill)
        r.recompute_s = extra * resumed / r.prefill
        r.fresh_extra_s = extra - r.recompute_s if r.decode > 0 else 0.0
