"""Prometheus metrics from finished ranges, per process, merged across processes at one endpoint.

Each process keeps its own ``CollectorRegistry`` (never vLLM's global one, so vLLM's ``/metrics`` is
untouched) and updates it on the export thread from the ranges it recorded. Every
``VLLM_W2EXT_METRICS_INTERVAL_MS`` it writes its exposition text to ``<metrics dir>/<pid>.prom``
(atomic rename). The front-end process serves ``VLLM_W2EXT_METRICS_PORT`` and merges its own registry
with every other process's latest snapshot at scrape time (see ``metrics_server.py``).

Why files and not a push to the front end or one port per process: vLLM's processes already exist
before we run (no socket to hand over), offline runs have no API server, one port per process breaks
"one scrape target", and a snapshot file survives the process that wrote it (the last counters of a
crashed worker stay visible) at the cost of one small write per second per process.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.telemetry.sink import Sink
from vllm_w2ext.telemetry.wire import SelfCost
from vllm_w2ext.vocab import ENGINE, FRONT, GAP_PARTS, IDLE_CAUSES, WORKER, Attr, Event, Span, device_idle_attr

# Sub-millisecond to multi-second steps.
TIME_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LABELS = ("role", "engine", "rank")
PHASES = {   # span name -> phase label
    Span.STEP: "step", Span.SCHEDULE: "schedule", Span.EXECUTE: "execute_model", Span.SAMPLE: "sample_tokens",
    Span.UPDATE: "update_from_output", Span.WORKER_EXECUTE: "execute_model", Span.WORKER_SAMPLE: "sample_tokens",
    Span.FORWARD: "forward", Span.RUNNER_EXECUTE: "forward", Span.PROCESS_OUTPUTS: "process_outputs",
    Span.ADD_REQUEST: "add_request", Span.FRONT_STEP: "step",
}
GPU_WINDOW_S = 10.0


class StepMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "vllm_w2ext_"
        self.phase = Histogram(p + "phase_duration_seconds", "Wall time of one engine/worker/front phase",
                               LABELS + ("phase",), buckets=TIME_BUCKETS, registry=r)
        self.steps = Counter(p + "engine_steps", "Engine steps", LABELS + ("executed",), registry=r)
        self.tokens = Counter(p + "batch_tokens", "Tokens scheduled, by kind", LABELS + ("kind",), registry=r)
        self.batch = Histogram(p + "batch_requests", "Requests per engine step", LABELS, buckets=BATCH_BUCKETS,
                               registry=r)
        self.running = Gauge(p + "scheduler_running_requests", "Running requests after scheduling", LABELS,
                             registry=r)
        self.waiting = Gauge(p + "scheduler_waiting_requests", "Waiting requests after scheduling", LABELS,
                             registry=r)
        self.preempt = Counter(p + "preemptions", "Preempted requests", LABELS, registry=r)
        self.gap = Histogram(p + "scheduler_gap_seconds", "CPU wall time between the end of one model "
                             "execution and the start of the next", LABELS, buckets=TIME_BUCKETS, registry=r)
        self.gap_part = Counter(p + "scheduler_gap_part_seconds", "Where the scheduler gap went",
                                LABELS + ("part",), registry=r)
        self.exec_time = Counter(p + "model_execution_seconds", "CPU wall time in model execution "
                                 "(worker execute + sample)", LABELS, registry=r)
        self.gpu_fwd = Histogram(p + "gpu_forward_seconds", "GPU time of one step (CUDA events)", LABELS,
                                 buckets=TIME_BUCKETS, registry=r)
        self.gpu_gap = Histogram(p + "gpu_gap_seconds", "GPU idle between consecutive forwards (CUDA events)",
                                 LABELS, buckets=TIME_BUCKETS, registry=r)
        self.gpu_busy = Counter(p + "gpu_busy_seconds", "GPU time inside steps", LABELS, registry=r)
        self.gpu_idle = Counter(p + "gpu_idle_seconds", "GPU idle time between steps", LABELS, registry=r)
        self.device_busy = Counter(p + "device_busy_seconds", "Device time inside forwards (GPU: CUDA events; "
                                   "CPU build: the forward)", LABELS, registry=r)
        self.device_idle = Counter(p + "device_idle_seconds", "Device idle between two forwards, by cause "
                                   "(what the critical path was doing)", LABELS + ("cause",), registry=r)
        self.device_idle_h = Histogram(p + "device_idle_per_step_seconds", "Device idle before one forward",
                                       LABELS, buckets=TIME_BUCKETS, registry=r)
        self.req_phase = Histogram(p + "request_phase_seconds", "Each request's time per phase: queue (arrival "
                                   "-> first scheduled), prefill (-> first token), decode (-> finished)",
                                   LABELS + ("phase",), buckets=TIME_BUCKETS, registry=r)
        self.req_preempt = Counter(p + "request_preemptions", "Preemptions of finished requests, by reason",
                                   LABELS + ("reason",), registry=r)
        self.gpu_ratio = Gauge(p + "gpu_busy_ratio", f"GPU busy fraction over the last {GPU_WINDOW_S:.0f} s",
                               LABELS, registry=r)
        self.recorded = Counter(p + "spans_recorded", "Ranges recorded", LABELS, registry=r)
        self.dropped = Counter(p + "spans_dropped", "Ranges dropped (queue full)", LABELS, registry=r)
        self.export_errors = Counter(p + "export_errors", "Exporter/sink failures", LABELS, registry=r)
        self.hook_errors = Counter(p + "hook_errors", "Faults inside hooks (each disables its hook)",
                                   LABELS + ("hook",), registry=r)
        self.export_cpu = Counter(p + "export_thread_cpu_seconds", "CPU time of the plugin's export thread "
                                  "inside the vLLM process", LABELS, registry=r)
        self.export_wait = Counter(p + "export_thread_gil_wait_seconds", "Wall minus CPU time of the export "
                                   "thread's work in the vLLM process (waiting for the GIL or the pipe)",
                                   LABELS, registry=r)
        self.hook_self = Counter(p + "hook_self_seconds", "Wall time inside the plugin's hooks on vLLM's "
                                 "threads (sampled)", LABELS, registry=r)
        self.hook_cpu = Counter(p + "hook_cpu_seconds", "CPU time inside the plugin's hooks on vLLM's "
                                "threads (sampled thread time)", LABELS, registry=r)
        self.hook_wait = Counter(p + "hook_gil_wait_seconds", "Wall minus CPU time inside the plugin's hooks "
                                 "(sampled): the hook's thread was waiting for the GIL or descheduled",
                                 LABELS, registry=r)
        self.process_cpu = Counter(p + "export_process_cpu_seconds", "CPU time of the export process "
                                   "(outside vLLM's processes)", LABELS, registry=r)
        self._gpu_window: deque[tuple[float, float, float]] = deque()   # (wall time, busy, idle)
        self._seen: dict[str, float] = {}
        self._hook_errors: dict[str, int] = {}

    @staticmethod
    def labels(role: str) -> tuple[str, str, str]:
        a = identity.roles().get(role, {})
        return role, str(a.get(Attr.ENGINE_INDEX, 0)), str(a.get(Attr.RANK, "na"))

    def consume(self, ranges: list[Range]) -> None:
        cache: dict[str, tuple] = {}
        for r in ranges:
            lab = cache.get(r.role) or cache.setdefault(r.role, self.labels(r.role))
            ph = PHASES.get(r.name)
            if ph is not None and r.end_ns:
                self.phase.labels(*lab, ph).observe((r.end_ns - r.start_ns) / 1e9)
            a = r.attrs
            if not a:
                continue
            if r.name == Span.STEP:
                self._step(lab, a)
            elif r.name == Span.WORKER_EXECUTE:
                self._worker(lab, r, a)
            elif r.name == Span.WORKER_SAMPLE:
                self.exec_time.labels(*lab).inc((r.end_ns - r.start_ns) / 1e9)
            elif r.name == Span.ENGINE_REQUEST:
                self._request(lab, r)

    def _request(self, lab, r: Range) -> None:
        a = r.attrs
        for phase, key in (("queue", Attr.QUEUE_S), ("prefill", Attr.PREFILL_S), ("decode", Attr.DECODE_S)):
            if key in a:
                self.req_phase.labels(*lab, phase).observe(a[key])
        for name, _, ev_attrs in r.events or ():
            if name == Event.PREEMPTED:
                self.req_preempt.labels(*lab, (ev_attrs or {}).get("reason", "")).inc()

    def _step(self, lab, a) -> None:
        executed = bool(a.get(Attr.MODEL_EXECUTED))
        self.steps.labels(*lab, "true" if executed else "false").inc()
        if Attr.NUM_REQS in a:
            self.tokens.labels(*lab, "prefill").inc(a[Attr.PREFILL_TOKENS])
            self.tokens.labels(*lab, "decode").inc(a[Attr.DECODE_TOKENS])
            self.batch.labels(*lab).observe(a[Attr.NUM_REQS])
            self.preempt.labels(*lab).inc(a[Attr.PREEMPTIONS])
            self.running.labels(*lab).set(a[Attr.RUNNING])
            self.waiting.labels(*lab).set(a[Attr.WAITING])

    def _worker(self, lab, r: Range, a) -> None:
        self.exec_time.labels(*lab).inc((r.end_ns - r.start_ns) / 1e9)
        gap = a.get(Attr.GAP_CPU)
        if gap is not None:
            self.gap.labels(*lab).observe(gap)
            for part, key in GAP_PARTS.items():
                v = a.get(key, 0.0)
                if v:
                    self.gap_part.labels(*lab, part).inc(v)
        busy = a.get(Attr.DEVICE_BUSY)
        if busy is None:
            return
        idle = a.get(Attr.DEVICE_IDLE, 0.0)
        self.device_busy.labels(*lab).inc(busy)
        self.device_idle_h.labels(*lab).observe(idle)
        for cause in IDLE_CAUSES:
            v = a.get(device_idle_attr(cause))
            if v:
                self.device_idle.labels(*lab, cause).inc(v)
        if a.get(Attr.DEVICE_CLOCK) != "cuda_events":
            return
        now = time.time()
        self.gpu_fwd.labels(*lab).observe(busy)
        self.gpu_busy.labels(*lab).inc(busy)
        if idle > 0:
            self.gpu_gap.labels(*lab).observe(idle)
            self.gpu_idle.labels(*lab).inc(idle)
        self._gpu_window.append((now, busy, max(idle, 0.0)))
        while self._gpu_window and self._gpu_window[0][0] < now - GPU_WINDOW_S:
            self._gpu_window.popleft()
        b = sum(x[1] for x in self._gpu_window)
        t = b + sum(x[2] for x in self._gpu_window)
        if t > 0:
            self.gpu_ratio.labels(*lab).set(b / t)

    def self_cost(self, role: str, cost: SelfCost, process_cpu_s: float = 0.0) -> None:
        """Feed the plugin's own cumulative counters into the self-cost counters."""
        lab = self.labels(role)
        for key, val, metric in (("recorded", cost.recorded, self.recorded), ("dropped", cost.dropped, self.dropped),
                                 ("errors", cost.errors, self.export_errors),
                                 ("export_cpu", cost.export_cpu_s, self.export_cpu),
                                 ("export_wait", cost.export_gil_wait_s, self.export_wait),
                                 ("hook_wall", cost.hook_cpu_s + cost.hook_gil_wait_s, self.hook_self),
                                 ("hook_cpu", cost.hook_cpu_s, self.hook_cpu),
                                 ("hook_wait", cost.hook_gil_wait_s, self.hook_wait),
                                 ("process_cpu", process_cpu_s, self.process_cpu)):
            child = metric.labels(*lab)           # exists (at 0) before anything goes wrong
            delta = val - self._seen.get(key, 0)
            if delta > 0:
                child.inc(delta)
                self._seen[key] = val
        for hook, n in cost.hook_errors.items():
            child = self.hook_errors.labels(*lab, hook)
            delta = n - self._hook_errors.get(hook, 0)
            if delta > 0:
                child.inc(delta)
                self._hook_errors[hook] = n

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def write_snapshot(directory: str, data: bytes) -> None:
    path = os.path.join(directory, f"{os.getpid()}.prom")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class MetricsSink(Sink):
    """Prometheus metrics of one vLLM process, written as a snapshot for the front end's endpoint.

    ``counters()`` returns ``(SelfCost, export process CPU s)``: the plugin's own cumulative counters."""
    name = "metrics"

    def __init__(self, interval_s: float, counters, directory, write_front: bool = False):
        self.metrics = StepMetrics()
        self.counters = counters
        self.directory = directory         # () -> the metrics folder or None (one reader: see callers)
        self.write_front = write_front     # in an export process even the front end's metrics go to a file
        self.interval = interval_s
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
            roles = identity.roles()
            role = next((r for r in (ENGINE, WORKER, FRONT) if r in roles), None)
            if role is None:
                return
            self.metrics.self_cost(role, *self.counters())
            d = self.directory()
            if d and (role != FRONT or self.write_front):
                write_snapshot(d, self.metrics.exposition())

    def flush(self, timeout_s: float) -> None:
        self.snapshot()

    def shutdown(self, timeout_s: float) -> None:
        self.snapshot()
