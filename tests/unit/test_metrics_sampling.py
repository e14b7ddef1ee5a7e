"""The step metrics of a sampled run (VLLM_W2EXT_SAMPLE), with answers planted in the records: the steps and
tokens only counted (carried by the next recorded step) are added to the counters, and an execution whose
idle was not measured (no recorded execution before it) stays out of the device busy / idle counters, so
their ratio is the busy share of what was measured."""
from prometheus_client.parser import text_string_to_metric_families

from vllm_w2ext.telemetry.metrics import StepMetrics
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.vocab import ENGINE, WORKER, Attr, Span


def total(text: str, name: str, **labels) -> float:
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def step(n: int, skipped: int = 0, idle_steps: int = 0, skipped_tokens: int = 0) -> Range:
    a = {Attr.STEP_ID: n, Attr.MODEL_EXECUTED: True, Attr.NUM_REQS: 1, Attr.PREFILL_TOKENS: 0,
         Attr.DECODE_TOKENS: 1, Attr.PREEMPTIONS: 0, Attr.RUNNING: 1, Attr.WAITING: 0, Attr.SAMPLE_EVERY: 16}
    if skipped or idle_steps:
        a.update({Attr.SKIPPED_STEPS: skipped, Attr.SKIPPED_IDLE_STEPS: idle_steps,
                  Attr.SKIPPED_DECODE_TOKENS: skipped_tokens})
    return Range(Span.STEP, ENGINE, 1, 10 + n, 0, n * 1000, n * 1000 + 500, attrs=a, step=n)


def execution(n: int, busy: float, idle: float, unknown: bool = False) -> Range:
    a = {Attr.DEVICE_BUSY: busy, Attr.DEVICE_IDLE: idle, Attr.DEVICE_CLOCK: "cuda_events"}
    if unknown:
        a[Attr.DEVICE_IDLE_UNKNOWN] = True
    return Range(Span.WORKER_EXECUTE, WORKER, 1, 100 + n, 10 + n, n * 1000, n * 1000 + 400, attrs=a, step=n)


def test_counted_steps_and_unmeasured_executions():
    m = StepMetrics(exemplars=False)
    # pairs 1-2 and 17-18 recorded; 3..16 only counted (13 decoding, 1 idle), carried by step 17
    m.consume([step(1), execution(1, 0.002, 0.0, unknown=True), step(2), execution(2, 0.002, 0.006),
               step(17, skipped=13, idle_steps=1, skipped_tokens=13), execution(17, 0.002, 0.0, unknown=True),
               step(18), execution(18, 0.002, 0.006)])
    text = m.exposition().decode()
    assert total(text, "vllm_w2ext_engine_steps_total", executed="true") == 4 + 13
    assert total(text, "vllm_w2ext_engine_steps_total", executed="false") == 1
    assert total(text, "vllm_w2ext_batch_tokens_total", kind="decode") == 4 + 13
    busy = total(text, "vllm_w2ext_device_busy_seconds_total")
    assert busy == 0.004                         # the two measured steps; with the unmeasured ones: 0.008
    gpu_busy, gpu_idle = total(text, "vllm_w2ext_gpu_busy_seconds_total"), total(text, "vllm_w2ext_gpu_idle_seconds_total")
    assert (gpu_busy, gpu_idle) == (0.004, 0.012) and gpu_busy / (gpu_busy + gpu_idle) == 0.25


def test_the_n_gauge_follows_the_last_recorded_step():
    """vllm_w2ext_sample_every: the N on the last recorded step's span (the cost budget moves it), 1 for a step
    recorded without one (full tracing)."""
    m = StepMetrics(exemplars=False)
    full = step(1)
    del full.attrs[Attr.SAMPLE_EVERY]
    m.consume([full])
    assert total(m.exposition().decode(), "vllm_w2ext_sample_every") == 1
    m.consume([step(2), step(17)])
    assert total(m.exposition().decode(), "vllm_w2ext_sample_every") == 16
