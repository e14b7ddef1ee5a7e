"""OTLP span export: Range -> ReadableSpan -> BatchSpanProcessor -> OTLP exporter (gRPC or HTTP).

The exporter is configured only through the standard ``OTEL_EXPORTER_OTLP_*`` variables.
Spans are built on the plugin's export thread; the BatchSpanProcessor exports on its own thread
with the SDK's bounded queue, so a slow or dead collector never blocks vLLM.
"""
from __future__ import annotations

import os

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from vllm_w2ext import __version__
from vllm_w2ext.config import SettingsError
from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.ranges import Range

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SCOPE = InstrumentationScope("vllm_w2ext", __version__)
_OK = Status(StatusCode.UNSET)
PROTOCOLS = ("grpc", "http/protobuf")


def protocol() -> tuple[str, str]:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        raw = os.environ.get(name)
        if raw:
            v = raw.strip().lower()
            if v not in PROTOCOLS:
                raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(PROTOCOLS)}")
            return v, name
    return "grpc", "default"


def make_exporter() -> SpanExporter:
    proto, _ = protocol()
    if proto == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def to_readable(r: Range) -> ReadableSpan:
    ctx = SpanContext(r.trace_id, r.span_id, is_remote=False, trace_flags=_SAMPLED)
    parent = (SpanContext(r.trace_id, r.parent_id, is_remote=True, trace_flags=_SAMPLED)
              if r.parent_id else None)
    links = ()
    if r.links:
        links = [Link(SpanContext(t, s, is_remote=True, trace_flags=_SAMPLED)) for t, s in r.links]
    attrs = r.attrs or {}
    if r.step >= 0 and "vllm.step.id" not in attrs:
        attrs["vllm.step.id"] = r.step
    status = _OK if r.error is None else Status(StatusCode.ERROR, r.error)
    kind = SpanKind.SERVER if r.name == "vllm.request" else SpanKind.INTERNAL
    return ReadableSpan(name=r.name, context=ctx, parent=parent, resource=identity.resource(r.role),
                        attributes=attrs, links=links, kind=kind, status=status,
                        start_time=r.start_ns, end_time=r.end_ns, instrumentation_scope=_SCOPE)


class OtlpSink:
    name = "otlp"

    def __init__(self, exporter: SpanExporter | None = None, delay_ms: int = 200):
        # The plugin's own export thread already batches: let the SDK send promptly too, unless the
        # user tuned it with OTEL_BSP_SCHEDULE_DELAY.
        delay = None if os.environ.get("OTEL_BSP_SCHEDULE_DELAY") else delay_ms
        self.processor = BatchSpanProcessor(exporter or make_exporter(), schedule_delay_millis=delay)

    def consume(self, ranges: list[Range]) -> None:
        on_end = self.processor.on_end
        for r in ranges:
            on_end(to_readable(r))

    def flush(self, timeout_s: float) -> None:
        self.processor.force_flush(int(timeout_s * 1000))

    def shutdown(self, timeout_s: float) -> None:
        self.flush(timeout_s)
        self.processor.shutdown()
