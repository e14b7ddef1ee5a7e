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
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.ranges import ENGINE, FRONT, WORKER, Range

# Sub-millisecond to multi-second steps.
TIME_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LABELS = ("role", "engine", "rank")
PHASES = {
    "engine.step": (ENGINE, "step"), "engine.schedule": (ENGINE, "schedule"),
    "engine.execute_model": (ENGINE, "execute_model"), "engine.sample_tokens": (ENGINE, "sample_tokens"),
    "engine.update_from_output": (ENGINE, "update_from_output"),
    "worker.execute_model": (WORKER, "execute_model"), "worker.sample_tokens": (WORKER, "sample_tokens"),
    "worker.forward": (WORKER, "forward"), "worker.model_runner.execute_model": (WORKER, "forward"),
    "front.process_outputs": (FRONT, "process_outputs"), "front.add_request": (FRONT, "add_request"),
    "front.step": (FRONT, "step"),
}
GAP_PARTS = ("schedule", "update", "engine_idle", "other")
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
        self.gpu_ratio = Gauge(p + "gpu_busy_ratio", f"GPU busy fraction over the last {GPU_WINDOW_S:.0f} s",
                               LABELS, registry=r)
        self.recorded = Counter(p + "spans_recorded", "Ranges recorded", LABELS, registry=r)
        self.dropped = Counter(p + "spans_dropped", "Ranges dropped (queue full)", LABELS, registry=r)
        self.export_errors = Counter(p + "export_errors", "Exporter/sink failures", LABELS, registry=r)
        self.hook_errors = Counter(p + "hook_errors", "Faults inside hooks (each disables its hook)",
                                   LABELS + ("hook",), registry=r)
        self.export_cpu = Counter(p + "export_thread_cpu_seconds", "CPU time of the plugin's export thread",
                                  LABELS, registry=r)
        self.hook_self = Counter(p + "hook_self_seconds", "Estimated time inside the plugin's hooks on "
                                 "vLLM's threads (sampled)", LABELS, registry=r)
        self._gpu_window: deque[tuple[float, float, float]] = deque()   # (wall time, busy, idle)
        self._seen = {"recorded": 0, "dropped": 0, "errors": 0, "cpu": 0.0, "hook_self": 0.0}
        self._hook_errors: dict[str, int] = {}

    @staticmethod
    def labels(role: str) -> tuple[str, str, str]:
        a = identity.roles().get(role, {})
        return role, str(a.get("vllm.engine_index", 0)), str(a.get("vllm.rank", "na"))

    def consume(self, ranges: list[Range]) -> None:
        cache: dict[str, tuple] = {}
        for r in ranges:
            lab = cache.get(r.role) or cache.setdefault(r.role, self.labels(r.role))
            ph = PHASES.get(r.name)
            if ph is not None and r.end_ns:
                self.phase.labels(*lab, ph[1]).observe((r.end_ns - r.start_ns) / 1e9)
            a = r.attrs
            if not a:
                continue
            if r.name == "engine.step":
                self._step(lab, a)
            elif r.name == "worker.execute_model":
                self._worker(lab, r, a)
            elif r.name == "worker.sample_tokens":
                self.exec_time.labels(*lab).inc((r.end_ns - r.start_ns) / 1e9)

    def _step(self, lab, a) -> None:
        executed = bool(a.get("vllm.step.model_executed"))
        self.steps.labels(*lab, "true" if executed else "false").inc()
        if "vllm.batch.num_reqs" in a:
            self.tokens.labels(*lab, "prefill").inc(a["vllm.batch.prefill_tokens"])
            self.tokens.labels(*lab, "decode").inc(a["vllm.batch.decode_tokens"])
            self.batch.labels(*lab).observe(a["vllm.batch.num_reqs"])
            self.preempt.labels(*lab).inc(a["vllm.batch.preemptions"])
            self.running.labels(*lab).set(a["vllm.scheduler.running"])
            self.waiting.labels(*lab).set(a["vllm.scheduler.waiting"])

    def _worker(self, lab, r: Range, a) -> None:
        self.exec_time.labels(*lab).inc((r.end_ns - r.start_ns) / 1e9)
        gap = a.get("vllm.gap.cpu_s")
        if gap is not None:
            self.gap.labels(*lab).observe(gap)
            for part in GAP_PARTS:
                v = a.get(f"vllm.gap.{part}_s", 0.0)
                if v:
                    self.gap_part.labels(*lab, part).inc(v)
        fwd, gaps = a.get("vllm.gpu.forward_s"), a.get("vllm.gpu.gap_s")
        if fwd:
            now = time.time()
            for i, busy in enumerate(fwd):
                self.gpu_fwd.labels(*lab).observe(busy)
                self.gpu_busy.labels(*lab).inc(busy)
                idle = gaps[i] if gaps and i < len(gaps) else 0.0
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

    def self_cost(self, role: str, recorded: int, dropped: int, errors: int, cpu_s: float, hook_self_s: float,
                  hook_errors: dict[str, int]) -> None:
        """Feed the pipeline's own counters (cumulative values) into counters."""
        lab = self.labels(role)
        for key, val, metric in (("recorded", recorded, self.recorded), ("dropped", dropped, self.dropped),
                                 ("errors", errors, self.export_errors), ("cpu", cpu_s, self.export_cpu),
                                 ("hook_self", hook_self_s, self.hook_self)):
            child = metric.labels(*lab)           # exists (at 0) before anything goes wrong
            delta = val - self._seen[key]
            if delta > 0:
                child.inc(delta)
                self._seen[key] = val
        for hook, n in hook_errors.items():
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
