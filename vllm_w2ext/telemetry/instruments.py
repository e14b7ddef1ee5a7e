"""Every metric instrument of the plugin, defined once: its Prometheus name, its OpenTelemetry name,
unit, labels, buckets and whether it carries exemplars. ``metrics.py`` builds the Prometheus registry
from this table and ``otlp_metrics.py`` the OpenTelemetry instruments, so the two cannot drift, and
METRICS.md's name table is generated from it (``markdown_table``).

Names. No OpenTelemetry semantic convention covers what these instruments measure (checked against
semconv's metric registry: ``gen_ai.server.*`` are whole-request latencies, TTFT and TPOT, not engine
phases; ``process.cpu.time`` describes the resource's process, which here is the vLLM process, not its
export process; ``hw.gpu.utilization`` is a hardware counter, not the gap between two forwards). So the
OpenTelemetry names follow semconv's naming rules (a namespace, ``vllm_w2ext``, dot-separated
lowercase components, UCUM units: ``s``, ``1``, ``{step}``) and are chosen so that OpenTelemetry's
Prometheus compatibility translation (dots to underscores, the unit as a suffix, ``_total`` on
monotonic sums, ``_ratio`` on unit-1 gauges, ``{...}`` annotations dropped) gives exactly this
endpoint's Prometheus name. Attribute keys are the Prometheus label names for the same reason: series
that travel OTLP -> Collector or Prometheus's OTLP receiver land under the names the dashboard reads.

Nothing here imports prometheus_client or OpenTelemetry (the unit tests and the docs read it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from vllm_w2ext.telemetry.wire import HOLDS_KEPT

# Sub-millisecond to multi-second steps.
TIME_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Every instrument: which process (part) it describes. engine = the DP rank (one EngineCore each); rank,
# tp_rank, pp_rank: a worker's global and parallel-group ranks ("na" where the role has none).
LABELS = ("role", "engine", "rank", "tp_rank", "pp_rank")

COUNTER, HISTOGRAM, GAUGE = "counter", "histogram", "gauge"
# Exemplar labels on the Prometheus endpoint (Grafana's exemplarTraceIdDestinations name the first).
EXEMPLAR_TRACE_ID, EXEMPLAR_SPAN_ID = "trace_id", "span_id"
# When an instrument has data (the others have it in every run that does any work).
CUDA, PREEMPTION = "CUDA only", "on a preemption"


@dataclass(frozen=True)
class Instrument:
    key: str                 # attribute of StepMetrics
    kind: str                # counter | histogram | gauge
    prom: str                # Prometheus family name (a counter's samples add _total)
    otel: str                # OpenTelemetry instrument name
    unit: str                # UCUM (OpenTelemetry)
    doc: str
    labels: tuple[str, ...] = ()       # beyond LABELS
    buckets: tuple | None = None       # histograms
    exemplars: bool = False            # observations carry the trace_id/span_id of their step or request
    when: str = ""                     # "" or CUDA / PREEMPTION

    @property
    def all_labels(self) -> tuple[str, ...]:
        return LABELS + self.labels

    @property
    def prom_samples(self) -> str:
        """The name on the exposition's sample lines (a counter's ``_total``)."""
        return self.prom + "_total" if self.kind == COUNTER else self.prom


def _i(*a, **kw) -> Instrument:
    return Instrument(*a, **kw)


S = "s"
INSTRUMENTS: tuple[Instrument, ...] = (
    # -- phases and steps ---------------------------------------------------------------------
    _i("phase", HISTOGRAM, "vllm_w2ext_phase_duration_seconds", "vllm_w2ext.phase.duration", S,
       "Wall time of one engine/worker/front phase", ("phase",), TIME_BUCKETS, True),
    _i("steps", COUNTER, "vllm_w2ext_engine_steps", "vllm_w2ext.engine.steps", "{step}", "Engine steps",
       ("executed",)),
    # -- batch composition and scheduler queues -----------------------------------------------------
    _i("tokens", COUNTER, "vllm_w2ext_batch_tokens", "vllm_w2ext.batch.tokens", "{token}",
       "Tokens scheduled, by kind", ("kind",)),
    _i("batch", HISTOGRAM, "vllm_w2ext_batch_requests", "vllm_w2ext.batch.requests", "{request}",
       "Requests per engine step", (), BATCH_BUCKETS, True),
    _i("running", GAUGE, "vllm_w2ext_scheduler_running_requests", "vllm_w2ext.scheduler.running_requests",
       "{request}", "Running requests after scheduling"),
    _i("waiting", GAUGE, "vllm_w2ext_scheduler_waiting_requests", "vllm_w2ext.scheduler.waiting_requests",
       "{request}", "Waiting requests after scheduling"),
    _i("preempt", COUNTER, "vllm_w2ext_preemptions", "vllm_w2ext.preemptions", "{preemption}",
       "Preempted requests"),
    _i("sample_every", GAUGE, "vllm_w2ext_sample_every", "vllm_w2ext.sample.every", "{step}",
       "N of VLLM_W2EXT_SAMPLE at the last recorded engine step: two steps in every N recorded in full (1: every "
       "step; VLLM_W2EXT_COST_BUDGET moves it)"),
    # -- the worker's CPU timeline ------------------------------------------------------------------
    _i("gap", HISTOGRAM, "vllm_w2ext_scheduler_gap_seconds", "vllm_w2ext.scheduler.gap", S,
       "CPU wall time between the end of one model execution and the start of the next", (), TIME_BUCKETS,
       True),
    _i("gap_part", COUNTER, "vllm_w2ext_scheduler_gap_part_seconds", "vllm_w2ext.scheduler.gap_part", S,
       "Where the scheduler gap went", ("part",)),
    _i("exec_time", COUNTER, "vllm_w2ext_model_execution_seconds", "vllm_w2ext.model_execution", S,
       "CPU wall time in model execution (worker execute + sample)"),
    # -- the GPU (CUDA events) ----------------------------------------------------------------------
    _i("gpu_fwd", HISTOGRAM, "vllm_w2ext_gpu_forward_seconds", "vllm_w2ext.gpu.forward", S,
       "GPU time of one step (CUDA events)", (), TIME_BUCKETS, True, CUDA),
    _i("gpu_gap", HISTOGRAM, "vllm_w2ext_gpu_gap_seconds", "vllm_w2ext.gpu.gap", S,
       "GPU idle between consecutive forwards (CUDA events)", (), TIME_BUCKETS, True, CUDA),
    _i("gpu_busy", COUNTER, "vllm_w2ext_gpu_busy_seconds", "vllm_w2ext.gpu.busy", S, "GPU time inside steps",
       when=CUDA),
    _i("gpu_idle", COUNTER, "vllm_w2ext_gpu_idle_seconds", "vllm_w2ext.gpu.idle", S,
       "GPU idle time between steps", when=CUDA),
    _i("gpu_ratio", GAUGE, "vllm_w2ext_gpu_busy_ratio", "vllm_w2ext.gpu.busy_ratio", "1",
       "GPU busy fraction over the last 10 s", when=CUDA),
    # -- the device timeline (GPU: CUDA events; CPU build: the forwards) ------------------------------
    _i("device_busy", COUNTER, "vllm_w2ext_device_busy_seconds", "vllm_w2ext.device.busy", S,
       "Device time inside forwards with a measured idle before them (GPU: CUDA events; CPU build: the "
       "forward); forwards after unrecorded steps are left out, as their idle is"),
    _i("device_idle", COUNTER, "vllm_w2ext_device_idle_seconds", "vllm_w2ext.device.idle", S,
       "Device idle between two forwards, by cause (what the critical path was doing)", ("cause",),
       exemplars=True),
    _i("device_idle_h", HISTOGRAM, "vllm_w2ext_device_idle_per_step_seconds", "vllm_w2ext.device.idle_per_step",
       S, "Device idle before one forward", (), TIME_BUCKETS, True),
    # -- requests -------------------------------------------------------------------------------------
    _i("req_phase", HISTOGRAM, "vllm_w2ext_request_phase_seconds", "vllm_w2ext.request.phase", S,
       "Each request's time per phase: queue (arrival -> first scheduled), prefill (-> first token), "
       "decode (-> finished)", ("phase",), TIME_BUCKETS, True),
    _i("req_preempt", COUNTER, "vllm_w2ext_request_preemptions", "vllm_w2ext.request.preemptions",
       "{preemption}", "Preemptions of finished requests, by reason", ("reason",), when=PREEMPTION),
    # -- the plugin's own cost ------------------------------------------------------------------------
    _i("recorded", COUNTER, "vllm_w2ext_spans_recorded", "vllm_w2ext.spans.recorded", "{span}", "Ranges recorded"),
    _i("dropped", COUNTER, "vllm_w2ext_spans_dropped", "vllm_w2ext.spans.dropped", "{span}",
       "Ranges dropped (queue full)"),
    _i("export_errors", COUNTER, "vllm_w2ext_export_errors", "vllm_w2ext.export.errors", "{error}",
       "Exporter/sink failures (spans, OTLP metrics, trace file)"),
    _i("hook_errors", COUNTER, "vllm_w2ext_hook_errors", "vllm_w2ext.hook.errors", "{error}",
       "Faults inside hooks (each disables its hook)", ("hook",)),
    _i("export_cpu", COUNTER, "vllm_w2ext_export_thread_cpu_seconds", "vllm_w2ext.export_thread.cpu", S,
       "CPU time of the plugin's export thread inside the vLLM process"),
    _i("export_wait", COUNTER, "vllm_w2ext_export_thread_gil_wait_seconds", "vllm_w2ext.export_thread.gil_wait", S,
       "Wall minus CPU time of the export thread's work in the vLLM process (waiting for the GIL or the pipe)"),
    _i("export_hold", COUNTER, "vllm_w2ext_export_thread_gil_hold_seconds", "vllm_w2ext.export_thread.gil_hold", S,
       "Wall time the export thread held the GIL in the vLLM process (its work between the calls that release "
       "it): an upper bound on how long it kept vLLM's threads from the GIL"),
    _i("export_hold_h", HISTOGRAM, "vllm_w2ext_export_thread_gil_hold_per_flush_seconds",
       "vllm_w2ext.export_thread.gil_hold_per_flush", S,
       "The export thread's GIL hold in one flush (one wake: its batch taken, encoded and written, less the calls "
       "that release the GIL): how long it can have kept vLLM's threads waiting at once (an upper bound: several "
       f"chunks count as one). Up to the last {HOLDS_KEPT} flushes between two reports of the own counters", (),
       TIME_BUCKETS),
    _i("hook_self", COUNTER, "vllm_w2ext_hook_self_seconds", "vllm_w2ext.hook.self", S,
       "Wall time inside the plugin's hooks on vLLM's threads (sampled)"),
    _i("hook_cpu", COUNTER, "vllm_w2ext_hook_cpu_seconds", "vllm_w2ext.hook.cpu", S,
       "CPU time inside the plugin's hooks on vLLM's threads (sampled thread time)"),
    _i("hook_wait", COUNTER, "vllm_w2ext_hook_gil_wait_seconds", "vllm_w2ext.hook.gil_wait", S,
       "Wall minus CPU time inside the plugin's hooks (sampled): the hook's thread was waiting for the GIL "
       "or descheduled"),
    _i("hook_direct", COUNTER, "vllm_w2ext_hook_direct_seconds", "vllm_w2ext.hook.direct", S,
       "Wall time inside the plugin's hooks on vLLM's threads in the calls their C fronts take, every one timed "
       "(time-stamp-counter ticks, a read's cost taken out): the typical call's cost, which the sampled counters "
       "overstate; calls passed on to the Python front (the sampled ones, marks wanted, hooks without a C front), "
       "async hooks and the shutdown hooks are not in it, nor Python's collections that ran inside a hook's "
       "section (mostly vLLM's young objects: they would run a few allocations later without the plugin); no "
       "series where no C front took a call"),
    _i("hook_direct_by_hook", COUNTER, "vllm_w2ext_hook_direct_by_hook_seconds", "vllm_w2ext.hook.direct_by_hook", S,
       "vllm_w2ext_hook_direct_seconds_total split by hook: where the plugin's own time on vLLM's threads goes",
       ("hook",)),
    _i("hook_direct_calls", COUNTER, "vllm_w2ext_hook_direct_calls", "vllm_w2ext.hook.direct_calls", "{call}",
       "Hook calls the C fronts took and timed (vllm_w2ext_hook_direct_seconds_total is their time)"),
    _i("gc", COUNTER, "vllm_w2ext_python_gc_seconds", "vllm_w2ext.python.gc", S,
       "Time of Python's cyclic collections in the vLLM process, on any thread (vLLM's own and those the plugin's "
       "buffered records set off alike: a collection starts after ~700 more containers were made than freed, "
       "whoever made them); no series until one was timed (the hooks' C extension times them)"),
    _i("gc_collections", COUNTER, "vllm_w2ext_python_gc_collections", "vllm_w2ext.python.gc_collections",
       "{collection}", "Python's cyclic collections in the vLLM process (vllm_w2ext_python_gc_seconds_total is "
       "their time)"),
    _i("process_cpu", COUNTER, "vllm_w2ext_export_process_cpu_seconds", "vllm_w2ext.export_process.cpu", S,
       "CPU time of the export process (outside vLLM's processes)"),
)
BY_KEY = {i.key: i for i in INSTRUMENTS}

_UNIT_SUFFIX = {"s": "seconds", "1": "ratio", "By": "bytes"}


def prometheus_name(otel_name: str, unit: str, kind: str) -> str:
    """OpenTelemetry's Prometheus compatibility translation of a metric name (the rules of the
    specification's "Prometheus and OpenMetrics Compatibility", as Prometheus's OTLP receiver and the
    Collector's Prometheus exporters apply them with suffixes on): non-[a-zA-Z0-9_:] characters to
    ``_``; the unit's word appended unless the name already ends with it (``{...}`` annotations have
    none; ``1`` is ``ratio`` on gauges only); ``_total`` on monotonic sums."""
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", otel_name)
    word = "" if unit.startswith("{") else _UNIT_SUFFIX.get(unit, "")
    if word == "ratio" and kind != GAUGE:
        word = ""
    if word and not name.endswith("_" + word):
        name += "_" + word
    if kind == COUNTER:
        name += "_total"
    return name


def markdown_table() -> str:
    """METRICS.md's name table, generated from INSTRUMENTS."""
    rows = ["| Prometheus (endpoint) | OpenTelemetry (OTLP) | type | unit | labels = attributes | exemplars | data |",
            "|---|---|---|---|---|---|---|"]
    for i in INSTRUMENTS:
        otype = {COUNTER: "Counter (monotonic Sum)", HISTOGRAM: "Histogram (explicit buckets)",
                 GAUGE: "Gauge"}[i.kind]
        rows.append(f"| `{i.prom_samples}` | `{i.otel}` | {otype} | `{i.unit}` | "
                    f"{', '.join(f'`{x}`' for x in i.all_labels)} | {'yes' if i.exemplars else ''} | "
                    f"{i.when or 'every run'} |")
    return "\n".join(rows)
