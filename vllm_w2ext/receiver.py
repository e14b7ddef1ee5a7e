"""A small OTLP receiver for traces and metrics (gRPC + HTTP/protobuf) on 127.0.0.1, built on the
official protos.

For machines without Jaeger/Tempo/an OTel Collector (CI, the H100 box): ``python -m vllm_w2ext.receiver
OUT.jsonl [METRICS.jsonl]`` prints its ports as JSON, keeps spans and metric points in memory and writes
them as JSON lines on SIGTERM or Ctrl-C. The tests use :class:`OTLPReceiver` directly. It accepts what
the real OTLP exporters send (gRPC ``TraceService/Export`` and ``MetricsService/Export``,
``POST /v1/traces`` and ``POST /v1/metrics`` with optional gzip)."""
from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as mpb_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as pb_grpc

from vllm_w2ext.analysis.spans.records import SpanRecord, write_jsonl


def _value(v):
    """An OTLP AnyValue as plain JSON-able Python (arrays and maps included)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


# OTLP AggregationTemporality values
TEMPORALITY = {0: "unspecified", 1: "delta", 2: "cumulative"}


def _attrs(kvs) -> dict:
    return {a.key: _value(a.value) for a in kvs}


def _exemplar(e) -> dict:
    return {"trace_id": e.trace_id.hex(), "span_id": e.span_id.hex(), "time_unix_nano": e.time_unix_nano,
            "value": e.as_double if e.WhichOneof("value") == "as_double" else e.as_int,
            "attributes": _attrs(e.filtered_attributes)}


def metric_points(transport: str, req: "mpb.ExportMetricsServiceRequest") -> list[dict]:
    """One export request as flat, JSON-able records: one per data point, with the metric's name, unit,
    kind (sum / gauge / histogram / ...), temporality and monotonicity, the resource, the point's
    attributes, value (or count, sum, bounds, bucket counts) and exemplars."""
    out = []
    for rm in req.resource_metrics:
        res = _attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                data = getattr(m, kind)
                base = {"transport": transport, "resource": res, "scope": sm.scope.name, "name": m.name,
                        "unit": m.unit, "kind": kind,
                        "temporality": TEMPORALITY.get(getattr(data, "aggregation_temporality", 0), "unspecified"),
                        "monotonic": bool(getattr(data, "is_monotonic", False))}
                for p in data.data_points:
                    rec = dict(base, attributes=_attrs(p.attributes), start_time_unix_nano=p.start_time_unix_nano,
                               time_unix_nano=p.time_unix_nano, exemplars=[_exemplar(e) for e in p.exemplars])
                    if kind == "histogram":
                        rec.update(count=p.count, sum=p.sum, bounds=list(p.explicit_bounds),
                                   bucket_counts=list(p.bucket_counts),
                                   min=p.min if p.HasField("min") else None, max=p.max if p.HasField("max") else None)
                    elif kind in ("sum", "gauge"):
                        rec["value"] = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                    out.append(rec)
    return out


class OTLPReceiver:
    """``delay_s``: answer every export only after that many seconds (a slow collector)."""

    def __init__(self, delay_s: float = 0.0):
        self.requests: list[tuple[str, pb.ExportTraceServiceRequest]] = []
        self.metric_requests: list[tuple[str, mpb.ExportMetricsServiceRequest]] = []
        self.lock = threading.Lock()
        self.delay_s = delay_s

    def _add(self, transport, req):
        if self.delay_s:
            time.sleep(self.delay_s)
        with self.lock:
            self.requests.append((transport, req))

    def _add_metrics(self, transport, req):
        if self.delay_s:
            time.sleep(self.delay_s)
        with self.lock:
            self.metric_requests.append((transport, req))

    def metrics(self) -> list[dict]:
        """Every metric data point received so far (``metric_points`` records), in arrival order."""
        with self.lock:
            reqs = list(self.metric_requests)
        return [p for transport, r in reqs for p in metric_points(transport, r)]

    def wait_for_metrics(self, pred, timeout=30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            points = self.metrics()
            if pred(points):
                return points
            time.sleep(0.2)
        return self.metrics()

    def spans(self) -> list[SpanRecord]:
        with self.lock:
            reqs = list(self.requests)
        out = []
        for transport, r in reqs:
            for rs in r.resource_spans:
                res = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(SpanRecord(
                            s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                            s.start_time_unix_nano, s.end_time_unix_nano,
                            {a.key: _value(a.value) for a in s.attributes}, res,
                            [(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                            s.status.code, transport))
        return out

    def clear(self):
        with self.lock:
            self.requests.clear()
            self.metric_requests.clear()

    def wait_for(self, pred, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if pred(spans):
                return spans
            time.sleep(0.2)
        return self.spans()

    def start(self, host="127.0.0.1"):
        rx = self

        class Svc(pb_grpc.TraceServiceServicer):
            def Export(self, request, context):
                rx._add("grpc", request)
                return pb.ExportTraceServiceResponse()

        class MetricsSvc(mpb_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                rx._add_metrics("grpc", request)
                return mpb.ExportMetricsServiceResponse()

        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_TraceServiceServicer_to_server(Svc(), self.grpc_server)
        mpb_grpc.add_MetricsServiceServicer_to_server(MetricsSvc(), self.grpc_server)
        self.grpc_port = self.grpc_server.add_insecure_port(f"{host}:0")
        self.grpc_server.start()

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path not in ("/v1/traces", "/v1/metrics") \
                        or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                if self.path == "/v1/traces":
                    rx._add("http", pb.ExportTraceServiceRequest.FromString(body))
                    out = pb.ExportTraceServiceResponse().SerializeToString()
                else:
                    rx._add_metrics("http", mpb.ExportMetricsServiceRequest.FromString(body))
                    out = mpb.ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                try:
                    self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):   # the exporter gave up waiting (slow mode)
                    pass

        self.http_server = ThreadingHTTPServer((host, 0), H)
        self.http_port = self.http_server.server_address[1]
        threading.Thread(target=self.http_server.serve_forever, daemon=True).start()
        return self

    def env(self, protocol: str) -> dict[str, str]:
        """OTEL_* variables that point the plugin's exporters at this receiver."""
        if protocol == "grpc":
            return {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{self.grpc_port}",
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
                    "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true"}
        return {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{self.http_port}/v1/traces",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}

    def metrics_env(self, protocol: str, temporality: str = "cumulative", interval_ms: int = 1000) -> dict[str, str]:
        """OTEL_* variables that point the plugin's OTLP metrics at this receiver."""
        env = {"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": temporality,
               "OTEL_METRIC_EXPORT_INTERVAL": str(interval_ms)}
        if protocol == "grpc":
            env.update(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"http://127.0.0.1:{self.grpc_port}",
                       OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_METRICS_INSECURE="true")
        else:
            env.update(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"http://127.0.0.1:{self.http_port}/v1/metrics",
                       OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="http/protobuf")
        return env

    def stop(self):
        self.grpc_server.stop(grace=None)
        self.http_server.shutdown()
        self.http_server.server_close()


def main() -> None:
    """Standalone receiver for benchmark runs: prints ports, dumps span counts as JSON on SIGTERM."""
    import json
    import signal
    import sys
    rx = OTLPReceiver().start()
    print(json.dumps({"grpc_port": rx.grpc_port, "http_port": rx.http_port}), flush=True)
    out = sys.argv[1] if len(sys.argv) > 1 else None
    metrics_out = sys.argv[2] if len(sys.argv) > 2 else None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    if out:
        write_jsonl(rx.spans(), out)
    if metrics_out:
        with open(metrics_out, "w") as f:
            for p in rx.metrics():
                f.write(json.dumps(p) + "\n")
    rx.stop()


if __name__ == "__main__":
    main()
