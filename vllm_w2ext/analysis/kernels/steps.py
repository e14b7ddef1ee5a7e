"""Step marks of a trace (which step launched a kernel, and its phase), what a step's GPU activities add
up to (StepAcc), and a bounded latency histogram.

Steps come from CPU user annotations: the plugin's ``worker.execute_model #<step>`` (and
``worker.sample_tokens`` / ``worker.forward`` / ``worker.model_runner.execute_model`` with the same id),
which carry the engine's step id, and vLLM's own ``execute_context_<reqs>(<tokens>)_generation_<reqs>(<tokens>)``
around each model execution (vLLM >= 0.11 with the torch profiler on), which carries the phase: prefill
(context only), decode (generation only), mixed, or empty (a dummy step with no requests). With both
present the plugin's ids number the steps and the vLLM annotation inside ``worker.execute_model`` gives
the phase; with vLLM's only, steps are numbered in order.
"""
from __future__ import annotations

import bisect
import math
import re
from collections import defaultdict

from vllm_w2ext.vocab import WORKER_STEP_SPANS, Span

VLLM_STEP = re.compile(r"^execute_context_(\d+)\((\d+)\)_generation_(\d+)\((\d+)\)$")
# The plugin's annotations of a worker step: profiler_annotation(<one of WORKER_STEP_SPANS>, step).
PLUGIN_STEP = re.compile("^(?:" + "|".join(map(re.escape, WORKER_STEP_SPANS)) + r") #(\d+)$")


class LogHistogram:
    """Bounded histogram (2 % bins) for percentiles of launch latencies."""

    def __init__(self) -> None:
        self.bins: dict[int, int] = defaultdict(int)
        self.n, self.total, self.max = 0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        self.max = max(self.max, x)
        self.bins[math.floor(math.log(max(x, 0.01)) / math.log(1.02))] += 1

    def summary(self) -> dict:
        if not self.n:
            return {"count": 0}
        out = {"count": self.n, "mean_us": self.total / self.n, "max_us": self.max}
        for q in (50, 90, 99):
            k, seen = 0, 0
            for k in sorted(self.bins):
                seen += self.bins[k]
                if seen >= self.n * q / 100:
                    break
            out[f"p{q}_us"] = min(1.02 ** (k + 0.5), self.max)
        return out


def phase_of(ctx_reqs: int, gen_reqs: int) -> str:
    if ctx_reqs and gen_reqs:
        return "mixed"
    return "prefill" if ctx_reqs else ("decode" if gen_reqs else "empty")


class StepTimeline:
    """Step marks per process, looked up by launch time."""

    def __init__(self) -> None:
        self.vllm: dict = defaultdict(list)     # pid -> [(start, end, ctx_reqs, ctx_tok, gen_reqs, gen_tok, name)]
        self.plugin: dict = defaultdict(list)   # pid -> [(start, end, step_id, name)]
        self._index: dict = {}

    def add(self, name: str, pid, ts: float, dur: float) -> None:
        m = PLUGIN_STEP.match(name)
        if m:
            self.plugin[pid].append((ts, ts + dur, int(m.group(1)), name))
        else:
            m = VLLM_STEP.match(name)
            if not m:
                return
            self.vllm[pid].append((ts, ts + dur, *map(int, m.groups()), name))
        self._index.pop(pid, None)

    def _keys(self, pid) -> tuple[list, list]:
        if pid not in self._index:
            if self.plugin.get(pid):
                marks = sorted(self.plugin[pid])
                self._index[pid] = ([m[0] for m in marks], [(pid, "step", m[2]) for m in marks])
            else:
                marks = sorted(self.vllm.get(pid, []))
                self._index[pid] = ([m[0] for m in marks], [(pid, "seq", i) for i in range(len(marks))])
        return self._index[pid]

    def step_at(self, pid, ts: float):
        starts, keys = self._keys(pid)
        i = bisect.bisect_right(starts, ts) - 1
        return keys[i] if i >= 0 else None

    def describe(self) -> dict:
        """step key -> {step, phase, annotation, cpu_start, cpu_dur} for every mark."""
        out = {}
        for pid in set(self.plugin) | set(self.vllm):
            vmarks = sorted(self.vllm.get(pid, []))
            vstarts = [m[0] for m in vmarks]
            if self.plugin.get(pid):
                first: dict = {}
                for start, end, sid, name in sorted(self.plugin[pid]):
                    d = first.setdefault(sid, {"step": sid, "annotation": name, "cpu_start": start,
                                               "cpu_dur": end - start, "phase": "unknown"})
                    if name.startswith(Span.WORKER_EXECUTE + " #"):
                        i = bisect.bisect_left(vstarts, start)
                        if i < len(vmarks) and vmarks[i][0] <= end:
                            d["phase"] = phase_of(vmarks[i][2], vmarks[i][4])
                            d["annotation"] = f"{name} {vmarks[i][6]}"
                for sid, d in first.items():
                    out[(pid, "step", sid)] = d
            else:
                for i, m in enumerate(vmarks):
                    out[(pid, "seq", i)] = {"step": i, "annotation": m[6], "cpu_start": m[0],
                                            "cpu_dur": m[1] - m[0], "phase": phase_of(m[2], m[4])}
        return out


class StepAcc:
    """What one step's GPU activities add up to."""
    __slots__ = ("kernels", "time", "cats", "first", "last", "idle_in", "gap_before", "launch_api_us")

    def __init__(self) -> None:
        self.kernels, self.time, self.cats = 0, 0.0, defaultdict(float)
        self.first, self.last, self.idle_in, self.gap_before, self.launch_api_us = math.inf, -math.inf, 0.0, None, 0.0
