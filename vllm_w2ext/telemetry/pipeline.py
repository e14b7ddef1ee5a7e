"""Per-process telemetry pipeline: the recorder, a background export thread and its sinks.

Created lazily on first use in a process (and again in a forked child), flushed at exit within
``VLLM_W2EXT_SHUTDOWN_TIMEOUT_S``. Sinks consume batches of finished
:class:`~vllm_w2ext.telemetry.ranges.Range` objects on the export thread only: the trace file, and
either the export process (OTLP + metrics in a separate interpreter, the default) or the OTLP and
metrics sinks themselves (``VLLM_W2EXT_EXPORT_PROCESS=off``).
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Protocol

from vllm_w2ext import config
from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.ranges import Range, Recorder

log = logging.getLogger("vllm_w2ext")
CHUNK = 32          # ranges processed between two GIL releases on the export thread


class Sink(Protocol):
    name: str
    def consume(self, ranges: list[Range]) -> None: ...
    def flush(self, timeout_s: float) -> None: ...
    def shutdown(self, timeout_s: float) -> None: ...


class Pipeline:
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.pid = os.getpid()
        self.recorder = Recorder(settings.queue_size, settings.nvtx_domain if settings.nvtx else None)
        self.sinks: list[Sink] = []
        self.sink_errors = 0
        self.finalize_errors = 0
        self.exported = 0
        self.export_cpu_s = 0.0            # CPU time of the export thread (self-cost metric)
        self._warned: set[str] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="w2ext-export", daemon=True)
        self._thread.start()
        atexit.register(self.shutdown)

    def warn_once(self, key: str, msg: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # -- export thread -----------------------------------------------------------------------
    def _run(self) -> None:
        interval = self.settings.export_interval_ms / 1000.0
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            self.flush_once()
            self.export_cpu_s = time.thread_time()
            for sink in self.sinks:
                tick = getattr(sink, "tick", None)
                if tick is not None:
                    try:
                        tick()
                    except Exception as e:
                        self.sink_errors += 1
                        self.warn_once("tick:" + sink.name, "vllm_w2ext: %s failed: %r", sink.name, e)

    def flush_once(self) -> int:
        """Turn everything recorded so far into spans/metrics, in small chunks with a GIL release
        between them: the engine thread never waits for the whole batch (it shares the GIL)."""
        with self._lock:
            batch = self.recorder.drain()
            for i in range(0, len(batch), CHUNK):
                self._process(batch[i:i + CHUNK])
                time.sleep(0)
            return len(batch)

    def _process(self, batch: list[Range]) -> None:
        extra: list[Range] = []
        for r in batch:
            fin = r.finalize
            if fin is not None:
                try:
                    more = fin(r)
                    if more:
                        extra.extend(more)
                except Exception as e:  # a bug here must never reach vLLM
                    self.finalize_errors += 1
                    self.warn_once("finalize", "vllm_w2ext: dropped attributes of %s: %r", r.name, e)
        batch = batch + extra
        for sink in self.sinks:
            try:
                sink.consume(batch)
            except Exception as e:
                self.sink_errors += 1
                self.warn_once("sink:" + sink.name, "vllm_w2ext: %s export failed: %r", sink.name, e)
        self.exported += len(batch)

    def flush(self, timeout_s: float | None = None) -> None:
        """Export everything recorded so far (engine/worker shutdown), within ``timeout_s``."""
        timeout_s = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        self.flush_once()
        for sink in self.sinks:
            try:
                sink.flush(max(0.0, deadline - time.monotonic()))
            except Exception as e:
                self.warn_once("flush:" + sink.name, "vllm_w2ext: %s flush failed: %r", sink.name, e)

    def shutdown(self) -> None:
        if self._closed or os.getpid() != self.pid:
            return
        self._closed = True
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self.flush_once()
        except Exception:  # pragma: no cover
            pass
        for sink in self.sinks:
            try:
                sink.shutdown(max(0.0, deadline - time.monotonic()))
            except Exception as e:
                self.warn_once("shutdown:" + sink.name, "vllm_w2ext: %s shutdown failed: %r", sink.name, e)


_pipeline: Pipeline | None = None
_pipeline_lock = threading.Lock()


def get() -> Pipeline:
    """The process's pipeline, built on first use (after the plugin decided it is enabled)."""
    p = _pipeline
    if p is not None:
        return p
    return _build()


def _build() -> Pipeline:
    global _pipeline
    with _pipeline_lock:
        if _pipeline is not None:
            return _pipeline
        settings = config.current()
        p = Pipeline(settings)
        from vllm_w2ext.telemetry import sinks
        for sink in sinks.build(settings, p):
            p.add_sink(sink)
        p.start()
        _pipeline = p
        return p


def flush_if_started(timeout_s: float | None = None) -> None:
    p = _pipeline
    if p is not None:
        p.flush(timeout_s)


def recorder() -> Recorder:
    return get().recorder


def _after_fork_in_child() -> None:
    # Threads and exporters of the parent do not exist in a forked child; start afresh there.
    global _pipeline
    old, _pipeline = _pipeline, None
    if old is not None:
        for sink in old.sinks:
            close = getattr(sink, "close_in_forked_child", None)
            if close is not None:
                close()
    identity.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
