"""Metrics from finished ranges, per process: a Prometheus registry merged across processes at one
endpoint and, with ``VLLM_W2EXT_OTLP_METRICS``, the same instruments over OTLP.

Each process keeps its own ``CollectorRegistry`` (never vLLM's global one, so vLLM's ``/metrics`` is
untouched) and updates it on the export side from the ranges it recorded. Every
``VLLM_W2EXT_METRICS_INTERVAL_MS`` it writes its exposition (OpenMetrics, so exemplars survive) to
``<metrics dir>/<pid>.prom`` (atomic rename). The front-end process serves ``VLLM_W2EXT_METRICS_PORT``
and merges its own registry with every other process's latest snapshot at scrape time (see
``metrics_server.py``).

Why files and not a push to the front end or one port per process: vLLM's processes already exist
before we run (no socket to hand over), offline runs have no API server, one port per process breaks
"one scrape target", and a snapshot file survives the process that wrote it (the last counters of a
crashed worker stay visible) at the cost of one small write per second per process.

One feeding point, two back ends. :class:`StepMetrics` reads each range once (labels, values, the
step's or request's span) and hands every observation to an :class:`_Instrument` (one per row of
``instruments.py``), which updates the Prometheus child. With OTLP metrics on, the OTLP side reads the
same children at each collection (``otlp_metrics.py``): counters and gauges as the SDK's observable
instruments (``_Instrument.values``), histograms as points built from the children's buckets and sum
(``_Instrument.histogram_points``); an observation only keeps its series' min and max for it. So no
observation is recorded twice (the SDK's ``Histogram.record`` cost ~13 us per observation on the 2-core
CPU machine, ~130 us per engine step in the export process: benchmarks/otlp_metrics_cost.py). Exemplars
are chosen here, once for both: an observation offers its span's ``trace_id``/``span_id`` only if
its bucket (a histogram's ``le`` bucket; a counter's series) has had none in the current exemplar
window, so at most one exemplar per bucket per window reaches either back end (the OTLP side keeps the
latest offered per bucket, or per counter series, since its last collection; prometheus_client keeps the
latest per bucket).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from bisect import bisect_left
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import (
    generate_latest as generate_openmetrics,
)

from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.instruments import (  # noqa: F401  (TIME_BUCKETS, LABELS: re-exported)
    BATCH_BUCKETS,
    COUNTER,
    EXEMPLAR_SPAN_ID,
    EXEMPLAR_TRACE_ID,
    GAUGE,
    HISTOGRAM,
    INSTRUMENTS,
    LABELS,
    TIME_BUCKETS,
    Instrument,
)
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.telemetry.sink import Sink
from vllm_w2ext.telemetry.wire import SelfCost
from vllm_w2ext.vocab import (
    ENGINE,
    FRONT,
    GAP_PARTS,
    IDLE_CAUSES,
    WORKER,
    Attr,
    Event,
    Span,
    device_idle_attr,
)

PHASES = {   # span name -> phase label
    Span.STEP: "step", Span.SCHEDULE: "schedule", Span.EXECUTE: "execute_model", Span.SAMPLE: "sample_tokens",
    Span.UPDATE: "update_from_output", Span.WORKER_EXECUTE: "execute_model", Span.WORKER_SAMPLE: "sample_tokens",
    Span.FORWARD: "forward", Span.PROCESS_OUTPUTS: "process_outputs",
    Span.ADD_REQUEST: "add_request", Span.FRONT_STEP: "step",
}
GPU_WINDOW_S = 10.0
_PROM = {COUNTER: Counter, HISTOGRAM: Histogram, GAUGE: Gauge}


class _Instrument:
    """One instrument in both back ends. ``lab`` is the tuple of label values in ``spec.all_labels``
    order; ``ids`` the ``(trace_id, span_id)`` of the span behind an observation (exemplar candidate)."""
    __slots__ = ("_attrs", "_children", "buckets", "otel_exemplars", "otel_range", "owner", "prom", "spec")

    def __init__(self, spec: Instrument, registry, owner: StepMetrics):
        self.spec, self.owner = spec, owner
        kw = {"buckets": spec.buckets} if spec.kind == HISTOGRAM else {}
        self.prom = _PROM[spec.kind](spec.prom, spec.doc, spec.all_labels, registry=registry, **kw)
        # With OTLP metrics on (``StepMetrics.attach_otel``), what the OTel side reads at each collection besides
        # the Prometheus children: a counter's latest exemplar per series (lab -> ids); a histogram's exemplars
        # (lab -> {bucket: (value, time ns, ids)}) and its [min, max] per series since the last collection.
        self.otel_exemplars = None
        self.otel_range = None
        self.buckets = spec.buckets or ()
        self._children: dict = {}
        self._attrs: dict = {}

    def child(self, lab: tuple):
        c = self._children.get(lab)
        if c is None:
            c = self._children[lab] = self.prom.labels(*lab)
        return c

    def histogram_points(self) -> list[tuple]:
        """(label values, attributes, bucket counts, sum, [min, max] since the last call or None, exemplars
        {bucket: (value, time ns, (trace id, span id))} or None) of every series of a histogram: what the
        OTLP side exports at each collection, read from the Prometheus children (called on the reader's
        thread). Under the owner's ``otel_lock``, which ``observe`` holds from count to range: each
        observation is in the counts and the range of the same collection."""
        with self.owner.otel_lock:
            rng, self.otel_range = self.otel_range, {}
            ex, self.otel_exemplars = self.otel_exemplars, {}
            return [(lab, self.attrs(lab), [int(b.get()) for b in c._buckets], c._sum.get(),
                     rng.get(lab) if rng else None, ex.get(lab) if ex else None)
                    for lab, c in list(self._children.items())]

    def values(self):
        """(attributes, current value, exemplar ids or None) of every series: what the OTel SDK's
        observable counters and gauges read at each collection (called on the reader's thread)."""
        ex = self.otel_exemplars
        if ex is not None:
            self.otel_exemplars = {}
        for lab, c in list(self._children.items()):
            yield self.attrs(lab), c._value.get(), (ex.get(lab) if ex else None)

    def attrs(self, lab: tuple) -> dict:
        a = self._attrs.get(lab)
        if a is None:
            a = self._attrs[lab] = dict(zip(self.spec.all_labels, lab))
        return a

    def _exemplar(self, lab: tuple, value: float, ids):
        """``ids`` if this bucket has no exemplar in the current window, else None."""
        m = self.owner
        if ids is None or not m.exemplars or not ids[0]:
            return None
        key = (self.spec.key, lab, bisect_left(self.buckets, value) if self.buckets else 0)
        seen = m.exemplar_seen
        if key in seen:
            return None
        seen.add(key)
        return ids

    def observe(self, lab: tuple, value: float, ids=None) -> None:
        ex = self._exemplar(lab, value, ids) if ids is not None else None
        c = self._children.get(lab) or self.child(lab)
        labels = None if ex is None else exemplar_labels(ex)
        if self.otel_range is None:    # Prometheus only
            c.observe(value, labels)
            return
        with self.owner.otel_lock:     # OTLP on: the count, the range and the exemplar in one collection
            c.observe(value, labels)
            rng = self.otel_range
            r = rng.get(lab)
            if r is None:
                rng[lab] = [value, value]
            elif value < r[0]:
                r[0] = value
            elif value > r[1]:
                r[1] = value
            if ex is not None:
                self.otel_exemplars.setdefault(lab, {})[bisect_left(self.buckets, value)] = (value, time.time_ns(), ex)

    def inc(self, lab: tuple, value: float, ids=None) -> None:
        ex = self._exemplar(lab, value, ids) if ids is not None else None
        c = self._children.get(lab) or self.child(lab)
        if ex is None:
            c.inc(value)
        else:
            c.inc(value, exemplar_labels(ex))
        if ex is not None and self.otel_exemplars is not None:
            self.otel_exemplars[lab] = ex

    def set(self, lab: tuple, value: float) -> None:
        (self._children.get(lab) or self.child(lab)).set(value)


class StepMetrics:
    """The plugin's instruments (``instruments.INSTRUMENTS``), fed from finished ranges.

    ``exemplars``: observations of histograms (and the device-idle counter) carry the trace and span id
    of their step or request, at most one per bucket per exemplar window (``new_exemplar_window``)."""

    def __init__(self, exemplars: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.exemplars = exemplars
        self.exemplar_seen: set = set()
        self.otel_lock = threading.Lock()   # histograms' observe vs the OTLP reader's collection (histogram_points)
        self.instruments: dict[str, _Instrument] = {}
        for spec in INSTRUMENTS:
            inst = self.instruments[spec.key] = _Instrument(spec, self.registry, self)
            setattr(self, spec.key, inst)
        self._gpu_window: deque[tuple[float, float, float]] = deque()   # (wall time, busy, idle)
        self._seen: dict = {}                 # counter key (a by-hook one: ("direct", hook)) -> value last fed
        self._hook_errors: dict[str, int] = {}

    def attach_otel(self, otlp) -> None:
        """From now on OTLP metrics read these instruments at each collection (``otlp_metrics``): nothing is
        recorded twice per observation; a histogram keeps its range and exemplars for the OTLP side."""
        for inst in self.instruments.values():
            if inst.spec.kind == HISTOGRAM:
                inst.otel_range, inst.otel_exemplars = {}, {}
            elif inst.spec.kind == COUNTER and inst.spec.exemplars:
                inst.otel_exemplars = {}
        otlp.bind(self.instruments)

    def new_exemplar_window(self) -> None:
        self.exemplar_seen = set()

    @staticmethod
    def labels(role: str) -> tuple[str, ...]:
        """The values of LABELS for one of this process's roles."""
        a = identity.roles().get(role, {})
        return (role, str(a.get(Attr.ENGINE_INDEX, 0)), str(a.get(Attr.RANK, "na")), str(a.get(Attr.TP_RANK, "na")),
                str(a.get(Attr.PP_RANK, "na")))

    def consume(self, ranges: list[Range]) -> None:
        cache: dict[str, tuple] = {}
        phase = self.phase
        for r in ranges:
            lab = cache.get(r.role) or cache.setdefault(r.role, self.labels(r.role))
            ph = PHASES.get(r.name)
            if ph is not None and r.end_ns:
                phase.observe(lab + (ph,), (r.end_ns - r.start_ns) / 1e9, (r.trace_id, r.span_id))
            a = r.attrs
            if not a:
                continue
            if r.name == Span.STEP:
                self._step(lab, r, a)
            elif r.name == Span.WORKER_EXECUTE:
                self._worker(lab, r, a)
            elif r.name == Span.WORKER_SAMPLE:
                self.exec_time.inc(lab, (r.end_ns - r.start_ns) / 1e9)
            elif r.name == Span.ENGINE_REQUEST:
                self._request(lab, r)

    def _request(self, lab, r: Range) -> None:
        a = r.attrs
        ids = (r.trace_id, r.span_id)
        for phase, key in (("queue", Attr.QUEUE_S), ("prefill", Attr.PREFILL_S), ("decode", Attr.DECODE_S)):
            if key in a:
                self.req_phase.observe(lab + (phase,), a[key], ids)
        for name, _, ev_attrs in r.events or ():
            if name == Event.PREEMPTED:
                self.req_preempt.inc(lab + ((ev_attrs or {}).get("reason", ""),), 1)

    def _step(self, lab, r: Range, a) -> None:
        executed = bool(a.get(Attr.MODEL_EXECUTED))
        self.steps.inc(lab + ("true" if executed else "false",), 1)
        self.sample_every.set(lab, a.get(Attr.SAMPLE_EVERY, 1))
        skipped = a.get(Attr.SKIPPED_STEPS)
        if skipped is not None:                # steps only counted before this one (VLLM_W2EXT_SAMPLE)
            self.steps.inc(lab + ("true",), skipped)
            self.steps.inc(lab + ("false",), a[Attr.SKIPPED_IDLE_STEPS])
            self.tokens.inc(lab + ("decode",), a[Attr.SKIPPED_DECODE_TOKENS])
        if Attr.NUM_REQS in a:
            self.tokens.inc(lab + ("prefill",), a[Attr.PREFILL_TOKENS])
            self.tokens.inc(lab + ("decode",), a[Attr.DECODE_TOKENS])
            self.batch.observe(lab, a[Attr.NUM_REQS], (r.trace_id, r.span_id))
            self.preempt.inc(lab, a[Attr.PREEMPTIONS])
            self.running.set(lab, a[Attr.RUNNING])
            self.waiting.set(lab, a[Attr.WAITING])

    def _worker(self, lab, r: Range, a) -> None:
        ids = (r.trace_id, r.span_id)
        self.exec_time.inc(lab, (r.end_ns - r.start_ns) / 1e9)
        gap = a.get(Attr.GAP_CPU)
        if gap is not None:
            self.gap.observe(lab, gap, ids)
            for part, key in GAP_PARTS.items():
                v = a.get(key, 0.0)
                if v:
                    self.gap_part.inc(lab + (part,), v)
        busy = a.get(Attr.DEVICE_BUSY)
        if busy is None or a.get(Attr.DEVICE_IDLE_UNKNOWN):   # no idle measured before it: busy alone
            return                                            # would bias every busy / (busy + idle)
        idle = a.get(Attr.DEVICE_IDLE, 0.0)
        self.device_busy.inc(lab, busy)
        self.device_idle_h.observe(lab, idle, ids)
        for cause in IDLE_CAUSES:
            v = a.get(device_idle_attr(cause))
            if v:
                self.device_idle.inc(lab + (cause,), v, ids)
        if a.get(Attr.DEVICE_CLOCK) != "cuda_events":
            return
        now = time.time()
        self.gpu_fwd.observe(lab, busy, ids)
        self.gpu_busy.inc(lab, busy)
        if idle > 0:
            self.gpu_gap.observe(lab, idle, ids)
            self.gpu_idle.inc(lab, idle)
        self._gpu_window.append((now, busy, max(idle, 0.0)))
        while self._gpu_window and self._gpu_window[0][0] < now - GPU_WINDOW_S:
            self._gpu_window.popleft()
        b = sum(x[1] for x in self._gpu_window)
        t = b + sum(x[2] for x in self._gpu_window)
        if t > 0:
            self.gpu_ratio.set(lab, b / t)

    def self_cost(self, role: str, cost: SelfCost, process_cpu_s: float = 0.0) -> None:
        """Feed the plugin's own cumulative counters into the self-cost counters."""
        lab = self.labels(role)
        for key, val, inst in (("recorded", cost.recorded, self.recorded), ("dropped", cost.dropped, self.dropped),
                               ("errors", cost.errors, self.export_errors),
                               ("export_cpu", cost.export_cpu_s, self.export_cpu),
                               ("export_wait", cost.export_gil_wait_s, self.export_wait),
                               ("export_hold", cost.export_gil_hold_s, self.export_hold),
                               ("hook_wall", cost.hook_cpu_s + cost.hook_gil_wait_s, self.hook_self),
                               ("hook_cpu", cost.hook_cpu_s, self.hook_cpu),
                               ("hook_wait", cost.hook_gil_wait_s, self.hook_wait),
                               ("hook_direct", cost.hook_direct_s, self.hook_direct),
                               ("hook_direct_calls", cost.hook_direct_calls, self.hook_direct_calls),
                               ("gc", cost.gc_s, self.gc), ("gc_collections", cost.gc_collections, self.gc_collections),
                               ("process_cpu", process_cpu_s, self.process_cpu)):
            if key.startswith("hook_direct") and not cost.hook_direct_calls:
                continue                          # no C front took a call (not built, or async hooks only): no
                                                  # series rather than a 0 that reads as "the hooks cost nothing"
            if key.startswith("gc") and not cost.gc_collections:
                continue                          # none timed yet (or no C extension to time them): no series
            inst.child(lab)                       # exists (at 0) before anything goes wrong
            delta = val - self._seen.get(key, 0)
            if delta > 0:
                inst.inc(lab, delta)
                self._seen[key] = val
        self.export_hold_h.child(lab)
        new = cost.export_flushes - self._seen.get("flushes", 0)     # flushes since the last report seen here
        if new > 0:                                 # (their holds, as many as the report kept)
            for hold in cost.export_holds[-new:]:
                self.export_hold_h.observe(lab, hold)
            self._seen["flushes"] = cost.export_flushes
        for hook, v in cost.hook_direct_by_hook.items():
            delta = v - self._seen.get(("direct", hook), 0.0)
            if delta > 0:
                self.hook_direct_by_hook.inc(lab + (hook,), delta)
                self._seen[("direct", hook)] = v
        for hook, n in cost.hook_errors.items():
            self.hook_errors.child(lab + (hook,))      # every known hook's series exists at 0
            delta = n - self._hook_errors.get(hook, 0)
            if delta > 0:
                self.hook_errors.inc(lab + (hook,), delta)
                self._hook_errors[hook] = n

    def exposition(self) -> bytes:
        """What the snapshot files hold: OpenMetrics text (it carries exemplars) when exemplars are on,
        else the Prometheus text format (its parser, at the merging endpoint, is 2.5 x faster)."""
        return generate_openmetrics(self.registry) if self.exemplars else generate_latest(self.registry)


def exemplar_labels(ids: tuple[int, int]) -> dict[str, str]:
    """A (trace_id, span_id) as the OpenMetrics exemplar's labels (hex, as W3C writes them)."""
    return {EXEMPLAR_TRACE_ID: f"{ids[0]:032x}", EXEMPLAR_SPAN_ID: f"{ids[1]:016x}"}


def write_snapshot(directory: str, data: bytes) -> None:
    """This process's snapshot in ``directory``, replaced atomically. Nothing when the folder is gone: the
    process that made it has exited (``metrics_server.shared_dir``), so no endpoint is left to read it; a
    process of the instance may still be flushing its last snapshot at shutdown."""
    path = os.path.join(directory, f"{os.getpid()}.prom")
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
    except FileNotFoundError:
        if not os.path.isdir(directory):
            return
        raise
    os.replace(tmp, path)


class MetricsSink(Sink):
    """The metrics of one vLLM process: written as a snapshot for the front end's endpoint and, with
    ``otlp``, exported over OTLP metrics (``otlp_metrics.OtlpMetrics``, built once the process's
    identity is known: it names the resource).

    ``counters()`` returns ``(SelfCost, export process CPU s)``: the plugin's own cumulative counters."""
    name = "metrics"

    def __init__(self, interval_s: float, counters, directory, write_front: bool = False, otlp: bool = False,
                 exemplars: bool = True, otlp_factory=None):
        self.metrics = StepMetrics(exemplars=exemplars)
        self.counters = counters
        self.directory = directory         # () -> the metrics folder or None (one reader: see callers)
        self.write_front = write_front     # in an export process even the front end's metrics go to a file
        self.interval = interval_s
        self.otlp = None                   # OtlpMetrics once started
        self._otlp_wanted = otlp
        self._otlp_factory = otlp_factory
        self._otlp_failed = False
        self._next = 0.0
        self._next_window = 0.0
        self._window_s = interval_s
        self._lock = threading.Lock()      # snapshot runs on the export thread and at shutdown

    @property
    def failed_batches(self) -> int:       # failed OTLP metric exports count as export errors
        return self.otlp.failed_exports if self.otlp is not None else 0

    def _start_otlp(self) -> None:
        if self.otlp is not None or not self._otlp_wanted or self._otlp_failed:
            return
        try:
            if self._otlp_factory is None:
                from vllm_w2ext.telemetry.otlp_metrics import OtlpMetrics
                self._otlp_factory = OtlpMetrics
            self.otlp = self._otlp_factory(exemplars=self.metrics.exemplars)
        except Exception as e:             # noqa: BLE001 - Prometheus and spans go on without it
            self._otlp_failed = True
            logging.getLogger("vllm_w2ext").warning(
                "vllm_w2ext, pid %s: OTLP metrics unavailable in this process: %r", os.getpid(), e)
            return
        self.metrics.attach_otel(self.otlp)
        self._window_s = min(self.interval, self.otlp.interval_s)

    def consume(self, ranges) -> None:
        if self.otlp is None and self._otlp_wanted:
            self._start_otlp()
        self.metrics.consume(ranges)

    def tick(self) -> None:
        now = time.monotonic()
        if self.metrics.exemplars and now >= self._next_window:
            self._next_window = now + self._window_s
            self.metrics.new_exemplar_window()
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
            if self.otlp is None and self._otlp_wanted:
                self._start_otlp()
            self.metrics.self_cost(role, *self.counters())
            d = self.directory()
            if d and (role != FRONT or self.write_front):
                write_snapshot(d, self.metrics.exposition())

    def flush(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self.snapshot()
        if self.otlp is not None:
            self.otlp.flush(max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self.snapshot()
        if self.otlp is not None:
            self.otlp.shutdown(max(0.0, deadline - time.monotonic()))

    def close_in_forked_child(self) -> None:
        if self.otlp is not None:          # the SDK restarts the reader's thread in a forked child:
            self.otlp.exporter.muted = True    # it must not re-send the parent's numbers
        self.otlp = None
        self._otlp_wanted = False
