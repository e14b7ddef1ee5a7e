"""A ``VLLM_W2EXT_TRACE_DIR`` folder loaded into one timeline: who each process is (role, engine, rank),
the wall window of the run, each device's model executions (``worker.execute_model`` with the device
attributes), each engine's steps, the requests, and when the front end was busy.

Engine and rank come from the slices' arguments (``vllm.engine_index``, ``vllm.rank`` /
``vllm.tp_rank``) where the spans carry them, else from the process track's name (``engine 1``,
``DP1``, ``rank 0``, ``TP0``), else engine 0 and the worker processes numbered in pid order.

The wall window: from the first ``llm.generate`` start to the last one's end when the front end
recorded it (offline runs), widened to the requests added outside it (an ``LLMEngine.add_request`` /
``step`` loop), else from the first to the last slice of the run."""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

from vllm_w2ext.analysis.explain.intervals import Union
from vllm_w2ext.analysis.readers.pftrace import Slice, read_span_file
from vllm_w2ext.vocab import (ENGINE, FRONT, IDLE_CAUSES, TRACE_FILE_GLOB, WORKER, Attr, Span,
                              device_idle_attr)

# Front-end work that, overlapping an idle window of the device, means the front end held the engine
# up: requests it had not delivered yet, outputs it had not taken yet. Not front.step: offline, it
# spends most of its time blocked on the EngineCore's next output (busy waiting on the engine, not the
# other way round); the work inside it is its process_outputs.
FRONT_BUSY_SPANS = (Span.PROCESS_OUTPUTS, Span.ADD_REQUEST)
FORWARD_SPANS = (Span.FORWARD, Span.RUNNER_EXECUTE)
ENGINE_RX = re.compile(r"\bengine[ _=#]?(\d+)\b|\bDP(\d+)\b", re.I)
RANK_RX = re.compile(r"\b(?:tp_)?rank[ _=#]?(\d+)\b|\bTP(\d+)\b", re.I)


@dataclass
class Process:
    pid: int
    name: str = ""
    engine: str | None = None      # from the track name, when it says
    rank: str | None = None
    path: str = ""


@dataclass
class Execution:
    """One model execution on one device (a worker's ``worker.execute_model`` slice)."""
    step: int
    engine: str
    rank: str
    pid: int
    slice: Slice
    busy_s: float | None            # vllm.device.busy_s (None: the span has no device attributes)
    idle_s: float
    causes: dict[str, float]        # vllm.device.idle.<cause>_s
    idle_start_ns: int | None
    idle_end_ns: int | None
    fwd_start: int = 0              # the forward on the wall clock (estimated where not recorded)
    fwd_end: int = 0
    idle_known: bool = True         # False: no execution was recorded before it (vllm.device.idle_unknown)

    @property
    def device(self) -> tuple[str, str]:
        return (self.engine, self.rank)


@dataclass
class Sampling:
    """What a sampled run (``VLLM_W2EXT_SAMPLE``) recorded, from its step spans (``vllm_w2ext.sample.*``)."""
    every: int                                   # N
    recorded: int                                # engine steps recorded, every engine
    steps: int                                   # engine steps run, the ones only counted included
    executed: dict[str, int] = field(default_factory=dict)   # engine -> steps that ran the model, counted ones too
    least: int = 0                               # the smallest N of a step (1: recorded fully traced); below
                                                 # ``every`` when VLLM_W2EXT_COST_BUDGET moved N during the run


@dataclass
class Timeline:
    path: str = ""
    processes: list[Process] = field(default_factory=list)
    wall_start: int = 0
    wall_end: int = 0
    wall_source: str = "first to last span"
    executions: dict[tuple[str, str], list[Execution]] = field(default_factory=dict)
    engine_steps: dict[str, list[Slice]] = field(default_factory=dict)      # by engine, start order
    engine_spans: dict[str, dict[str, list[Slice]]] = field(default_factory=dict)   # engine -> name -> slices
    requests: list[tuple[str, Slice]] = field(default_factory=list)       # (engine, engine.request)
    front_requests: list[Slice] = field(default_factory=list)             # vllm.request
    front_busy: Union = field(default_factory=lambda: Union(()))
    front_adds: list[tuple[int, int]] = field(default_factory=list)      # front.add_request intervals
    notes: list[str] = field(default_factory=list)
    sampling: Sampling | None = None                                      # None: every step recorded

    @property
    def wall_s(self) -> float:
        return max(0, self.wall_end - self.wall_start) / 1e9

    @property
    def devices(self) -> list[tuple[str, str]]:
        return sorted(self.executions)

    @property
    def has_device_attrs(self) -> bool:
        return any(e.busy_s is not None for ex in self.executions.values() for e in ex)

    def step_slices(self, engine: str) -> dict[int, Slice]:
        return {s.step: s for s in self.engine_steps.get(engine, [])}


def device_label(device: tuple[str, str]) -> str:
    return f"engine {device[0]} rank {device[1]}"


def _match(rx: re.Pattern, text: str) -> str | None:
    m = rx.search(text or "")
    return next((g for g in m.groups() if g is not None), None) if m else None


def _ident(s: Slice, proc: Process, key: str, fallback: str | None) -> str | None:
    v = s.args.get(key)
    if v is not None:
        return str(v)
    return fallback


def _num(args: dict, key: str, default=None):
    v = args.get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else default


def _execution(s: Slice, proc: Process, engine: str, rank: str, forward: Slice | None) -> Execution:
    a = s.args
    busy = _num(a, Attr.DEVICE_BUSY)
    causes = {c: float(_num(a, device_idle_attr(c), 0.0)) for c in IDLE_CAUSES}
    causes = {c: v for c, v in causes.items() if v > 0}
    ex = Execution(s.step, engine, rank, proc.pid, s, None if busy is None else float(busy),
                   float(_num(a, Attr.DEVICE_IDLE, 0.0)), causes,
                   _num(a, Attr.DEVICE_IDLE_START), _num(a, Attr.DEVICE_IDLE_END),
                   idle_known=not a.get(Attr.DEVICE_IDLE_UNKNOWN))
    busy_ns = int((ex.busy_s or 0.0) * 1e9)
    if ex.idle_end_ns is not None:
        ex.fwd_start = int(ex.idle_end_ns)
    elif forward is not None:          # no idle before it (a first step): its forward span, where recorded
        ex.fwd_start = forward.start_ns
    else:       # else the forward ends the span (CPU build) or near it
        ex.fwd_start = max(s.start_ns, s.end_ns - busy_ns) if ex.busy_s is not None else s.start_ns
    ex.fwd_end = ex.fwd_start + busy_ns if ex.busy_s is not None else s.end_ns
    return ex


def build(files: list[tuple[Process, list[Slice]]], path: str = "") -> Timeline:
    """The timeline of the slices of each process (a folder's span files, or hand-built lists)."""
    tl = Timeline(path=path, processes=[p for p, _ in files])
    everything = [s for _, sl in files for s in sl]
    if not everything:
        tl.notes.append("no spans found")
        return tl
    gens = [s for s in everything if s.name == Span.GENERATE]
    if gens:
        tl.wall_start, tl.wall_end = min(s.start_ns for s in gens), max(s.end_ns for s in gens)
        tl.wall_source = "llm.generate" if len(gens) == 1 else f"{len(gens)} llm.generate calls, first to last"
        # requests added outside any generate call (a loop over LLMEngine.add_request / step) widen it
        outside = [s for s in everything if s.name == Span.REQUEST
                   and (s.start_ns < tl.wall_start or s.end_ns > tl.wall_end)]
        if outside:
            tl.wall_start = min(tl.wall_start, min(s.start_ns for s in outside))
            tl.wall_end = max(tl.wall_end, max(s.end_ns for s in outside))
            tl.wall_source += f" and {len(outside)} requests outside it"
    else:
        tl.wall_start = min(s.start_ns for s in everything)
        tl.wall_end = max(s.end_ns for s in everything)
    worker_pids = sorted({p.pid for p, sl in files if any(s.role == WORKER for s in sl)})
    engine_pids = sorted({p.pid for p, sl in files if any(s.role == ENGINE for s in sl) and p.engine is None})
    if len(engine_pids) > 1:
        tl.notes.append(f"{len(engine_pids)} EngineCore processes whose span files do not say their engine index: "
                        "engines numbered in pid order; workers in processes of their own are not told apart by engine")
    front_busy, outputs_calls = [], [0, 0]      # front.process_outputs: recorded, only counted (sampled runs)
    for proc, slices in files:
        forwards = {s.step: s for s in slices if s.name in FORWARD_SPANS and s.step >= 0}
        fallback = proc.engine or (str(engine_pids.index(proc.pid)) if proc.pid in engine_pids else "0")
        for s in slices:
            engine = _ident(s, proc, Attr.ENGINE_INDEX, fallback)
            if s.role == WORKER and s.name == Span.WORKER_EXECUTE:
                rank = (_ident(s, proc, Attr.RANK, None) or _ident(s, proc, Attr.TP_RANK, None) or proc.rank
                        or str(worker_pids.index(proc.pid) if proc.pid in worker_pids else 0))
                ex = _execution(s, proc, engine, rank, forwards.get(s.step))
                if ex.fwd_end > tl.wall_start and ex.fwd_start < tl.wall_end:
                    tl.executions.setdefault(ex.device, []).append(ex)
            elif s.role == ENGINE:
                if s.name == Span.STEP:
                    tl.engine_steps.setdefault(engine, []).append(s)
                elif s.name == Span.ENGINE_REQUEST:
                    tl.requests.append((engine, s))
                else:
                    tl.engine_spans.setdefault(engine, {}).setdefault(s.name, []).append(s)
            elif s.role == FRONT:
                if s.name in FRONT_BUSY_SPANS:
                    front_busy.append((s.start_ns, s.end_ns))
                if s.name == Span.PROCESS_OUTPUTS:
                    outputs_calls[0] += 1
                    outputs_calls[1] += int(_num(s.args, Attr.SKIPPED_CALLS, 0))
                if s.name == Span.ADD_REQUEST:
                    tl.front_adds.append((s.start_ns, s.end_ns))
                elif s.name == Span.REQUEST:
                    tl.front_requests.append(s)
    if tl.has_device_attrs:       # an execute_model without device time ran no forward (an empty step)
        tl.executions = {d: [e for e in exs if e.busy_s is not None] for d, exs in tl.executions.items()}
        tl.executions = {d: exs for d, exs in tl.executions.items() if exs}
    for exs in tl.executions.values():
        exs.sort(key=lambda e: (e.fwd_start, e.step))
    for steps in tl.engine_steps.values():
        steps.sort(key=lambda s: s.start_ns)
    for spans in tl.engine_spans.values():
        for v in spans.values():
            v.sort(key=lambda s: s.start_ns)
    tl.front_busy = Union(front_busy)
    tl.sampling = _sampling(tl)
    if tl.sampling is not None:
        tl.notes.append(_sampling_note(tl.sampling))
    if outputs_calls[1]:
        recorded, counted = outputs_calls
        tl.notes.append(f"sampled front end: {recorded} of {recorded + counted} output-processing calls recorded "
                        "(those of its recorded iterations and every one in which a request finished, where the "
                        "engine can run out of work); front-end work is read from those, so a front end lagging "
                        "behind the engine shows in the tail only through its recorded calls")
    if tl.executions and not tl.has_device_attrs:
        tl.notes.append("the worker spans carry no device attributes (vllm.device.*): device timing was off "
                        "(VLLM_W2EXT_DEVICE_TIMING=off) with a model runner whose forward is not hooked (vLLM's V2 "
                        "runner), or a plugin older than device-idle attribution wrote this folder; device idle is "
                        "not broken down by cause")
    return tl


def _sampling(tl: Timeline) -> Sampling | None:
    """The step spans of a sampled run carry N and, on each recorded step, the steps only counted before it."""
    steps = [s for ss in tl.engine_steps.values() for s in ss]
    ns = [int(_num(s.args, Attr.SAMPLE_EVERY, 1)) for s in steps]      # no attribute: recorded in full (N 1)
    every = max(ns, default=1)
    if every <= 1:
        return None
    smp = Sampling(every, len(steps), len(steps), least=min(ns))
    for engine, ss in tl.engine_steps.items():
        counted = sum(_num(s.args, Attr.SKIPPED_STEPS, 0) for s in ss)
        smp.steps += counted + sum(_num(s.args, Attr.SKIPPED_IDLE_STEPS, 0) for s in ss)
        smp.executed[engine] = counted + sum(1 for s in ss if s.args.get(Attr.MODEL_EXECUTED))
    return smp


def _sampling_note(smp: Sampling) -> str:
    n = (f"VLLM_W2EXT_SAMPLE={smp.every}" if smp.least == smp.every else
         f"VLLM_W2EXT_SAMPLE from {smp.least} to {smp.every}, moved by VLLM_W2EXT_COST_BUDGET")
    return (f"sampled run ({n}): {smp.recorded} of {smp.steps} engine steps recorded "
            "(pairs of steps in full, and every step that changed a request as a bare step); the device's time "
            "between forwards (busy and idle by cause) is scaled up from the forwards whose idle was measured (each device's "
            "`scale`), the head and tail are as measured, the requests' figures are complete")


def span_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    files = sorted(glob.glob(os.path.join(path, TRACE_FILE_GLOB)))
    return files or sorted(glob.glob(os.path.join(path, "**", TRACE_FILE_GLOB), recursive=True))


def load(path: str) -> Timeline:
    """The timeline of a ``VLLM_W2EXT_TRACE_DIR`` folder (or one span file)."""
    files, notes = [], []
    for f in span_files(path):
        sf = read_span_file(f)
        name = sf.process_name
        files.append((Process(sf.pid, name, _match(ENGINE_RX, name), _match(RANK_RX, name), f), sf.slices))
        if sf.truncated_bytes or sf.open_slices:
            notes.append(f"{os.path.basename(f)} was cut short ({sf.open_slices} spans without an end): "
                         "the process was killed or is still running")
    tl = build(files, path)
    if not files:
        tl.notes = [f"no span files ({TRACE_FILE_GLOB}) under {path}"]
    tl.notes += notes
    return tl
