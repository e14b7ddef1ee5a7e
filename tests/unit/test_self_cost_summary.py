"""The plugin's cost read back from its own metrics (``analysis.metrics.scrapes.self_cost``), as the demo's report and
the lab's summaries give it: totals over every role, per executed engine step, and the EngineCore export thread's
GIL hold per flush as quantiles of its histogram, not of another role's. Planted: a scrape of 200 steps with known
counters, and flushes of 1 ms (EngineCore) beside 40 ms ones (front end)."""
from vllm_w2ext.analysis.metrics.scrapes import samples, self_cost, total
from vllm_w2ext.analysis.metrics.report import self_cost_text

BUCKETS = (5e-4, 1e-3, 2.5e-3, 5e-2)


def _histogram(role: str, values: list[float]) -> str:
    name = "vllm_w2ext_export_thread_gil_hold_per_flush_seconds"
    lines = [f'{name}_bucket{{role="{role}",le="{le}"}} {sum(v <= le for v in values)}' for le in BUCKETS]
    lines += [f'{name}_bucket{{role="{role}",le="+Inf"}} {len(values)}', f'{name}_count{{role="{role}"}} {len(values)}',
              f'{name}_sum{{role="{role}"}} {sum(values)}']
    return "\n".join(lines)


SCRAPE = "\n".join([
    "# TYPE vllm_w2ext_engine_steps_total counter",
    'vllm_w2ext_engine_steps_total{role="engine_core",executed="true"} 200',
    'vllm_w2ext_engine_steps_total{role="engine_core",executed="false"} 50',
    "# TYPE vllm_w2ext_hook_self_seconds_total counter",
    'vllm_w2ext_hook_self_seconds_total{role="engine_core"} 0.004',
    'vllm_w2ext_hook_self_seconds_total{role="frontend"} 0.002',
    "# TYPE vllm_w2ext_hook_direct_seconds_total counter",
    'vllm_w2ext_hook_direct_seconds_total{role="engine_core"} 0.0016',
    'vllm_w2ext_hook_direct_seconds_total{role="frontend"} 0.0006',
    "# TYPE vllm_w2ext_export_thread_cpu_seconds_total counter",
    'vllm_w2ext_export_thread_cpu_seconds_total{role="engine_core"} 0.001',
    "# TYPE vllm_w2ext_export_thread_gil_hold_seconds_total counter",
    'vllm_w2ext_export_thread_gil_hold_seconds_total{role="engine_core"} 0.0008',
    "# TYPE vllm_w2ext_spans_recorded_total counter",
    'vllm_w2ext_spans_recorded_total{role="engine_core"} 400',
    "# TYPE vllm_w2ext_export_thread_gil_hold_per_flush_seconds histogram",
    _histogram("engine_core", [0.0009] * 100),
    _histogram("frontend", [0.04] * 100),
    "# EOF", ""])


def test_per_step_figures_and_the_engine_cores_flushes():
    ss = samples(SCRAPE)
    c = self_cost(lambda name, **lab: total(ss, name, **lab), total(ss, "vllm_w2ext_engine_steps_total",
                                                                    executed="true"), ss)
    assert c["us_per_step"] == {"hooks": 30.0, "hooks_direct": 11.0, "export_thread_cpu": 5.0,
                                "export_thread_gil_hold": 4.0}
    assert c["spans_recorded"] == 400 and c["spans_dropped"] == 0
    flush = c["engine_core_gil_hold_per_flush_ms"]
    assert flush["flushes"] == 100 and 0.5 < flush["p50"] <= 1.0 and 0.5 < flush["p99"] <= 1.0   # not the 40 ms
    text = self_cost_text(c)
    assert "11.0 µs per executed engine step in the calls" in text and "(30.0 by the sampled counter" in text
    assert "4.0 µs" in text and "100 flushes" in text
    sampled_only = dict(c, us_per_step=dict(c["us_per_step"], hooks_direct=0.0))     # no C front took a call
    assert "30.0 µs per executed engine step (sampled)" in self_cost_text(sampled_only)
    # a scrape from before the histogram, and no steps: totals only, and the text says no more than it knows
    bare = self_cost(lambda name, **lab: 0.0, 0, [])
    assert "us_per_step" not in bare and "engine_core_gil_hold_per_flush_ms" not in bare
    assert self_cost_text(bare).endswith("0 spans recorded, 0 dropped, 0 hook faults.")
