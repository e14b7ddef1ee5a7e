"""Which sinks a process's pipeline feeds, from the settings."""
from __future__ import annotations

import os
import threading
import time

from vllm_w2ext import config
from vllm_w2ext.telemetry import identity, selfcost
from vllm_w2ext.telemetry.ranges import ENGINE, FRONT, WORKER


class MetricsSink:
    """Prometheus metrics of one vLLM process; writes a snapshot for the front end's endpoint.

    ``counters()`` returns the plugin's own cumulative counters for the self-cost metrics:
    (recorded, dropped, errors, export CPU s, hook self-time s, hook errors by hook)."""
    name = "metrics"

    def __init__(self, settings: config.Settings, counters, write_front: bool = False):
        from vllm_w2ext.telemetry.metrics import StepMetrics
        self.metrics = StepMetrics()
        self.counters = counters
        self.write_front = write_front     # in an export process even the front end's metrics go to a file
        self.interval = settings.metrics_interval_ms / 1000.0
        self._next = 0.0
        self._lock = threading.Lock()      # snapshot runs on the export thread and at shutdown

    def consume(self, ranges) -> None:
        self.metrics.consume(ranges)

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval
        self.snapshot()

    def snapshot(self) -> None:
        with self._lock:
            self._snapshot()

    def _snapshot(self) -> None:
        from vllm_w2ext.telemetry.metrics import write_snapshot
        from vllm_w2ext.telemetry.metrics_server import metrics_dir
        roles = identity.roles()
        role = next((r for r in (ENGINE, WORKER, FRONT) if r in roles), None)
        if role is None:
            return
        self.metrics.self_cost(role, *self.counters())
        d = metrics_dir()
        if d and (role != FRONT or self.write_front):
            write_snapshot(d, self.metrics.exposition())

    def flush(self, timeout_s: float) -> None:
        self.snapshot()

    def shutdown(self, timeout_s: float) -> None:
        self.snapshot()


def pipeline_counters(p):
    """Self-cost counters of an in-process pipeline and its sinks (see MetricsSink)."""
    def counters():
        dropped = p.recorder.dropped + sum(getattr(s, "dropped", 0) for s in p.sinks)
        errors = p.sink_errors + p.finalize_errors + sum(getattr(s, "failed_batches", 0) for s in p.sinks)
        return (p.recorder.recorded, dropped, errors, p.export_cpu_s,
                selfcost.hook_self_ns[0] / 1e9, dict(selfcost.hook_errors))
    return counters


_metrics_sink: MetricsSink | None = None


def own_metrics():
    """This process's metrics registry when it aggregates in-process (None with an export process)."""
    return _metrics_sink.metrics if _metrics_sink is not None else None


def delegate_metrics_endpoint(port: int, host: str, directory: str) -> bool:
    """Let this process's export process serve the metrics endpoint (False: there is none)."""
    from vllm_w2ext.telemetry import pipeline
    from vllm_w2ext.telemetry.export_process import ExportProcessSink
    remote = next((s for s in pipeline.get().sinks if isinstance(s, ExportProcessSink)), None)
    return remote is not None and remote.serve_metrics(port, host, directory)


def wants_metrics(settings: config.Settings) -> bool:
    return bool(settings.metrics_port or settings.metrics_dir or os.environ.get("VLLM_W2EXT_METRICS_DIR"))


def exporter_sinks(settings: config.Settings, counters, write_front: bool = False) -> list:
    """The OTLP and metrics sinks, wherever they run (this process or its export process)."""
    out = []
    if settings.otlp_enabled:
        from vllm_w2ext.telemetry.otlp import OtlpSink
        out.append(OtlpSink(delay_ms=settings.export_interval_ms, max_queue=settings.queue_size))
    if wants_metrics(settings):
        out.append(MetricsSink(settings, counters, write_front))
    return out


def build(settings: config.Settings, pipeline) -> list:
    global _metrics_sink
    from vllm_w2ext.telemetry import export_process
    remote = export_process.ExportProcessSink.start(settings, pipeline) if export_process.wanted(settings) else None
    if remote is not None:
        out = [remote]
    else:                              # nothing to export, VLLM_W2EXT_EXPORT_PROCESS=off, or it could not start
        out = exporter_sinks(settings, pipeline_counters(pipeline))
        _metrics_sink = next((s for s in out if isinstance(s, MetricsSink)), None)
    if settings.trace_dir:
        from vllm_w2ext.telemetry.trace_file import TraceFileSink
        out.append(TraceFileSink(settings.trace_dir, settings.trace_max_mb << 20))
    return out
