"""OTLP metrics: the Prometheus endpoint's instruments, exported with the OpenTelemetry SDK.

``MeterProvider`` + ``PeriodicExportingMetricReader`` + ``OTLPMetricExporter`` (gRPC or HTTP/protobuf),
configured by the standard variables: endpoint, headers, timeout, compression and
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`` (cumulative | delta | lowmemory) are read by the
exporter, ``OTEL_METRIC_EXPORT_INTERVAL`` / ``OTEL_METRIC_EXPORT_TIMEOUT`` by the reader. It runs where
the Prometheus aggregation runs (the export process by default) and reads that model,
``metrics.StepMetrics``, at each collection; nothing is recorded per observation (``bind``):
- counters and gauges are the SDK's observable instruments over the model's values (an SDK ``add``
  costs ~7.5 us of Python);
- histograms: the Python SDK has neither an observable histogram nor a metric producer (1.45), and its
  ``Histogram.record`` costs ~13 us per observation (~130 us per engine step in the export process,
  benchmarks/otlp_metrics_cost.py). So the reader (:class:`_Reader`) adds to each collection the
  histogram points built from the Prometheus children's buckets and sum (:class:`HistogramPoints`), in
  the temporality the exporter asks of histograms (delta: the difference from the previous collection,
  series without observations left out, as the SDK does), with each series' min and max and exemplars.

Exemplars: the trace-based filter's rule (only sampled spans' ids) is ours: ``StepMetrics`` offers an
observation's span only for the first observation in its bucket (counter: series) in the exemplar window.
Counters hand the SDK's reservoir the latest offered per series (the observation's context: a
non-recording span with the range's ids); histograms carry the latest offered per bucket since the
previous collection, as the SDK's bucket-aligned reservoir would.

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
import time

from opentelemetry.context import Context
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    Exemplar,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
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


SCOPE = "vllm_w2ext"


class HistogramPoints:
    """The histogram points of one collection, from the Prometheus model (``metrics._Instrument`` of each
    histogram row). ``delta``: each point is the difference from the previous collection's (its start is
    that collection's time) and a series with no observation since is left out; else cumulative from the
    first collection. Min and max: since the previous collection (delta) or ever (cumulative), from the
    range the model kept (an observation's count and range fall in the same collection: the model's
    ``otel_lock``)."""

    def __init__(self, delta: bool):
        self.delta = delta
        self.instruments: list = []         # metrics._Instrument of each histogram row
        self._start = time.time_ns()
        self._last: dict = {}               # (key, labels) -> (time ns, bucket counts, sum) at the last collection
        self._life: dict = {}               # (key, labels) -> [min, max] ever

    def metrics(self) -> list[Metric]:
        now = time.time_ns()
        out = []
        for inst in self.instruments:
            spec, points = inst.spec, []
            bounds = [float(b) for b in spec.buckets]
            for lab, attrs, counts, total, rng, ex in inst.histogram_points():
                key = (spec.key, lab)
                life = self._life.get(key)
                if rng:
                    life = self._life[key] = [min(life[0], rng[0]), max(life[1], rng[1])] if life else list(rng)
                start = self._start
                if self.delta:
                    prev = self._last.get(key)
                    self._last[key] = (now, counts, total)
                    if prev is not None:
                        start = prev[0]
                        counts = [a - b for a, b in zip(counts, prev[1])]
                        total -= prev[2]
                else:
                    rng = life
                if not any(counts):         # delta: nothing new; cumulative: the first observation is still
                    continue                # on its way (observe makes the Prometheus child before otel_lock)
                points.append(HistogramDataPoint(
                    attributes=attrs, start_time_unix_nano=start, time_unix_nano=now, count=sum(counts), sum=total,
                    bucket_counts=counts, explicit_bounds=bounds, min=rng[0] if rng else None,
                    max=rng[1] if rng else None,
                    exemplars=[Exemplar({}, v, t, span_id=ids[1], trace_id=ids[0])
                               for _, (v, t, ids) in sorted(ex.items())] if ex else []))
            if points:
                temporality = AggregationTemporality.DELTA if self.delta else AggregationTemporality.CUMULATIVE
                out.append(Metric(spec.otel, spec.doc, spec.unit, Histogram(points, temporality)))
        return out

    def add_to(self, data: MetricsData, resource: Resource) -> MetricsData:
        """``data`` (the SDK's collection) with this collection's histograms in the plugin's scope."""
        hist = self.metrics()
        if not hist:
            return data
        scope = InstrumentationScope(SCOPE, __version__)
        rms = list(data.resource_metrics) or [ResourceMetrics(resource, [], resource.schema_url)]
        rm = rms[0]
        sms = list(rm.scope_metrics)
        at = next((i for i, sm in enumerate(sms) if sm.scope.name == SCOPE), None)
        if at is None:
            sms.append(ScopeMetrics(scope, hist, ""))
        else:
            sms[at] = ScopeMetrics(sms[at].scope, [*sms[at].metrics, *hist], sms[at].schema_url)
        rms[0] = ResourceMetrics(rm.resource, sms, rm.schema_url)
        return MetricsData(rms)


class _Reader(PeriodicExportingMetricReader):
    """The SDK's periodic reader (its thread, interval, timeouts, flush and shutdown), each collection
    completed with the histogram points before it goes to the exporter."""

    def __init__(self, exporter: MetricExporter, export_interval_millis: float, histograms: HistogramPoints,
                 resource: Resource):
        super().__init__(exporter, export_interval_millis=export_interval_millis)
        self.histograms = histograms
        self.resource = resource
        self._failed = False

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> None:
        try:
            metrics_data = self.histograms.add_to(metrics_data, self.resource)
        except Exception as e:          # noqa: BLE001 - the other instruments still go out
            if not self._failed:
                self._failed = True
                log.warning("vllm_w2ext, pid %s: OTLP histogram points could not be built: %r (not logged "
                            "again)", os.getpid(), e)
        super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)


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
        delta = (self.exporter._preferred_temporality or {}).get(SdkHistogram) == AggregationTemporality.DELTA
        self.histograms = HistogramPoints(delta)
        res = resource()
        self.reader = _Reader(self.exporter, self.interval_ms, self.histograms, res)
        self.provider = MeterProvider(
            metric_readers=[self.reader], resource=res, shutdown_on_exit=False,
            exemplar_filter=TraceBasedExemplarFilter() if exemplars else AlwaysOffExemplarFilter())
        self.meter = self.provider.get_meter(SCOPE, __version__)
        self._closed = False

    def bind(self, model: dict) -> None:
        """OTLP instruments over ``model`` (key -> ``metrics._Instrument``), one per ``INSTRUMENTS`` row:
        counters and gauges are observable (the SDK reads the model's cumulative values at collection and
        derives deltas itself, with the exemplar the model kept for the series, if any); histograms are
        read by ``HistogramPoints`` at each collection."""
        for spec in INSTRUMENTS:
            if spec.kind == HISTOGRAM:
                self.histograms.instruments.append(model[spec.key])
                continue
            create = self.meter.create_observable_counter if spec.kind == COUNTER else \
                self.meter.create_observable_gauge
            create(spec.otel, callbacks=[self._callback(model[spec.key])], unit=spec.unit, description=spec.doc)

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
