"""The bundled OTLP receiver keeps every attribute type the plugin sends (GPU timings are float
arrays) and its JSON-lines dump reads back whole."""
from __future__ import annotations

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from vllm_w2ext.analysis.spans.records import load_jsonl, write_jsonl
from vllm_w2ext.receiver import OTLPReceiver
from vllm_w2ext.telemetry.otlp import to_readable
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.vocab import WORKER


def test_array_attributes_round_trip(tmp_path):
    rx = OTLPReceiver().start()
    try:
        r = Range("worker.execute_model", WORKER, 7, 9, 0, 1_000, 2_000,
                  {"vllm.gpu.forward_s": [0.007, 0.0071], "vllm.gap.cpu_s": 0.004, "ok": True}, 3)
        exp = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{rx.http_port}/v1/traces")
        assert exp.export([to_readable(r)]) == SpanExportResult.SUCCESS
        spans = rx.spans()
        write_jsonl(spans, str(tmp_path / "s.jsonl"))
        back = load_jsonl(str(tmp_path / "s.jsonl"))
        assert len(back) == 1 and back[0].attrs["vllm.gpu.forward_s"] == [0.007, 0.0071]
        assert back[0].attrs["vllm.step.id"] == 3 and back[0].role == "worker"
    finally:
        rx.stop()
