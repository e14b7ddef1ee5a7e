"""telemetry.propagation: W3C trace context in and out of vLLM's trace_headers, and the caller's active span."""
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from vllm_w2ext.telemetry import propagation


def test_traceparent_round_trips_through_extract():
    tid, sid = 2**127 + 3, 2**63 + 5
    header = propagation.traceparent(tid, sid)
    assert header == f"00-{tid:032x}-{sid:016x}-01"
    assert propagation.extract({"traceparent": header}) == (tid, sid)
    assert propagation.extract({"Traceparent": header}) == (tid, sid)           # any case
    assert propagation.extract({"traceparent": "00-bad"}) is None and propagation.extract(None) is None


def test_ambient_is_the_callers_active_span_and_none_without_one():
    assert propagation.ambient() is None
    ctx = SpanContext(trace_id=7, span_id=9, is_remote=False, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(ctx)):
        assert propagation.ambient() == (7, 9)
    assert propagation.ambient() is None
