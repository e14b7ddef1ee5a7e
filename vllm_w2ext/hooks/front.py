"""Front process hooks: LLM / LLMEngine (offline), AsyncLLM + serving layer (served), OutputProcessor.

One ``vllm.request`` span per request, from ``add_request`` to the request's finish or abort. It
continues an incoming W3C ``traceparent`` (HTTP header, ``trace_headers=`` argument) or the caller's
active OTel span, and its own context is written into the request's ``trace_headers`` so the
EngineCore process can link its step spans to it.
"""
from __future__ import annotations

import contextvars
import time

from vllm_w2ext import config
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.steps.facts import light_steps
from vllm_w2ext.telemetry import identity, propagation
from vllm_w2ext.telemetry.pipeline import RECORDER, recorder
from vllm_w2ext.telemetry.recording import PHASE_MARKS, ROOT, context, span_bits
from vllm_w2ext.telemetry.wire import ATTRS, DATA, END, LINKS, NESTED, ON_THREAD, SPAN_ID, START, TRACE_ID
from vllm_w2ext.vocab import FRONT, Attr, Span

_now = time.time_ns

# Incoming W3C headers and add_request start time of the request being added in this task/thread.
_incoming: contextvars.ContextVar[dict | None] = contextvars.ContextVar("w2ext_incoming", default=None)
_pending: contextvars.ContextVar[list | None] = contextvars.ContextVar("w2ext_pending", default=None)
_open: dict[str, list] = {}           # request id -> open request range
_generate: list[list] = []              # open LLM.generate ranges (offline), innermost last
_identity_done = [False]
_sample = [1]                           # VLLM_W2EXT_SAMPLE (read with the identity)
_light = [(False,)]                     # light_steps(VLLM_W2EXT_SAMPLE): is call n (mod N) only counted
_capture = [False]                      # VLLM_W2EXT_CAPTURE_CONTENT (read with the identity)
_front_steps = [0]                      # LLMEngine.step calls so far
_open_step: list = [None]               # the front.step range being recorded (process_outputs' parent)
_outputs_calls = [0]                    # OutputProcessor.process_outputs calls so far (served sampling)
_outputs_skipped = [0]                  # of them only counted since the last recorded one (VLLM_W2EXT_SAMPLE)
INTO_STEP = -2                          # _process_outputs_pre's state: the phase goes into the open front.step


def use_sample(every: int) -> None:
    """VLLM_W2EXT_SAMPLE's N for the front end's hooks (read with the identity; tests set it here)."""
    _sample[0], _light[0] = every, light_steps(every)


def _ensure_identity() -> None:
    if not _identity_done[0]:
        identity.set_role(FRONT)
        settings = config.current()
        use_sample(settings.sample)
        _capture[0] = settings.capture_content
        _identity_done[0] = True


# -- engine construction: the metrics endpoint of the whole vLLM instance lives in the front end ------
def _engine_init_pre(engine, args, kwargs):
    _ensure_identity()
    _start_metrics_endpoint()
    return None


def _async_llm_init_pre(engine, args, kwargs):
    """``vllm serve --data-parallel-size N`` starts N API servers by default (``AsyncLLM`` with
    ``client_index`` 0..N-1 of ``client_count``): each says which it is (resource
    ``vllm.api_server_index``, its trace file's track, and as ``rank`` where there are several, so
    their metric series differ), and only API server 0 serves the instance's metrics endpoint."""
    index, count = kwargs.get("client_index", 0), kwargs.get("client_count", 1)
    _ensure_identity()
    if "client_index" in kwargs and isinstance(index, int) and isinstance(count, int):
        identity.set_role(FRONT, api_server_index=index, rank=index if count > 1 else None)
    if index == 0:
        _start_metrics_endpoint()
    return None


def _start_metrics_endpoint() -> None:
    if config.current().metrics_port:
        from vllm_w2ext.telemetry import pipeline
        pipeline.get().start_metrics_endpoint()


# -- offline: LLM.generate and LLMEngine.step -------------------------------------------------------
def _generate_pre(llm, args, kwargs):
    _ensure_identity()
    r = (RECORDER[0] or recorder()).begin(Span.GENERATE, FRONT)
    _generate.append(r)
    return r


def _generate_post(r, result, error):
    if _generate and _generate[-1] is r:
        _generate.pop()
    if result is not None:
        r[ATTRS] = {Attr.NUM_OUTPUTS: len(result)}
    (RECORDER[0] or recorder()).end(r, error)


def _front_step_pre(engine, args, kwargs):
    """Offline, one front-end iteration. With VLLM_W2EXT_SAMPLE=N only 2 in every N are recorded (no analysis
    reads them; process_outputs inside follows them, see _process_outputs_pre)."""
    if not _identity_done[0]:
        _ensure_identity()
    _front_steps[0] = n = _front_steps[0] + 1
    if _light[0][n % _sample[0]]:          # steps.facts.sampled_out, a tuple index instead of a call
        return None
    # under the LLM.generate call, if any (the thread's stack would say the same: nothing else nests there),
    # on the thread's track and off its stack unless marked (Recorder.begin)
    if PHASE_MARKS[0]:
        r = _open_step[0] = (RECORDER[0] or recorder()).begin(Span.FRONT_STEP, FRONT,
                                                              context(_generate[-1]) if _generate else ROOT, None,
                                                              -1, ON_THREAD)
        return r
    # no marks: Recorder.begin's list for such a range, written out (wire.open_range's field order)
    if _generate:
        g = _generate[-1]
        r = [Span.FRONT_STEP, FRONT, g[TRACE_ID], span_bits(64) or 1, g[SPAN_ID], _now(), 0, -1, None, None, None,
             ON_THREAD, None]
    else:
        r = [Span.FRONT_STEP, FRONT, span_bits(128) or 1, span_bits(64) or 1, 0, _now(), 0, -1, None, None, None,
             ON_THREAD, None]
    _open_step[0] = r
    return r


def _front_step_post(r, result, error):
    _open_step[0] = None
    rec = RECORDER[0] or recorder()
    if error is None and r[NESTED] is ON_THREAD:       # never on the stack (no marks): Recorder.end's way, written out
        r[END] = _now()
        buf = rec.buf
        if len(buf) < rec.capacity:
            buf.append(r)
        else:
            rec._full()
        return
    rec.end(r, error)


# -- request lifecycle -------------------------------------------------------------------------------
def _add_request_pre(engine, args, kwargs):
    """LLMEngine.add_request / AsyncLLM.add_request: remember when input processing started and
    the W3C headers the caller passed (vLLM drops them when its own tracing is off)."""
    if not _identity_done[0]:
        _ensure_identity()
    headers = kwargs.get("trace_headers")
    pending = [time.time_ns(), (headers and propagation.header_subset(headers)) or _incoming.get(), None]
    return _pending.set(pending), pending


def _add_request_post(state, result, error):
    """Input processing is over: its end goes into the request's range, whose start is its start; the
    export side makes the ``front.add_request`` span of it (``steps.assemble``), so a request costs the
    front end one record, not two."""
    token, pending = state
    _pending.reset(token)
    req: list | None = pending[2]
    if req is None:
        return
    if req[END]:        # served: the request finished (and went out) before add_request returned
        (RECORDER[0] or recorder()).emit(Span.ADD_REQUEST, FRONT, context(req), pending[0], time.time_ns())
    else:
        req[DATA] = time.time_ns()             # steps.assemble: the add_request span's end


def _output_add_request_pre(proc, args, kwargs):
    request = args[0] if args else kwargs["request"]
    rid = request.request_id
    if rid in _open:                     # streaming-input continuation of a known request
        return None
    pending = _pending.get()
    theirs = getattr(request, "trace_headers", None)
    own = propagation.header_subset(theirs) if theirs else {}
    # the parent: the request's own traceparent, the one add_request was given, the HTTP request's, or the
    # caller's active span (each looked at only where there is one: this runs once per request)
    parent = propagation.extract(own) if own else None
    if parent is None and pending is not None and pending[1]:
        parent = propagation.extract(pending[1])
    if parent is None:
        incoming = _incoming.get()
        if incoming:
            parent = propagation.extract(incoming)
        if parent is None:
            parent = propagation.ambient()
    rec = RECORDER[0] or recorder()
    r = rec.begin(Span.REQUEST, FRONT, parent=parent or ROOT, nested=False)
    if pending is not None:
        r[START] = pending[0]
        if pending[2] is None:
            pending[2] = r
    attrs = {Attr.REQUEST_ID: rid}
    params = getattr(request, "sampling_params", None)
    if params is not None:
        attrs[Attr.MAX_TOKENS] = params.max_tokens or 0
    ptoks = getattr(request, "prompt_token_ids", None)
    if ptoks is not None:
        attrs[Attr.PROMPT_TOKENS] = len(ptoks)
    if _generate:
        r[LINKS] = [context(_generate[-1])]
    r[ATTRS] = attrs
    _open[rid] = r
    # Carry our context to EngineCore: the step spans link to this span.
    headers = dict(own)
    headers["traceparent"] = propagation.traceparent(r[TRACE_ID], r[SPAN_ID])
    request.trace_headers = headers
    return None


def _finish_request_pre(proc, args, kwargs):
    req_state = args[0] if args else kwargs["req_state"]
    r = _open.pop(req_state.request_id, None)
    if r is not None:
        detok = getattr(req_state, "detokenizer", None)
        count = getattr(detok, "num_output_tokens", None)      # the detokenizer's count (its output_token_ids
        if count is not None:                                  # property copies the output tokens out)
            r[ATTRS][Attr.COMPLETION_TOKENS] = count()
        else:
            out_ids = getattr(detok, "output_token_ids", None)
            if out_ids is not None:
                r[ATTRS][Attr.COMPLETION_TOKENS] = len(out_ids)
        if _capture[0] and getattr(req_state, "prompt", None):
            r[ATTRS][Attr.PROMPT] = str(req_state.prompt)
        (RECORDER[0] or recorder()).end(r)
    return None


def _abort_post(state, result, error):
    ids = state
    for rid in list(ids) + list(result or ()):
        r = _open.pop(rid, None)
        if r is not None:
            r[ATTRS][Attr.REQUEST_ABORTED] = True
            (RECORDER[0] or recorder()).end(r, error or RequestAborted())


class RequestAborted(Exception):
    """Status of a request span whose request was aborted."""
    pass


def _abort_pre(proc, args, kwargs):
    ids = args[0] if args else kwargs.get("request_ids", ())
    return list(ids) if not isinstance(ids, str) else [ids]


def _process_outputs_pre(proc, args, kwargs):
    """Detokenize and build RequestOutputs: a phase (timestamps, no thread stack), child of the front.step
    being recorded or else of the LLM.generate call (offline), a root (served). explain reads it as front-end
    work, which matters where the engine may run out of work: when a request finishes.

    Fully traced, every call is recorded. With VLLM_W2EXT_SAMPLE=N (and no NVTX or profiler marks), a call is
    recorded when the front.step around it is (offline), or 2 in N by its own count (served: no front.step),
    or when a request finishes in it; the others are only counted, and the count goes on the next recorded
    call (``vllm_w2ext.sample.skipped_calls``).

    Inside a recorded front.step with no marks wanted and no skipped calls to report (offline, fully traced: every
    call but a first), it is no record of its own: its bounds and output count go into the step's range
    (``wire.OutputsPhase``) and the export side makes the same span of them (``steps.assemble``)."""
    outs = args[0] if args else kwargs.get("engine_core_outputs", ())
    step = _open_step[0]
    if step is not None and not PHASE_MARKS[0] and step[DATA] is None and not _outputs_skipped[0]:
        return _now(), len(outs), step, INTO_STEP          # the usual offline call: into the step's range
    parent = step or (_generate[-1] if _generate else None)
    if PHASE_MARKS[0]:
        return (RECORDER[0] or recorder()).phase_begin(Span.PROCESS_OUTPUTS, FRONT, -1), len(outs), parent, -1
    if _sample[0] > 1 and _open_step[0] is None:
        if _front_steps[0]:                   # offline: the front.step around it was only counted
            return _now(), len(outs), parent, len(_open)
        _outputs_calls[0] = n = _outputs_calls[0] + 1
        if _light[0][n % _sample[0]]:
            return _now(), len(outs), parent, len(_open)
    return _now(), len(outs), parent, -1


def _process_outputs_post(state, result, error):
    t0, n, parent, open_before = state
    if open_before is INTO_STEP and error is None:
        parent[DATA] = (t0, _now(), n)                    # wire.OutputsPhase
        return
    if open_before >= 0 and error is None and len(_open) >= open_before:
        _outputs_skipped[0] += 1             # sampled out, and no request finished in it
        return
    attrs = {Attr.NUM_OUTPUTS: n}
    if _outputs_skipped[0]:
        attrs[Attr.SKIPPED_CALLS] = _outputs_skipped[0]
        _outputs_skipped[0] = 0
    (RECORDER[0] or recorder()).phase_end(t0, Span.PROCESS_OUTPUTS, FRONT, parent[TRACE_ID] if parent else 0,
                                          parent[SPAN_ID] if parent else 0, -1, error, attrs)


# -- serving layer: keep the client's traceparent even when vLLM's own tracing is off ------------
def _trace_headers_pre(serving, args, kwargs):
    headers = args[0] if args else kwargs.get("headers")
    sub = propagation.header_subset(headers)
    if sub.get("traceparent"):
        _incoming.set(sub)
    return None


# The common ways in C where the extension was built: the iteration's (four Python calls a step less) and a request's
# start, input processing and finish (four a request); an extension from before them has none of these either.
try:
    from vllm_w2ext.hooks._cfront import (add_request_post, add_request_pre, finish_request_pre, front_bind,
                                         front_setup, front_step_post, front_step_pre, output_add_request_pre,
                                         process_outputs_post, process_outputs_pre, request_setup)
except ImportError:
    front_step_pre, front_step_post = _front_step_pre, _front_step_post
    process_outputs_pre, process_outputs_post = _process_outputs_pre, _process_outputs_post
    request_start_pre = _output_add_request_pre
    add_request_pre, add_request_post = _add_request_pre, _add_request_post
    request_finish_pre = _finish_request_pre
    front_bind = None
else:
    front_setup(_front_step_pre, _front_step_post, _process_outputs_pre, _process_outputs_post,
                Span.FRONT_STEP, FRONT, ON_THREAD, INTO_STEP, TRACE_ID, SPAN_ID, END, NESTED, DATA)
    request_setup(_output_add_request_pre, Span.REQUEST, FRONT, _pending, _incoming, propagation.ambient_var(),
                  Attr.REQUEST_ID, Attr.MAX_TOKENS, Attr.PROMPT_TOKENS, _add_request_pre,
                  _add_request_post, _finish_request_pre, Attr.COMPLETION_TOKENS)
    request_start_pre, request_finish_pre = output_add_request_pre, finish_request_pre


def bind_c() -> None:
    """Hand the C calls this module's state (they hold it, changed in place here, instead of looking it up on every
    call). Once at import; a test that puts its own lists here binds them, and binds the module's back after."""
    if front_bind is not None:
        front_bind((_identity_done, _front_steps, _sample, _light, _generate, _open_step, _outputs_skipped,
                    PHASE_MARKS, RECORDER, span_bits, _open, _capture))


bind_c()


HOOKS: list[Hook] = [
    Hook("front.llm_engine_init", "vllm.v1.engine.llm_engine", "LLMEngine.__init__", _engine_init_pre, None,
         FRONT, "offline: starts the metrics endpoint before EngineCore is spawned"),
    Hook("front.async_llm_init", "vllm.v1.engine.async_llm", "AsyncLLM.__init__", _async_llm_init_pre, None,
         FRONT, "served: which API server; API server 0 starts the metrics endpoint before EngineCore is spawned"),
    Hook("front.llm_generate", "vllm.entrypoints.llm", "LLM.generate", _generate_pre, _generate_post,
         FRONT, "offline batch: parent of the requests it adds (linked)"),
    Hook("front.engine_step", "vllm.v1.engine.llm_engine", "LLMEngine.step", front_step_pre,
         front_step_post, FRONT, "offline: one front-end iteration (get output, process, abort)"),
    Hook("front.llm_engine_add_request", "vllm.v1.engine.llm_engine", "LLMEngine.add_request",
         add_request_pre, add_request_post, FRONT, "offline: input processing of one request"),
    Hook("front.async_add_request", "vllm.v1.engine.async_llm", "AsyncLLM.add_request",
         add_request_pre, add_request_post, FRONT, "served: input processing; keeps trace_headers"),
    Hook("front.request_start", "vllm.v1.engine.output_processor", "OutputProcessor.add_request",
         request_start_pre, None, FRONT, "opens the request span, stamps its traceparent"),
    Hook("front.request_finish", "vllm.v1.engine.output_processor", "OutputProcessor._finish_request",
         request_finish_pre, None, FRONT, "closes the request span"),
    Hook("front.request_abort", "vllm.v1.engine.output_processor", "OutputProcessor.abort_requests",
         _abort_pre, _abort_post, FRONT, "closes aborted request spans"),
    Hook("front.process_outputs", "vllm.v1.engine.output_processor", "OutputProcessor.process_outputs",
         process_outputs_pre, process_outputs_post, FRONT, "output handler: detokenize + build RequestOutputs"),
    Hook("front.http_trace_headers", "vllm.entrypoints.serve.engine.serving",
         "BaseServing._get_trace_headers", _trace_headers_pre, None, FRONT,
         "served (0.32): client traceparent", optional=True),
    Hook("front.http_trace_headers_generate", "vllm.entrypoints.generate.base.serving",
         "GenerateBaseServing._get_trace_headers", _trace_headers_pre, None, FRONT,
         "served (0.26): client traceparent, dropped by vLLM when its tracing is off", optional=True),
    Hook("front.http_trace_headers_pooling", "vllm.entrypoints.pooling.base.serving",
         "PoolingBaseServing._get_trace_headers", _trace_headers_pre, None, FRONT,
         "served pooling (0.26)", optional=True),
]
