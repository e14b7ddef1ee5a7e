"""Pipeline pollers: work moved off vLLM's threads (resolving CUDA events) runs on the export thread before
each take, so what it records goes out in the same batch; a poller that raises is dropped with one log
line and the export thread goes on."""
import logging

from vllm_w2ext import config
from vllm_w2ext.telemetry.pipeline import Pipeline
from vllm_w2ext.vocab import WORKER, Span


def test_pollers_run_before_the_take_and_a_faulty_one_is_dropped(caplog):
    p = Pipeline(config.Settings())
    calls = []

    def good(rec):
        calls.append("good")
        rec.emit(Span.DEVICE_SAMPLES, WORKER, None, 0, 0, data=((1, 2, 3e-3, 0.0),))

    def bad(rec):
        calls.append("bad")
        raise RuntimeError("planted")

    p.add_poller(bad)
    p.add_poller(good)
    with caplog.at_level(logging.ERROR, logger="vllm_w2ext"):
        assert p.flush_once() == 1                  # good's record was taken in the same flush
        assert p.flush_once() == 1
    assert calls == ["bad", "good", "good"]
    assert sum("planted" in r.getMessage() for r in caplog.records) == 1
