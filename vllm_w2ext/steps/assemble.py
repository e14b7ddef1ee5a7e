"""Export side: turn the hooks' raw records into finished spans.

An ``engine.step`` range arrives with a :class:`StepRecord` (its batch facts, finished requests); a
``worker.execute_model`` range with an :class:`ExecutionRecord` (the step's stamp), both as plain
tuples read back here; the front end's ``vllm.request`` range with the end of its input processing (ns),
which becomes its ``front.add_request`` child (from the request's start); its ``front.step`` range with the
``front.process_outputs`` inside it (``wire.OutputsPhase``), which becomes that child. Here they get their
attributes and links, and each finished request becomes an ``engine.request`` span. Runs in the export
process (or on the export thread with ``VLLM_W2EXT_EXPORT_PROCESS=off``), never on vLLM's threads."""
from __future__ import annotations

from vllm_w2ext.steps.facts import (NO_SKIPPED, ExecutionRecord, StepRecord, WorkerBounds, execution_record, sampled,
                                    step_record)
from vllm_w2ext.steps.gaps import gap_attrs
from vllm_w2ext.steps.idle import DeviceIdle
from vllm_w2ext.steps.requests import RequestIndex
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.telemetry.wire import ON_THREAD, OutputsPhase
from vllm_w2ext.vocab import ENGINE, FRONT, WORKER, Attr, Span


class Assembler:
    def __init__(self, extract_parent, new_span_id, new_trace_id, links: str = "boundary", max_links: int = 512):
        self.index = RequestIndex(extract_parent, links, max_links)
        self.device = DeviceIdle()
        self.new_span_id, self.new_trace_id = new_span_id, new_trace_id

    def __call__(self, ranges: list[Range]) -> list[Range]:
        extra: list[Range] = []
        for r in ranges:
            d = r.data
            if d is None:
                continue
            if r.name == Span.STEP:
                r.data = None
                extra += self.step(r, step_record(d))
            elif r.name == Span.WORKER_EXECUTE:
                r.data = execution_record(d)
                self.execution(r)
            elif r.name == Span.REQUEST and r.role == FRONT:
                r.data = None
                extra.append(Range(Span.ADD_REQUEST, FRONT, r.trace_id, self.new_span_id(), r.span_id, r.start_ns,
                                   d, nested=False))
            elif r.name == Span.FRONT_STEP:
                r.data = None
                phase = OutputsPhase._make(d)
                extra.append(Range(Span.PROCESS_OUTPUTS, FRONT, r.trace_id, self.new_span_id(), r.span_id,
                                   phase.start_ns, phase.end_ns, {Attr.NUM_OUTPUTS: phase.outputs}, nested=True))
        return self.device(ranges + extra if extra else ranges)

    @staticmethod
    def execution(r: Range) -> None:
        """A worker execution's attributes from its ExecutionRecord (``r.data``): tokens, and the gap before it."""
        d = r.data
        attrs = r.attrs if r.attrs is not None else {}
        if d.tokens >= 0:
            attrs[Attr.WORKER_TOKENS] = d.tokens
        if d.prev_end:
            attrs.update(gap_attrs(d.prev_end, r.start_ns, d.stamp))
        r.attrs = attrs or r.attrs

    def worker(self, w: WorkerBounds) -> list[Range]:
        """The worker's spans of an execution read from its bounds hooks (the worker on the EngineCore's thread,
        ``hooks/bounds.py``), as its hooks record them elsewhere: the execution under the step that scheduled it,
        with its ExecutionRecord (device samples find it as theirs), its forward under it, its sample under the
        step."""
        st = w.stamp
        ex = Range(Span.WORKER_EXECUTE, WORKER, st.trace_id, self.new_span_id(), st.span_id, w.execute_start,
                   w.execute_end, None, st.step, error=w.execute_error, nested=ON_THREAD,
                   data=ExecutionRecord(st, w.prev_end, 0, w.cuda, w.tokens))
        self.execution(ex)
        out = [ex]
        if w.forward_start:
            out.append(Range(Span.FORWARD, WORKER, st.trace_id, self.new_span_id(), ex.span_id, w.forward_start,
                             w.forward_end, None, st.step, error=w.forward_error, nested=True))
        if w.sample_start:
            out.append(Range(Span.WORKER_SAMPLE, WORKER, st.trace_id, self.new_span_id(), st.span_id, w.sample_start,
                             w.sample_end, None, st.step, error=w.sample_error, nested=True))
        return out

    def drain(self) -> list[Range]:
        """Ranges still held (execute spans waiting for a device sample that will not come)."""
        return self.device.drain()

    def step(self, r: Range, d: StepRecord) -> list[Range]:
        attrs = {Attr.STEP_ID: r.step, Attr.MODEL_EXECUTED: d.model_executed}
        skipped = d.skipped
        if skipped != NO_SKIPPED:
            attrs.update({Attr.SKIPPED_STEPS: skipped.executed, Attr.SKIPPED_IDLE_STEPS: skipped.idle,
                          Attr.SKIPPED_DECODE_TOKENS: skipped.decode_tokens})
            self.index.scheduled_steps += skipped.executed      # decode-only steps: no request changed in them
        every = d.every                 # the N the EngineCore ran this step at (not the setting: the budget moves it)
        if sampled(every):
            attrs[Attr.SAMPLE_EVERY] = every
        f = d.facts
        if f is not None:
            attrs.update({Attr.RUNNING: f.running, Attr.WAITING: f.waiting, Attr.NUM_REQS: f.num_reqs,
                          Attr.PREFILL_TOKENS: f.prefill_tokens, Attr.DECODE_TOKENS: f.decode_tokens,
                          Attr.PREEMPTIONS: len(f.preempted), Attr.BATCH_RESUMED_TOKENS: f.resumed_tokens,
                          Attr.FINISHED_BEFORE: f.finished_before})
            r.links = self.index.on_step(r.step, r.context, r.start_ns, r.end_ns, f)
        r.attrs = attrs if r.attrs is None else {**r.attrs, **attrs}
        out = []
        if d.schedule_start:       # phases the hooks kept in the step's record: the step's children
            out.append(Range(Span.SCHEDULE, ENGINE, r.trace_id, self.new_span_id(), r.span_id, d.schedule_start,
                             d.schedule_end, None, r.step, nested=True))
        if d.update_start:
            out.append(Range(Span.UPDATE, ENGINE, r.trace_id, self.new_span_id(), r.span_id, d.update_start,
                             d.update_end, {Attr.STEP_BATCH_ID: d.update_batch} if d.update_batch >= 0 else None,
                             r.step, nested=True))
        if d.worker is not None:
            out += self.worker(d.worker)
        for fin in d.finished:
            fields = self.index.finish(fin, r.step, r.context, r.end_ns)
            if fields is None:
                continue
            trace_id, parent_id = fields["parent"] or (self.new_trace_id(), 0)
            req = Range(Span.ENGINE_REQUEST, ENGINE, trace_id, self.new_span_id(), parent_id,
                        fields["start_ns"], fields["end_ns"], fields["attrs"], links=fields["links"])
            req.events = fields["events"]
            out.append(req)
        return out


def for_settings(settings) -> Assembler:
    from vllm_w2ext.telemetry import propagation
    from vllm_w2ext.telemetry.recording import new_span_id, new_trace_id
    return Assembler(propagation.extract, new_span_id, new_trace_id, settings.step_links, settings.max_links)
