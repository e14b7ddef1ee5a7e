"""The export chain: raw range records -> assembled ranges -> sinks (OTLP, metrics, trace file).

It runs wherever export runs: in the export process (the default) or on the vLLM process's export
thread (``VLLM_W2EXT_EXPORT_PROCESS=off``). The same code in both places, so both behave alike. The
assembly step (attributes, links and request spans that need the step's facts) is handed in by the
composition root, since it speaks of vLLM's scheduler and telemetry does not.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

from vllm_w2ext import config
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.telemetry.sink import Sink
from vllm_w2ext.telemetry.wire import ZERO_COST, SelfCost
from vllm_w2ext.vocab import INTERNAL_SPANS

log = logging.getLogger("vllm_w2ext")
class Assemble(Protocol):
    """Fills in what the hooks' raw records imply (``steps.assemble.Assembler``)."""
    def __call__(self, ranges: list[Range]) -> list[Range]: ...
    def drain(self) -> list[Range]: ...


def wants_metrics(settings: config.Settings) -> bool:
    return bool(settings.metrics_port or settings.metrics_dir or settings.otlp_metrics_enabled)


class ExportChain:
    """Turns batches of raw records into finished ranges and hands them to every sink."""

    def __init__(self, settings: config.Settings, assemble: Assemble, directory: Callable[[], str | None],
                 pid: Callable[[], int], in_export_process: bool = False):
        self.settings = settings
        self.in_export_process = in_export_process   # its CPU is reported as the export process's
        self.assemble = assemble
        self.errors = 0
        self.parent_cost: SelfCost = ZERO_COST    # the vLLM process's own counters (export process only)
        self._pid = pid
        self._warned: set[str] = set()
        self.sinks: list[Sink] = []
        if settings.otlp_enabled:
            from vllm_w2ext.telemetry.otlp import OtlpSink
            self.sinks.append(OtlpSink(delay_ms=settings.export_waits_ms[0], max_queue=settings.queue_size))
        self.metrics = None
        if wants_metrics(settings) or directory():
            from vllm_w2ext.telemetry.metrics import MetricsSink
            self.metrics = MetricsSink(settings.metrics_interval_ms / 1000.0, self.counters, directory,
                                       write_front=in_export_process, otlp=settings.otlp_metrics_enabled,
                                       exemplars=settings.exemplars == "on")
            self.sinks.append(self.metrics)
        self.trace_file = None
        self._trace_dir = settings.trace_dir

    def counters(self) -> tuple[SelfCost, float]:
        """The self-cost counters: the vLLM process's, plus this chain's own losses and failures."""
        c = self.parent_cost
        # failures before drops: a sink counts a failed batch's drops first (no lock here), so a failure seen
        # has its drops seen too
        errors = c.errors + self.errors + sum(s.failed_batches for s in self.sinks)
        dropped = c.dropped + sum(s.dropped for s in self.sinks)
        return c._replace(dropped=dropped, errors=errors), time.process_time() if self.in_export_process else 0.0

    def _trace_sink(self) -> None:
        """The trace file is named after the vLLM process it describes: opened once its pid is known."""
        if self.trace_file is None and self._trace_dir:
            from vllm_w2ext.telemetry.trace_file import TraceFileSink
            try:
                self.trace_file = TraceFileSink(self._trace_dir, self.settings.trace_max_mb << 20, self._pid())
            except OSError as e:
                self.warn_once("trace_file", "vllm_w2ext: trace file in %s unavailable: %r", self._trace_dir, e)
                self._trace_dir = ""
                return
            self.sinks.append(self.trace_file)

    def warn_once(self, key: str, msg: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    def consume(self, records: list) -> None:
        self._trace_sink()
        ranges = [Range.from_record(r) for r in records]
        try:
            ranges = self.assemble(ranges)
        except Exception as e:   # a bug here must never reach vLLM; the ranges still go out
            self.errors += 1
            self.warn_once("assemble", "vllm_w2ext: could not assemble step attributes: %r", e)
            ranges = [r for r in ranges if r.name not in INTERNAL_SPANS]
        self.each("consume", ranges)

    def each(self, method: str, *args) -> None:
        """Call ``method`` on every sink; one failing sink never stops the others."""
        for s in self.sinks:
            try:
                getattr(s, method)(*args)
            except Exception as e:
                self.errors += 1
                self.warn_once(f"{s.name}.{method}", "vllm_w2ext: %s %s failed: %r", s.name, method, e)

    def tick(self) -> None:
        self.each("tick")

    def release_held(self) -> None:
        """What the assembly still holds back goes out as it is (flush, shutdown)."""
        held = self.assemble.drain()
        if held:
            self.each("consume", held)

    def flush(self, timeout_s: float) -> None:
        self.release_held()
        deadline = time.monotonic() + timeout_s
        for s in list(self.sinks):
            try:
                s.flush(max(0.0, deadline - time.monotonic()))
            except Exception as e:
                self.warn_once(f"{s.name}.flush", "vllm_w2ext: %s flush failed: %r", s.name, e)

    def shutdown(self, timeout_s: float) -> None:
        self.release_held()
        deadline = time.monotonic() + timeout_s
        for s in list(self.sinks):
            try:
                s.shutdown(max(0.0, deadline - time.monotonic()))
            except Exception as e:
                self.warn_once(f"{s.name}.shutdown", "vllm_w2ext: %s shutdown failed: %r", s.name, e)

    def close_in_forked_child(self) -> None:
        self.each("close_in_forked_child")
