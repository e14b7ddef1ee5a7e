"""OTLP span export: Range -> ReadableSpan -> bounded queue -> OTLP exporter (gRPC or HTTP).

The exporter is configured only through the standard ``OTEL_EXPORTER_OTLP_*`` variables.
Spans are built on the plugin's export thread and sent by a sender thread, so a slow or dead
collector never blocks vLLM; what cannot be sent is dropped and counted.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from vllm_w2ext import __version__
from vllm_w2ext.config import SettingsError
from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.telemetry.sink import Sink
from vllm_w2ext.vocab import SERVER_SPANS, Attr

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
    if r.step >= 0 and Attr.STEP_ID not in attrs:
        attrs[Attr.STEP_ID] = r.step
    status = _OK if r.error is None else Status(StatusCode.ERROR, r.error)
    kind = SpanKind.SERVER if r.name in SERVER_SPANS else SpanKind.INTERNAL
    events = [Event(name, attributes or {}, timestamp=t) for name, t, attributes in r.events] if r.events else ()
    return ReadableSpan(name=r.name, context=ctx, parent=parent, resource=identity.resource(r.role),
                        attributes=attrs, links=links, kind=kind, status=status, events=events,
                        start_time=r.start_ns, end_time=r.end_ns, instrumentation_scope=_SCOPE)


class _OnceFilter(logging.Filter):
    """Let the first warning of an exporter logger through, then count instead of logging: a dead
    collector must cost one log line, not one per batch or per retry."""

    def __init__(self) -> None:
        super().__init__()
        self.suppressed = 0
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if record.name in self._seen:
            self.suppressed += 1
            return False
        self._seen.add(record.name)
        record.msg = f"{record.msg} (vllm_w2ext, pid {os.getpid()}: further messages of this exporter are suppressed; " \
                     "see vllm_w2ext_export_errors_total / vllm_w2ext_spans_dropped_total)"
        return True


_EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp.proto.grpc.exporter",
                     "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                     "opentelemetry.exporter.otlp.proto.http._log_exporter")
ONCE = _OnceFilter()
for _name in _EXPORTER_LOGGERS:
    logging.getLogger(_name).addFilter(ONCE)


BATCH_SIZE = 128     # spans per export RPC; small: encoding holds the GIL vLLM's threads need


class OtlpSink(Sink):
    """Bounded queue of finished spans + one sender thread calling the OTLP exporter.

    Hand-written instead of the SDK's BatchSpanProcessor because that one (1.45) ignores the timeout
    of ``force_flush`` (a black-holed collector would hang vLLM's shutdown) and logs one warning per
    span dropped on a full queue; here flush and shutdown are bounded, drops and failed exports are
    counted for the metrics, and the exporter's own retries and timeouts are kept."""
    name = "otlp"

    def __init__(self, exporter: SpanExporter | None = None, delay_ms: int = 200, max_queue: int = 65536,
                 batch_size: int = BATCH_SIZE):
        self.exporter = exporter or make_exporter()
        self.delay_s = delay_ms / 1000.0
        self.max_queue, self.batch_size = max_queue, batch_size
        self.queue: deque[ReadableSpan] = deque()
        self.dropped = 0          # spans lost: queue full or export failed
        self.failed_batches = 0
        self._in_flight = 0
        self._stop = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="w2ext-otlp", daemon=True)
        self._thread.start()

    def consume(self, ranges: list[Range]) -> None:
        spans = [to_readable(r) for r in ranges]
        with self._cv:
            room = self.max_queue - len(self.queue)
            if room < len(spans):
                if not self.dropped:
                    logging.getLogger("vllm_w2ext").warning(
                        "vllm_w2ext, pid %s: the OTLP collector is slower than vLLM makes spans; the span "
                        "queue (VLLM_W2EXT_QUEUE_SIZE=%s) is full and spans are dropped from now on "
                        "(counted in vllm_w2ext_spans_dropped_total, not logged again)", os.getpid(), self.max_queue)
                self.dropped += len(spans) - max(room, 0)
                spans = spans[:max(room, 0)]
            self.queue.extend(spans)
            if len(self.queue) >= self.batch_size:
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self.queue and not self._stop:
                    self._cv.wait(self.delay_s)
                if self._stop and not self.queue:
                    return
                batch = [self.queue.popleft() for _ in range(min(self.batch_size, len(self.queue)))]
                self._in_flight = len(batch)
            if batch:
                try:
                    ok = self.exporter.export(batch) == SpanExportResult.SUCCESS
                except Exception:     # the exporter raising must not kill the sender
                    ok = False
                with self._cv:
                    if not ok:
                        self.dropped += len(batch)       # before the failure: counters() reads it after
                        self.failed_batches += 1
                    self._in_flight = 0
                    self._cv.notify_all()

    def flush(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cv:
            self._cv.notify()
            while (self.queue or self._in_flight) and time.monotonic() < deadline:
                self._cv.wait(min(0.05, max(0.0, deadline - time.monotonic())))

    def shutdown(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        with self._cv:
            self._stop = True
            self.dropped += len(self.queue)      # what did not make it in time
            self.queue.clear()
            self._cv.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        # the exporter's shutdown may wait on a dead connection: never let it hold up the exit
        t = threading.Thread(target=self.exporter.shutdown, name="w2ext-otlp-shutdown", daemon=True)
        t.start()
        t.join(max(0.0, deadline - time.monotonic()))
