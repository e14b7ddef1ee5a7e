"""The accumulator of ``vllm-w2ext analyze``: one streaming pass over a torch-profiler (Kineto) or
merged trace, turned into a result dict by result.py (the command line is command.py).

One streaming pass (readers/kineto_events.py); what is kept in memory does not grow with the JSON size:
- step marks: vLLM's ``execute_context_N(tok)_generation_M(tok)`` user annotations (phase) and the
  plugin's ``worker.execute_model #<step>`` / ``worker.sample_tokens #<step>`` annotations (step id);
- one small tuple per CUDA launch call (time, process, API) to join kernels to launches by ``correlation``;
- GPU activities waiting for their launch call (Kineto writes a CUDA graph's kernels before its
  ``cudaGraphLaunch``: at most one graph's worth) and a start-time reorder window of REORDER_WINDOW;
- per step, per category and per kernel-name totals.

A GPU activity (kernel, memcpy, memset) belongs to the step whose annotation, on the launching process,
is the latest to start at or before its launch call (so a step's sampling, launched after
``execute_model`` returned, stays with its step). Categories: rules.py (name rules) then
sequence.py (GEMM split by position). Idle: per device, gaps in the union of busy intervals,
split into inside a step (both neighbours in the same step), between steps, and outside any step.
With ``collect_comm`` (several tensor-parallel rank traces, ranks.py) every communication kernel is also
kept as (start, duration, name, step), to be matched with the other ranks' collectives.
"""
from __future__ import annotations

import gc
import re
from collections import defaultdict
from pathlib import Path

from vllm_w2ext.analysis.kernels.result import build_result
from vllm_w2ext.analysis.kernels.rules import classify_activity
from vllm_w2ext.analysis.kernels.sequence import LayerSequence
from vllm_w2ext.analysis.kernels.steps import LogHistogram, StepAcc, StepTimeline
from vllm_w2ext.analysis.readers.kineto_events import NO_ARGS, KinetoEventReader

GPU_CATS = frozenset(("kernel", "gpu_memcpy", "gpu_memset"))
RUNTIME_CATS = frozenset(("cuda_runtime", "cuda_driver"))
ANNOTATION_CATS = frozenset(("user_annotation", "gpu_user_annotation"))
LAUNCH_RX = re.compile(r"Launch|Memcpy|Memset")
REORDER_WINDOW = 4096          # GPU activities held (up to twice this) to restore start-time order per device
MAX_WAITING = 200_000          # GPU activities held waiting for their launch call (then: no step)


def _start(item: tuple) -> float:
    return item[0][0]


class Analyzer:
    """What one pass keeps: step marks, launches by correlation id, GPU activities waiting for their
    launch or for their turn in start order, and the running totals that result.py reads."""

    def __init__(self, collect_comm: bool = False) -> None:
        self.steps = StepTimeline()
        self.launches: dict[int, list] = {}       # correlation -> [ts, pid, api, matched]
        self.waiting: dict[int, list] = defaultdict(list)
        self.n_waiting = 0
        self.buffers: dict = {}                    # device -> [(record, step)] not yet in start order
        self.layer: dict = defaultdict(LayerSequence)
        self.dev: dict = {}                        # device -> [busy_until, last_step, first_ts]
        self.cats: dict = defaultdict(lambda: [0, 0.0])
        self.kernel_only_us = 0.0
        self.by_step: dict = defaultdict(StepAcc)
        self.names: dict = {}                      # (kernel name, category) -> [count, time]
        self.idle = {"in_steps": 0.0, "between_steps": 0.0, "outside_steps": 0.0}
        self.apis: dict = defaultdict(lambda: [0, 0.0])
        self.latency: dict = defaultdict(LogHistogram)
        self.counts: dict = defaultdict(int)
        self.out_of_order = 0
        self.no_launch = 0
        self.comm: list | None = [] if collect_comm else None   # (ts, dur, name, step) of each collective

    # -- events ---------------------------------------------------------------------------------
    def feed(self, e) -> None:
        """One kineto_events.Event (analyze() inlines this dispatch for speed)."""
        self.counts["events"] += 1
        cat = e.cat
        if cat in GPU_CATS:
            self.gpu(e)
        elif cat in RUNTIME_CATS:
            self.runtime(e)
        elif cat in ANNOTATION_CATS:
            self.annotation(e)

    def annotation(self, e) -> None:
        self.counts[e.cat] += 1
        if e.cat == "user_annotation":
            self.steps.add(e.name, e.pid, e.ts, e.dur)

    def gpu(self, e) -> None:
        if e.ph != "X":
            return
        a = e.args or NO_ARGS
        corr = a.correlation
        rec = (e.ts, e.dur, e.name, e.cat, e.pid if a.device is None else a.device, corr)
        self.counts[e.cat] += 1
        launch = self.launches.get(corr)
        if launch is not None or corr is None:
            self._release((rec,), launch)
        else:
            self.waiting[corr].append(rec)
            self.n_waiting += 1
            if self.n_waiting > MAX_WAITING:
                first = next(iter(self.waiting))
                recs = self.waiting.pop(first)
                self.n_waiting -= len(recs)
                self._release(recs, None)

    def runtime(self, e) -> None:
        name = e.name
        if not LAUNCH_RX.search(name):
            return
        ts, dur, pid = e.ts, e.dur, e.pid
        a = self.apis[name]
        a[0] += 1
        a[1] += dur
        step = self.steps.step_at(pid, ts)
        if step is not None:
            self.by_step[step].launch_api_us += dur
        corr = (e.args or NO_ARGS).correlation
        if corr is None:
            return
        launch = self.launches[corr] = [ts, pid, name, False]
        recs = self.waiting.pop(corr, None)
        if recs is not None:
            self.n_waiting -= len(recs)
            self._release(recs, launch)

    def _release(self, recs, launch) -> None:
        step = None
        if launch is not None:
            step = self.steps.step_at(launch[1], launch[0])
            if not launch[3]:
                launch[3] = True
                self.latency[launch[2]].add(max(0.0, min(r[0] for r in recs) - launch[0]))
        else:
            self.no_launch += len(recs)
        for rec in recs:
            buf = self.buffers.get(rec[4])
            if buf is None:
                buf = self.buffers[rec[4]] = []
            buf.append((rec, step))
            if len(buf) >= 2 * REORDER_WINDOW:
                self._drain(buf, REORDER_WINDOW)

    def _drain(self, buf: list, keep: int) -> None:
        """Process all but the ``keep`` latest-starting activities of a device, in start order (the list
        is nearly sorted already, which Python's sort handles in about linear time)."""
        buf.sort(key=_start)
        process = self._process
        for rec, step in buf[:len(buf) - keep]:
            process(rec, step)
        del buf[:len(buf) - keep]

    # -- ordered per device ---------------------------------------------------------------------
    def _process(self, rec: tuple, step) -> None:
        ts, dur, name, cat, device, _ = rec
        end = ts + dur
        st = self.dev.get(device)
        if st is None:
            st = self.dev[device] = [ts, None, ts, ts]   # busy_until, last_step, first_ts, last_ts
        if ts < st[3]:
            self.out_of_order += 1
        else:
            st[3] = ts
        gap = ts - st[0]
        s = None if step is None else self.by_step[step]
        if gap > 0:
            if s is not None and step == st[1]:
                self.idle["in_steps"] += gap
                s.idle_in += gap
            elif s is not None and st[1] is not None:
                self.idle["between_steps"] += gap
                if s.gap_before is None:
                    s.gap_before = gap
            else:
                self.idle["outside_steps"] += gap
        if end > st[0]:
            st[0] = end
        st[1] = step
        if s is not None:
            if ts < s.first:
                s.first = ts
            if end > s.last:
                s.last = end
        kind = classify_activity(cat, name)
        if kind == "communication" and self.comm is not None:
            self.comm.append((ts, dur, name, step))
        for r, category in self.layer[device].feed(rec, step, kind):
            self._account(r, category, s)

    def _account(self, rec: tuple, category: str, s) -> None:
        dur = rec[1]
        c = self.cats[category]
        c[0] += 1
        c[1] += dur
        if rec[3] == "kernel":
            self.kernel_only_us += dur
        if s is not None:
            s.kernels += 1
            s.time += dur
            s.cats[category] += dur
        key = (rec[2], category)
        n = self.names.get(key)
        if n is None:
            self.names[key] = [1, dur]
        else:
            n[0] += 1
            n[1] += dur

    def finish(self) -> None:
        for recs in list(self.waiting.values()):
            self._release(recs, None)
        self.waiting.clear()
        for buf in self.buffers.values():
            self._drain(buf, 0)
        for device, seq in self.layer.items():
            for r, category in seq.flush():
                self._account(r, category, None if seq.step is None else self.by_step[seq.step])


def analyze(path: str | Path, top: int = 20) -> dict:
    """Breakdown of one trace as a JSON-serialisable dict (see module docstring and the README)."""
    an, reader = read_trace(path)
    return build_result(an, path, reader, top)


def read_trace(path: str | Path, collect_comm: bool = False) -> tuple[Analyzer, KinetoEventReader]:
    """One pass over a trace: the Analyzer that read it (finished) and its reader (header, parser).
    ``collect_comm``: also keep every communication kernel (ranks.py matches them across ranks)."""
    reader = KinetoEventReader(path)
    an = Analyzer(collect_comm)
    gc_was_on = gc.isenabled()
    gc.disable()                      # millions of short-lived tuples, no cycles: collection is wasted time
    try:
        gpu, runtime, annotation = an.gpu, an.runtime, an.annotation
        n = 0
        for block in reader.blocks():
            n += len(block)
            for e in block:
                cat = e.cat
                if cat in GPU_CATS:
                    gpu(e)
                elif cat in RUNTIME_CATS:
                    runtime(e)
                elif cat in ANNOTATION_CATS:
                    annotation(e)
        an.counts["events"] += n
        an.finish()
    finally:
        if gc_was_on:
            gc.enable()
    return an, reader
