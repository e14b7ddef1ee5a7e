"""A small OTLP trace receiver (gRPC + HTTP/protobuf) on 127.0.0.1, built on the official protos.

For machines without Jaeger/Tempo/an OTel Collector (CI, the H100 box): ``python -m vllm_w2ext.receiver
OUT.jsonl`` prints its ports as JSON, keeps spans in memory and writes them as JSON lines on SIGTERM
or Ctrl-C. The tests use :class:`OTLPReceiver` directly. It accepts what the real OTLP exporters send
(gRPC ``TraceService/Export``, ``POST /v1/traces`` with optional gzip)."""
from __future__ import annotations

import gzip
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
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


class OTLPReceiver:
    """``delay_s``: answer every export only after that many seconds (a slow collector)."""

    def __init__(self, delay_s: float = 0.0):
        self.requests: list[tuple[str, pb.ExportTraceServiceRequest]] = []
        self.lock = threading.Lock()
        self.delay_s = delay_s

    def _add(self, transport, req):
        if self.delay_s:
            time.sleep(self.delay_s)
        with self.lock:
            self.requests.append((transport, req))

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

        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_TraceServiceServicer_to_server(Svc(), self.grpc_server)
        self.grpc_port = self.grpc_server.add_insecure_port(f"{host}:0")
        self.grpc_server.start()

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                rx._add("http", pb.ExportTraceServiceRequest.FromString(body))
                out = pb.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

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
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    if out:
        write_jsonl(rx.spans(), out)
    rx.stop()


if __name__ == "__main__":
    main()
