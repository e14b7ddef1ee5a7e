"""W3C trace context in and out of vLLM's ``trace_headers`` dicts."""
from __future__ import annotations

from contextvars import ContextVar
from typing import Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()


def extract(headers: Mapping[str, str] | None) -> tuple[int, int] | None:
    """(trace_id, span_id) of a ``traceparent`` header, or None if absent/invalid."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()} if "traceparent" not in headers else headers
    if "traceparent" not in lower:
        return None
    sc = trace.get_current_span(_propagator.extract(lower)).get_span_context()
    return (sc.trace_id, sc.span_id) if sc.is_valid else None


def ambient() -> tuple[int, int] | None:
    """The caller's active OpenTelemetry span, if any (offline users wrapping LLM.generate)."""
    ctx = otel_context.get_current()
    if not ctx:                         # nothing set in this context (the usual case): no span to look up
        return None
    sc = trace.get_current_span(ctx).get_span_context()
    return (sc.trace_id, sc.span_id) if sc.is_valid else None


def ambient_var():
    """The context variable that holds OpenTelemetry's current context (what ``ambient`` reads first), where the
    runtime context is OTel's contextvars one (its default); None otherwise. The front end's request hook in C reads
    it directly: an empty context, no ambient span."""
    var = getattr(getattr(otel_context, "_RUNTIME_CONTEXT", None), "_current_context", None)
    return var if isinstance(var, ContextVar) else None


def traceparent(trace_id: int, span_id: int) -> str:
    return "00-%032x-%016x-01" % (trace_id, span_id)        # %-format is the quicker one (the request hook's C way
                                                             # writes the same: _cfront.traceparent, held equal)


def header_subset(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Only the W3C headers (never arbitrary client headers)."""
    if not headers:
        return {}
    return {k.lower(): v for k, v in headers.items() if k.lower() in ("traceparent", "tracestate")}
