"""The flows (arrows in Perfetto) of the merged trace, in the order they are added:
front-end request -> EngineCore request of the same ``vllm.request.id``; request -> its first and last
step; step -> worker; step -> the profiler's annotation of that step in the worker -> the GPU kernels
(or, on CPU traces, the CPU ops) it launched: the first and last by default, every one with ``all``."""
from __future__ import annotations

from dataclasses import dataclass, field

from vllm_w2ext.analysis.merge.our_events import OurEvents
from vllm_w2ext.analysis.merge.profiler_index import ProfilerIndex
from vllm_w2ext.analysis.readers.pftrace import SpanFile
from vllm_w2ext.vocab import Attr, Span


@dataclass
class _Spans:
    """The span-file slices the flows start or end at, looked up the ways the flows need."""
    step_by_start: dict = field(default_factory=dict)     # (pid, start_ns) -> engine.step
    step_by_end: dict = field(default_factory=dict)       # (pid, end_ns) -> engine.step
    step_by_id: dict = field(default_factory=dict)        # step id -> engine.step (the first EngineCore's)
    workers: dict = field(default_factory=dict)           # step id -> [(pid, worker.execute_model)]
    engine_requests: dict = field(default_factory=dict)   # request id -> engine.request


def _index(span_files: list[SpanFile]) -> _Spans:
    ix = _Spans()
    for sf in span_files:
        for s in sf.slices:
            if s.name == Span.STEP:
                ix.step_by_start[(sf.pid, s.start_ns)] = ix.step_by_end[(sf.pid, s.end_ns)] = s
                ix.step_by_id.setdefault(s.step, s)       # one EngineCore (several would repeat step ids)
            elif s.name == Span.WORKER_EXECUTE:
                ix.workers.setdefault(s.step, []).append((sf.pid, s))
    ix.engine_requests = {s.args[Attr.REQUEST_ID]: s for sf in span_files for s in sf.slices
                          if s.name == Span.ENGINE_REQUEST and Attr.REQUEST_ID in s.args}
    return ix


def add_flows(o: OurEvents, span_files: list[SpanFile], where: dict, profs: list[ProfilerIndex],
              step_flows: str) -> None:
    """All flows; ``where`` maps id(slice) to its event's (pid, tid, ts) (our_events.add_spans)."""
    spans = _index(span_files)
    _front_to_engine(o, span_files, where, spans)
    _request_to_steps(o, span_files, where, spans)
    _step_to_workers(o, where, spans)
    for ix in profs:
        _step_to_profiler(o, ix, where, spans, step_flows)


def _front_to_engine(o: OurEvents, span_files: list[SpanFile], where: dict, spans: _Spans) -> None:
    for sf in span_files:
        for s in sf.slices:
            er = spans.engine_requests.get(s.args.get(Attr.REQUEST_ID)) if s.name == Span.REQUEST else None
            if er is not None:
                o.flow("front->engine", where[id(s)], where[id(er)])


def _request_to_steps(o: OurEvents, span_files: list[SpanFile], where: dict, spans: _Spans) -> None:
    """A request's first and last step share its start and end stamps."""
    for sf in span_files:
        for s in sf.slices:
            if s.name == Span.ENGINE_REQUEST:
                first, last = spans.step_by_start.get((sf.pid, s.start_ns)), spans.step_by_end.get((sf.pid, s.end_ns))
                for st in dict.fromkeys(x for x in (first, last) if x is not None):
                    o.flow("request->step", where[id(s)], where[id(st)])


def _step_to_workers(o: OurEvents, where: dict, spans: _Spans) -> None:
    for step, ws in spans.workers.items():
        st = spans.step_by_id.get(step)
        for _, w in ws:
            if st is not None:
                o.flow("step->worker", where[id(st)], where[id(w)])


def _step_to_profiler(o: OurEvents, ix: ProfilerIndex, where: dict, spans: _Spans, step_flows: str) -> None:
    """Step -> the profiler's annotation of it -> what it launched. One annotation per step: ours where
    the plugin was on, else vLLM's own ``execute_context_...``."""
    has_ours = any(a.ours for a in ix.annotations)
    for a in ix.annotations:
        if a.ours != has_ours or (a.ours and a.name != Span.WORKER_EXECUTE):
            continue
        dst = (a.pid, a.tid, a.ts)
        # Perfetto drops a v1 flow whose end precedes its start: the engine step began well
        # before its worker ran; our own worker span only where it starts first after the shift.
        st = spans.step_by_id.get(a.step) if a.ours else None
        ws = [w for pid, w in spans.workers.get(a.step, ()) if pid == a.pid] if a.ours else []
        src = where[id(st)] if st is not None else next(
            (where[id(w)] for w in ws if where[id(w)][2] <= a.ts), None)
        if src is not None:
            o.flow("step->profiler", src, dst)
        targets = ix.step_targets(a)
        if step_flows == "bounds":
            targets = list(dict.fromkeys(targets[:1] + targets[-1:]))
        for t in targets:
            o.flow("step->kernel" if ix.has_gpu else "step->op", dst, t[:3])
