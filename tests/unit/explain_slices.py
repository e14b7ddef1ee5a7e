"""Hand-built runs for the explain tests: slices as the plugin writes them (names, roles, attributes
from vllm_w2ext.vocab), on a synchronous engine whose every number is chosen here, so each test knows
its answer. Times in milliseconds from the start of the run."""
from __future__ import annotations

from vllm_w2ext.analysis.explain.timeline import Process, Timeline, build
from vllm_w2ext.analysis.readers.pftrace import Slice
from vllm_w2ext.vocab import ENGINE, FRONT, WORKER, Attr, Span, device_idle_attr

MS = 1_000_000


def ns(ms: float) -> int:
    return int(round(ms * MS))


class Run:
    """One front end, one EngineCore and one worker per rank (pids 100, 200, 300 + rank)."""

    def __init__(self, ranks: int = 1, engine_args: bool = False):
        self.front: list[Slice] = []
        self.engine: list[Slice] = []
        self.workers: dict[int, list[Slice]] = {r: [] for r in range(ranks)}
        self.last_fwd_end: dict[int, float] = {}
        self.engine_args = engine_args

    # -- any slice -------------------------------------------------------------------------------
    def add(self, role: str, name: str, start: float, end: float, step: int = -1, rank: int = 0, **args) -> Slice:
        if step >= 0:
            args["step"] = step
        s = Slice(name, ns(start), ns(end), step, role, role, args)
        {FRONT: self.front, ENGINE: self.engine}.get(role, self.workers.get(rank)).append(s)
        return s

    def generate(self, start: float, end: float) -> None:
        self.add(FRONT, Span.GENERATE, start, end)

    # -- one engine step: its engine.step and each rank's worker.execute_model --------------------
    def step(self, step: int, fwd_start: float, busy: float, causes: dict[str, float] | None = None,
             prefill: int = 0, decode: int = 1, preemptions: int = 0, resumed: int = 0, running: int = 1,
             waiting: int = 0, prepare: float = 0.0, after: float = 0.0, busy_by_rank: dict | None = None,
             num_reqs: int | None = None, idle_unknown: bool = False, engine_args: dict | None = None) -> None:
        """The forward at [fwd_start, fwd_start + busy]; ``causes``: idle before it, in ms (they add up to
        the time since the previous forward ended, which the caller keeps consistent); ``idle_unknown``: no
        execution was recorded before this one (sampling), so its idle is not measured."""
        causes = causes or {}
        self.add(ENGINE, Span.STEP, fwd_start - prepare - 0.01, fwd_start + busy + after, step,
                 **{Attr.NUM_REQS: decode + (1 if prefill else 0) if num_reqs is None else num_reqs,
                    Attr.PREFILL_TOKENS: prefill,
                    Attr.DECODE_TOKENS: decode, Attr.PREEMPTIONS: preemptions,
                    Attr.BATCH_RESUMED_TOKENS: resumed, Attr.RUNNING: running, Attr.WAITING: waiting,
                    Attr.MODEL_EXECUTED: True, **(engine_args or {})})
        for rank in self.workers:
            b = (busy_by_rank or {}).get(rank, busy)
            args = {Attr.DEVICE_BUSY: b / 1e3}
            prev = self.last_fwd_end.get(rank)
            if idle_unknown:
                args.update({Attr.DEVICE_IDLE: 0.0, Attr.DEVICE_IDLE_UNKNOWN: True})
            elif prev is not None:
                args.update({Attr.DEVICE_IDLE: sum(causes.values()) / 1e3, Attr.DEVICE_IDLE_START: ns(prev),
                             Attr.DEVICE_IDLE_END: ns(fwd_start)})
                for c, v in causes.items():
                    args[device_idle_attr(c)] = v / 1e3
                if causes:
                    args[Attr.DEVICE_IDLE_CAUSE] = max(causes, key=causes.get)
            if self.engine_args:
                args.update({Attr.ENGINE_INDEX: 0, Attr.RANK: rank})
            self.add(WORKER, Span.WORKER_EXECUTE, fwd_start - prepare, fwd_start + b, step, rank, **args)
            self.last_fwd_end[rank] = fwd_start + b

    def request(self, rid: str, start: float, end: float, first_step: int | None = None, **attrs) -> Slice:
        args = {Attr.REQUEST_ID: rid, **attrs}
        if first_step is not None:
            args[Attr.FIRST_STEP] = first_step
        return self.add(ENGINE, Span.ENGINE_REQUEST, start, end, **args)

    def timeline(self) -> Timeline:
        files = [(Process(100, "vLLM frontend (pid 100)"), self.front),
                 (Process(200, "vLLM engine_core (pid 200)"), self.engine)]
        files += [(Process(300 + r, f"vLLM worker (pid {300 + r})"), sl) for r, sl in self.workers.items()]
        return build(files, "synthetic")


def steady(run: Run, steps: int, busy: float, causes: dict[str, float], t0: float = 0.0, first_step: int = 1,
           **kw) -> float:
    """``steps`` identical steps from t0 (the first forward at t0); returns the last forward's end."""
    gap = sum(causes.values())
    t = t0
    for i in range(steps):
        run.step(first_step + i, t, busy, causes if i else None, **kw)
        t += busy + gap
    return t - gap
