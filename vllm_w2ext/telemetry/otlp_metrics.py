"""OTLP metrics: the Prometheus endpoint's instruments, exported with the OpenTelemetry SDK.

``MeterProvider`` + ``PeriodicExportingMetricReader`` + ``OTLPMetricExporter`` (gRPC or HTTP/protobuf),
configured by the standard variables: endpoint, headers, timeout, compression and
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` (cumulative | delta | lowmemory) are read by the
exporter, ``OTEL_METRIC_EXPORT_INTERVAL`` / ``OTEL_METRIC_EXPORT_TIMEOUT`` by the reader. It runs where
the Prometheus aggregation runs (the export process by default) over the same model,
``metrics.StepMetrics`` (``bind``): histograms are recorded observation by observation, counters and
gauges are observable instruments reading the model's values at each collection (an SDK ``add`` costs
~7.5 us of Python; a step makes ~30 observations, half of them counters).

Exemplars: the SDK's trace-based exemplar filter and its default reservoirs (explicit-bucket
histograms: one exemplar per bucket, reset at every collection; sums: one per series). The span of an
observation is handed in as the measurement's context (a non-recording span with the range's ids), and
only for observations ``StepMetrics`` picked (the first in its bucket in the exemplar window).

A collector that is down or slow: the reader exports on its own thread, one export at a time, each
bounded by the exporter's timeout; what fails is counted (``failed_exports``, reported in
``vllm_w2ext_export_errors_total``) and the exporter's log lines go through the span exporter's
once-per-logger filter (``otlp.ONCE``). The SDK keeps one aggregation per series, so memory does not
grow with a collector's trouble; cumulative points are re-sent whole at the next export.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

from opentelemetry.context import Context
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    set_span_in_context,
)

from vllm_w2ext import __version__
from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.instruments import COUNTER, HISTOGRAM, INSTRUMENTS
from vllm_w2ext.telemetry.otel_env import (  # noqa: F401
    check_environment,
    interval_ms,
    metrics_protocol,
    temporality,
)
from vllm_w2ext.telemetry.otlp import ONCE

log = logging.getLogger("vllm_w2ext")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
# Per-role identity keys: they are data-point attributes here (one process may host several roles).
_ROLE_KEYS = ("vllm.process_role", "vllm.engine_index", "vllm.rank", "vllm.local_rank", "vllm.tp_rank")

for _name in ("opentelemetry.exporter.otlp.proto.http.metric_exporter",
              "opentelemetry.sdk.metrics._internal.export"):
    logging.getLogger(_name).addFilter(ONCE)


def make_exporter() -> MetricExporter:
    temporality()                        # the exporter itself would fall back to cumulative silently
    if metrics_protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter,
        )
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )
    return OTLPMetricExporter()


class CountingExporter(MetricExporter):
    """Wraps the OTLP exporter: counts exports and failures (an exception is a failure, never logged
    per export), keeps the wrapped exporter's temporality and aggregation preferences."""

    def __init__(self, inner: MetricExporter):
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self.inner = inner
        self.exports = 0
        self.failed = 0
        self.muted = False       # a forked child's copy: the SDK restarts the reader's thread there

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        if self.muted:           # never send the parent's aggregation again under the parent's resource
            return MetricExportResult.SUCCESS
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as e:           # noqa: BLE001 - an exporter bug must not stop the reader
            if not self.failed:
                log.warning("vllm_w2ext, pid %s: OTLP metrics export raised %r (counted in "
                            "vllm_w2ext_export_errors_total, not logged again)", os.getpid(), e)
            result = MetricExportResult.FAILURE
        self.exports += 1
        if result != MetricExportResult.SUCCESS:
            self.failed += 1
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def resource() -> Resource:
    """The vLLM process's resource (service, pid, versions), without the per-role keys: role, engine
    and rank are data-point attributes, as they are labels on the Prometheus endpoint."""
    base = identity.resource("")
    attrs = {k: v for k, v in base.attributes.items() if k not in _ROLE_KEYS}
    attrs.setdefault("service.instance.id", f"{socket.gethostname()}:{attrs.get('process.pid', os.getpid())}")
    return Resource(attrs, base.schema_url)




def _bounded(fn, timeout_s: float, name: str) -> None:
    """Run ``fn`` on a daemon thread and wait at most ``timeout_s``: a black-holed collector must never
    hold up vLLM's shutdown (the exporter's own timeout may be longer)."""
    t = threading.Thread(target=fn, name=name, daemon=True)
    t.start()
    t.join(max(0.0, timeout_s))


class OtlpMetrics:
    """One MeterProvider per process (export process, or vLLM's with the export process off)."""

    def __init__(self, exporter: MetricExporter | None = None, export_interval_ms: float | None = None,
                 exemplars: bool = True):
        self.exporter = CountingExporter(exporter or make_exporter())
        self.interval_ms = export_interval_ms if export_interval_ms is not None else interval_ms()
        self.reader = PeriodicExportingMetricReader(self.exporter, export_interval_millis=self.interval_ms)
        self.provider = MeterProvider(
            metric_readers=[self.reader], resource=resource(), shutdown_on_exit=False,
            exemplar_filter=TraceBasedExemplarFilter() if exemplars else AlwaysOffExemplarFilter())
        self.meter = self.provider.get_meter("vllm_w2ext", __version__)
        self._closed = False

    def bind(self, model: dict) -> dict:
        """Create the OTel instrument of every ``INSTRUMENTS`` row over ``model`` (key -> an object with
        ``values()``: metrics._Instrument). Histograms are synchronous (the caller records each
        observation: the SDK keeps the buckets, per-export exemplar reservoirs and delta state);
        counters and gauges are observable: the SDK reads the model's cumulative values at collection
        (no per-observation cost; the SDK derives deltas), with the exemplar the model kept for the
        series, if any. Returns key -> the synchronous instrument or None."""
        out = {}
        for spec in INSTRUMENTS:
            kw = {"unit": spec.unit, "description": spec.doc}
            if spec.kind == HISTOGRAM:
                out[spec.key] = self.meter.create_histogram(
                    spec.otel, explicit_bucket_boundaries_advisory=[float(b) for b in spec.buckets], **kw)
                continue
            create = self.meter.create_observable_counter if spec.kind == COUNTER else \
                self.meter.create_observable_gauge
            create(spec.otel, callbacks=[self._callback(model[spec.key])], **kw)
            out[spec.key] = None
        return out

    def _callback(self, inst):
        context_of = self.context_of

        def observe(options):
            return [Observation(v, attrs, None if ids is None else context_of(ids))
                    for attrs, v, ids in inst.values()]
        return observe

    @property
    def interval_s(self) -> float:
        return self.interval_ms / 1000.0

    @property
    def failed_exports(self) -> int:
        return self.exporter.failed

    @staticmethod
    def context_of(ids) -> Context:
        """The measurement context that makes the SDK's exemplar carry this trace and span id."""
        return set_span_in_context(NonRecordingSpan(SpanContext(ids[0], ids[1], is_remote=False,
                                                                trace_flags=_SAMPLED)))

    def flush(self, timeout_s: float) -> None:
        if not self._closed:
            _bounded(lambda: self.provider.force_flush(int(timeout_s * 1000)), timeout_s, "w2ext-otlp-metrics-flush")

    def shutdown(self, timeout_s: float) -> None:
        """A last collection and export, then close; within ``timeout_s`` whatever the collector does."""
        if self._closed:
            return
        self._closed = True
        _bounded(lambda: self.provider.shutdown(int(timeout_s * 1000)), timeout_s, "w2ext-otlp-metrics-shutdown")
