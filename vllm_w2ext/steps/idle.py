"""Device idle between two forwards, each idle microsecond given to exactly one cause (export side).

The device timeline of a worker: on CUDA, each step's GPU interval from CUDA events (``DeviceSample``,
resolved by the worker's export thread and carried in ``Span.DEVICE_SAMPLES`` records, so the step's
``worker.execute_model`` span is held back until its sample arrives);
on the CPU build, the worker's own forward spans (the thread that launches a forward runs it).

The idle window before step s's forward is placed on the wall clock (GPU: it ends at the forward's launch, or
at ``Worker.execute_model``'s start where the runner has no launch hook, see ``hooks/gpu_timing.py``; CPU:
between the two forward spans) and split
by what the critical path was doing then, from the intervals the worker and the EngineCore recorded
(the EngineCore's arrive in the step's ``Stamp``). Where several apply, the first cause of
``vocab.IDLE_CAUSES`` wins:

- ``prepare_inputs``: the worker between ``execute_model``'s start and the forward (its launch on CUDA: the
  GPU, done with the previous step, runs only the inputs' copies and small kernels then);
- ``ipc``: the step on its way from the EngineCore's dispatch to the worker, and the previous step's
  output on its way back (worker done -> ``update_from_output`` starts);
- ``schedule``, ``update_from_output``: the EngineCore's scheduler calls;
- ``sample``: the previous step's work after its forward: the rest of ``execute_model`` and
  ``sample_tokens`` (sampling, output sync); the wait between the two is ``ipc`` (the executor's
  round trip to the EngineCore and back);
- ``engine_loop``: the EngineCore between steps, or before dispatch, with requests pending;
- ``no_work``: the EngineCore between steps with no request running or waiting (``explain`` splits
  this into ``frontend`` when the front end was busy then);
- ``unattributed``: none of the above.
"""
from __future__ import annotations

from dataclasses import dataclass

from vllm_w2ext.steps.facts import ExecutionRecord, Stamp, device_samples
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.vocab import GAP_PARTS, IDLE_CAUSES, Attr, Span, device_idle_attr

HOLD_MAX = 256            # execute spans waiting for their GPU sample; beyond it the oldest go out
_PRIORITY = {c: i for i, c in enumerate(IDLE_CAUSES)}


def attribute(a: int, b: int, segments: list[tuple[str, int, int]]) -> dict[str, int]:
    """Nanoseconds of [a, b] per cause; ``segments``: (cause, start, end), earlier causes of
    IDLE_CAUSES win where they overlap; what no segment covers is ``unattributed``."""
    if b <= a:
        return {}
    cuts = {a, b}
    segs = []
    for cause, s, e in segments:
        s, e = max(s, a), min(e, b)
        if s < e:
            segs.append((_PRIORITY[cause], cause, s, e))
            cuts.update((s, e))
    segs.sort()
    points = sorted(cuts)
    out: dict[str, int] = {}
    for lo, hi in zip(points, points[1:]):
        cause = next((c for _, c, s, e in segs if s <= lo and hi <= e), "unattributed")
        out[cause] = out.get(cause, 0) + hi - lo
    return out


@dataclass
class Execution:
    """One step's model execution on this worker."""
    step: int
    start: int
    end: int = 0                    # end of execute_model, or of sample_tokens once it ran
    exec_end: int = 0               # end of execute_model
    sample_start: int = 0           # sample_tokens
    sample_end: int = 0
    forward_start: int = 0
    forward_end: int = 0
    stamp: Stamp | None = None
    dispatch: int = 0
    cuda: bool = False              # its device time comes from CUDA events, not the forward span
    span: Range | None = None       # held until its device time is known
    done: bool = False              # its device attributes are set
    first: bool = False             # no execution before it to measure from (the first, or after a pause)


def segments(cur: Execution, prev: Execution | None, launch: int) -> list[tuple[str, int, int]]:
    """The causes' intervals around ``cur``'s idle window; ``launch``: where the step's device time starts (the
    forward span's start on the CPU build, the sample's launch on CUDA), input preparation before it."""
    st = cur.stamp
    out: list[tuple[str, int, int]] = []

    def add(cause: str, start: int, end: int) -> None:
        if start and end:                      # 0: not recorded (first step, no update yet)
            out.append((cause, start, end))
    add("prepare_inputs", cur.start, launch)
    add("ipc", cur.dispatch, cur.start)
    if st is not None:
        add("schedule", st.schedule_start, st.schedule_end)
        add("update_from_output", st.update_start, st.update_end)
        add("engine_loop" if st.prev_pending else "no_work", st.prev_step_end, st.step_start)
        add("engine_loop", st.step_start, cur.dispatch or cur.start)
    if prev is not None:
        add("sample", prev.forward_end, prev.exec_end)
        add("sample", prev.sample_start, prev.sample_end)
        add("ipc", prev.exec_end, prev.sample_start)
        if st is not None and st.update_start > prev.end:
            add("ipc", prev.end, st.update_start)
    return out


class DeviceIdle:
    """Per worker process: holds execute spans, attributes idle, writes the device attributes."""

    KEEP_STEPS = 64                                   # executions kept past their batch (a GPU sample lags 1-2)

    def __init__(self) -> None:
        self.runs: dict[int, Execution] = {}          # step -> execution (recent ones)
        self.last_forward: Execution | None = None    # CPU build: the previous forward
        self.held: list[Execution] = []
        self.early_forwards: dict[int, tuple[int, int]] = {}

    def __call__(self, ranges: list[Range]) -> list[Range]:
        """Take a batch of assembled ranges; returns those to export now (execute spans may wait).
        A forward ends before its execute_model, so executions are registered first."""
        out = []
        samples: list = []
        for r in ranges:
            if r.name == Span.DEVICE_SAMPLES:             # internal: consumed here, never exported
                samples += device_samples(r.data or ())
            elif r.name == Span.WORKER_EXECUTE and isinstance(r.data, ExecutionRecord):
                d, r.data = r.data, None
                ex = self.runs[r.step] = Execution(r.step, r.start_ns, r.end_ns, r.end_ns, stamp=d.stamp,
                                                   dispatch=d.dispatch_ns, cuda=d.cuda, span=r,
                                                   first=not d.prev_end)
                self.held.append(ex)
                early = self.early_forwards.pop(r.step, None)
                if early is not None:
                    self._forward(ex, *early)
            else:
                out.append(r)
        for sample in samples:                        # their executions were recorded before them
            self._gpu(sample)
        for r in out:
            if r.name == Span.FORWARD:
                ex = self.runs.get(r.step)
                if ex is None:                        # its execute_model is in a later batch
                    self.early_forwards[r.step] = (r.start_ns, r.end_ns)
                    while len(self.early_forwards) > self.KEEP_STEPS:
                        self.early_forwards.pop(next(iter(self.early_forwards)))
                else:
                    self._forward(ex, r.start_ns, r.end_ns)
            elif r.name == Span.WORKER_SAMPLE:
                ex = self.runs.get(r.step)
                if ex is not None:
                    ex.sample_start, ex.sample_end = r.start_ns, r.end_ns
                    ex.end = max(ex.end, r.end_ns)
        for ex in self.held:                  # CPU build: a forward ends before its execute_model, so
            if not ex.cuda:                   # one that has none by now never ran a forward
                ex.done = True
        self._forget_old()
        return out + self._release()

    def _forget_old(self) -> None:
        """Once a batch is applied, keep the newest KEEP_STEPS executions. Not while registering: the export
        thread's samples come at the end of a batch that may hold more than KEEP_STEPS new executions (a
        export interval of 2 ms steps), and the last steps of the batch before still wait for theirs."""
        if len(self.runs) > self.KEEP_STEPS:
            for step in sorted(self.runs)[:-self.KEEP_STEPS]:
                del self.runs[step]

    def _forward(self, ex: Execution, start: int, end: int) -> None:
        ex.forward_start, ex.forward_end = start, end
        if not ex.cuda and not ex.done:
            self._cpu_forward(ex)

    # -- the two device clocks --------------------------------------------------------------------
    def _cpu_forward(self, ex: Execution) -> None:
        prev, self.last_forward = self.last_forward, ex
        busy = (ex.forward_end - ex.forward_start) / 1e9
        if prev is None or prev is ex or ex.first:
            self._set(ex, busy, 0, 0, {}, cuda=False, unknown=prev is not ex)
            return
        a, b = prev.forward_end, ex.forward_start
        self._set(ex, busy, a, b, attribute(a, b, segments(ex, prev, ex.forward_start)), cuda=False)

    def _gpu(self, sample) -> None:
        ex = self.runs.get(sample.step)
        if ex is None:
            return
        idle_ns = 0 if ex.first else int(sample.idle_s * 1e9)     # first: nothing recorded before it
        b = sample.launch_ns
        a = b - idle_ns
        causes = attribute(a, b, segments(ex, self.runs.get(sample.step - 1), b)) if idle_ns > 0 else {}
        self._set(ex, sample.busy_s, a, b, causes, cuda=True, unknown=ex.first)

    @staticmethod
    def _set(ex: Execution, busy_s: float, a: int, b: int, causes: dict[str, int], cuda: bool,
             unknown: bool = False) -> None:
        r = ex.span
        if r is None or ex.done:
            return
        ex.done = True
        attrs = r.attrs if r.attrs is not None else {}
        idle = (b - a) / 1e9 if b > a else 0.0
        attrs[Attr.DEVICE_BUSY] = busy_s
        attrs[Attr.DEVICE_IDLE] = idle
        attrs[Attr.DEVICE_CLOCK] = "cuda_events" if cuda else "forward_spans"
        if unknown:
            attrs[Attr.DEVICE_IDLE_UNKNOWN] = True
        if causes:
            attrs[Attr.DEVICE_IDLE_START], attrs[Attr.DEVICE_IDLE_END] = a, b
            for cause, ns in causes.items():
                attrs[device_idle_attr(cause)] = ns / 1e9
            attrs[Attr.DEVICE_IDLE_CAUSE] = max(causes, key=causes.get)
        gap, other = attrs.get(Attr.GAP_CPU), attrs.get(Attr.GAP_OTHER)
        if cuda and gap is not None and other:
            # of the CPU gap, all but the device's idle time the device was busy: the thread was
            # waiting for it (async scheduling), not late
            wait = min(other, max(0.0, gap - idle))
            attrs[GAP_PARTS["wait_device"]] = wait
            attrs[Attr.GAP_OTHER] = other - wait
        r.attrs = attrs

    def _release(self) -> list[Range]:
        """Spans whose device attributes are set; the oldest beyond HOLD_MAX go out without them."""
        keep = [ex for ex in self.held if not ex.done]
        out = [ex.span for ex in self.held if ex.done]
        while len(keep) > HOLD_MAX:
            out.append(keep.pop(0).span)
        self.held = keep
        return out

    def drain(self) -> list[Range]:
        """Shutdown or flush: everything still held goes out as it is."""
        out = [ex.span for ex in self.held]
        self.held = []
        return out
