"""Per-process telemetry pipeline, the composition root on vLLM's side: the recorder (hot path), one
export thread, and where its records go - the export process (default) or, with
``VLLM_W2EXT_EXPORT_PROCESS=off``, the export chain on this thread (``exporters.py``).

Created lazily on first use in a process (and again in a forked child), flushed at exit within
``VLLM_W2EXT_SHUTDOWN_TIMEOUT_S``. With the export process, the export thread's whole job per
interval is: take the buffered records, serialize them (C code), write them to a pipe; its CPU, its
waits and how long it held the GIL are measured and reported as the plugin's own cost (``SelfCost``).

The GIL hold is the wall time of the thread's work between the calls that release the GIL: the pipe writes
(``Sink.released_here``), the ``time.sleep(0)`` between chunks and what a poller reports it ran released (the device
timer's end events, timed in one C call: ``hooks/_event_times.c``). Wall, not CPU: a thread descheduled while holding
the GIL keeps vLLM's threads from it all the same. An upper bound: another release inside a poller (torch's record of
the device timer's anchor event, once a second) or a forced switch (after ``sys.getswitchinterval()`` of running)
counts as held.
"""
from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time

from vllm_w2ext import config
from vllm_w2ext.telemetry import export_process, identity, metrics_server, selfcost
from vllm_w2ext.telemetry.recording import Nvtx, Recorder
from vllm_w2ext.telemetry.wire import HOLDS_KEPT, SelfCost

log = logging.getLogger("vllm_w2ext")
SEND_PARTS = ("take", "encode", "deliver")     # export_cpu_parts of the send (Pipeline.__init__)
CHUNK = 256          # records per pipe frame (in-process chain: per batch) between two GIL releases
STATS_EVERY_S = 1.0  # the plugin's own counters go on at most this often (and at every explicit flush)


class Pipeline:
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.pid = os.getpid()
        self.recorder = Recorder(settings.queue_size, Nvtx.attach(settings.nvtx_domain, settings.nvtx))
        self.remote: export_process.ExportProcessSink | None = None
        self.chain = None                  # the in-process export chain (no export process)
        self.export_cpu_s = 0.0            # CPU time of the export thread
        self.export_wait_s = 0.0           # wall minus CPU time of its work sections
        self.export_hold_s = 0.0           # wall time of those sections with the GIL held (module docstring)
        self.poll_released_s = 0.0         # of those sections, what pollers ran with the GIL released (add_poller)
        self.flushes = 0                   # flush_once calls so far
        self.holds: collections.deque = collections.deque(maxlen=HOLDS_KEPT)   # each flush's GIL hold (s), the last
        # export_cpu_s by part (seconds; together, all of it): each poller by its name; the send in three: "take" (the
        # records off the recorder's buffer), "encode" (serializing the frames for the export process: the sink's
        # ``encode_cpu_here``), "deliver" (the rest: writing the frames to the pipe, the yields between chunks; with
        # no export process, the in-process chain's assembling and exporting); "stats" (the plugin's own counters;
        # the in-process chain's tick)
        self.export_cpu_parts: dict[str, float] = dict.fromkeys(SEND_PARTS + ("stats",), 0.0)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._exit_deadline: float | None = None   # monotonic: set by the first flush at exit (exit_flush)
        self._last_cost = None
        self._stats_due = 0.0              # perf_counter time the own counters are next sent
        self._faults_sent = 0              # selfcost.faults when they were last sent (a new fault goes at once)
        self._pollers: list = []           # called on the export thread before each take (poll(recorder))
        self._running = True               # False while this process's hooks are paused (set_running)
        self._resumed = False              # set_running(True) after a pause: the next wake only restarts the wait
        self.wakes = 0                     # times the export thread woke (each interval, or when woken)

    def connect(self) -> None:
        """Where records go: the export process if wanted and it starts, else the in-process chain."""
        if export_process.wanted(self.settings):
            self.remote = export_process.start()
        from vllm_w2ext.telemetry.exporters import ExportChain, wants_metrics
        if self.remote is None and (self.settings.otlp_enabled or self.settings.trace_dir
                                    or metrics_server.metrics_dir() or wants_metrics(self.settings)):
            from vllm_w2ext.steps import assemble
            self.chain = ExportChain(self.settings, assemble.for_settings(self.settings), metrics_server.metrics_dir,
                                     os.getpid)
            self.chain.parent_cost = self.self_cost()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="w2ext-export", daemon=True)
        self._thread.start()
        atexit.register(self.shutdown)

    def self_cost(self) -> SelfCost:
        rec = self.recorder
        dropped = rec.dropped + (self.remote.dropped if self.remote else 0)
        errors = self.remote.failed_batches if self.remote else 0
        direct_ns, direct_calls = selfcost.direct()
        gc_s, gc_n = selfcost.collections()
        return SelfCost(rec.recorded, dropped, errors, self.export_cpu_s, self.export_wait_s, self.export_hold_s,
                        selfcost.hook_cpu_ns[0] / 1e9, max(0, selfcost.hook_wall_ns[0] - selfcost.hook_cpu_ns[0]) / 1e9,
                        dict(selfcost.hook_errors), self.flushes, tuple(self.holds), direct_ns / 1e9, direct_calls,
                        selfcost.direct_by_hook(), gc_s, gc_n)

    def add_poller(self, poll, name: str) -> None:
        """Run ``poll(recorder)`` on the export thread before each take: work a hook would otherwise do on
        vLLM's thread (resolving CUDA events). Its thread CPU goes to ``export_cpu_parts[name]``; what it returns,
        if anything, is the seconds it ran with the GIL released (out of ``export_hold_s``). A poller that raises is
        dropped, with one log line."""
        self.export_cpu_parts.setdefault(name, 0.0)
        self._pollers.append((poll, name))

    def _poll(self, c0: float) -> float:
        """Run the pollers, the thread CPU clock read ``c0`` before them; its reading after the last one."""
        parts = self.export_cpu_parts
        for item in list(self._pollers):
            poll, name = item
            try:
                released = poll(self.recorder)
                if released:
                    self.poll_released_s += released
            except Exception as e:
                self._pollers.remove(item)
                log.error("vllm_w2ext: %r raised %r on the export thread and is now disabled", poll, e)
            c1 = time.thread_time()
            parts[name] += c1 - c0
            c0 = c1
        return c0

    # -- export thread -----------------------------------------------------------------------
    def _run(self) -> None:
        shortest, longest = (ms / 1000.0 for ms in self.settings.export_waits_ms)
        fill = config.EXPORT_FILL
        wait = shortest
        last = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(wait if self._running else None)
            self._wake.clear()
            self.wakes += 1
            if self._resumed:                      # resumed: nothing was recorded while paused; wait again from now
                self._resumed = False
                last = time.monotonic()
                continue
            n = self.flush_once()
            now = time.monotonic()
            wait = next_wait(n, now - last, shortest, longest, fill)
            last = now

    def set_running(self, on: bool) -> None:
        """This process's hooks were paused (``False``) or resumed. Paused, nothing is recorded, so the export
        thread sends what is left at once and then sleeps until resumed instead of waking every interval: a wake
        has a fixed cost on vLLM's GIL even with nothing to send (``benchmarks/results/cpu/export_interval``),
        which a paused plugin should not keep. Resumed, it wakes every interval again, the first wait counted from
        the resume (no flush then: the pause's flush sent everything, and a resumed block of an in-engine A/B would
        otherwise carry a wake of its own)."""
        on = bool(on)
        if on and not self._running:
            self._resumed = True
        elif not on:
            self._resumed = False
        self._running = on
        self._wake.set()

    def flush_once(self, stats: bool = False) -> int:
        """Hand everything recorded so far on, in chunks with a GIL release between them; the plugin's own
        counters too when ``stats``, after a hook fault, or every ``STATS_EVERY_S`` (they are scraped at
        seconds, and building and sending them is a fixed cost per interval on vLLM's GIL)."""
        with self._lock:
            w0, c0 = time.perf_counter(), time.thread_time()
            parts = self.export_cpu_parts
            p0 = self.poll_released_s
            c1 = self._poll(c0) if self._pollers else c0
            batch = self.recorder.take()
            ct = time.thread_time()
            parts["take"] += ct - c1
            remote, chain = self.remote, self.chain
            released = self.poll_released_s - p0        # GIL released: in the pollers, the writes, the yields
            if remote is not None:
                released -= remote.released_here()
                e0 = remote.encode_cpu_here()
                remote.sync_identity(metrics_server.metrics_dir())
            for i in range(0, len(batch), CHUNK):
                if remote is not None:
                    remote.consume(batch[i:i + CHUNK])
                elif chain is not None:
                    chain.consume(batch[i:i + CHUNK])
                y0 = time.perf_counter()
                time.sleep(0)
                released += time.perf_counter() - y0
            c2 = time.thread_time()
            encode = remote.encode_cpu_here() - e0 if remote is not None else 0.0
            parts["encode"] += encode
            parts["deliver"] += c2 - ct - encode
            if stats or w0 >= self._stats_due or selfcost.faults[0] != self._faults_sent:
                self._stats_due, self._faults_sent = w0 + STATS_EVERY_S, selfcost.faults[0]
                cost = self.self_cost()               # the plugin's own counters, when they moved
                if cost != self._last_cost:
                    self._last_cost = cost
                    if remote is not None:
                        remote.send_stats(cost)
                    elif chain is not None:
                        chain.parent_cost = cost
            if chain is not None:
                chain.tick()
            c3 = time.thread_time()
            parts["stats"] += c3 - c2
            cpu = c3 - c0
            wall = time.perf_counter() - w0
            if remote is not None:
                released += remote.released_here()
            self.export_cpu_s += cpu
            self.export_wait_s += max(0.0, wall - cpu)
            hold = max(0.0, wall - released)
            self.export_hold_s += hold
            self.flushes += 1
            self.holds.append(hold)
            return len(batch)

    def start_metrics_endpoint(self) -> None:
        """The front end's scrape endpoint for all of this vLLM instance's processes: served by the
        export process when there is one (scrapes never take vLLM's GIL), else here."""
        own = self.chain.metrics if self.chain is not None else None
        remote = self.remote
        metrics_server.ensure_started(own.metrics if own is not None else None,
                                      remote.serve_metrics if remote is not None else None)

    def flush(self, timeout_s: float | None = None) -> None:
        """Export everything recorded so far (engine/worker shutdown), within ``timeout_s``. After
        :meth:`shutdown` (which exported everything) a no-op: its sinks are closed."""
        if self._closed:
            return
        timeout_s = self.settings.shutdown_timeout_s if timeout_s is None else timeout_s
        self.flush_once(stats=True)
        target = self.remote or self.chain
        if target is not None:
            target.flush(timeout_s)

    def exit_flush(self, budget_s: float) -> None:
        """The flush at the start of a process's shutdown (``hooks.lifecycle``): it and the ``shutdown`` at exit
        that follows wait ``budget_s`` in all (at most ``VLLM_W2EXT_SHUTDOWN_TIMEOUT_S``), not each its own."""
        if self._closed:
            return
        budget_s = min(budget_s, self.settings.shutdown_timeout_s)
        if self._exit_deadline is None:
            self._exit_deadline = time.monotonic() + budget_s
        self.flush(max(0.0, self._exit_deadline - time.monotonic()))

    def shutdown(self) -> None:
        if self._closed or os.getpid() != self.pid:
            return
        self._closed = True
        deadline = self._exit_deadline or time.monotonic() + self.settings.shutdown_timeout_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self.flush_once(stats=True)
        except Exception:  # pragma: no cover
            pass
        target = self.remote or self.chain
        if target is not None:
            target.shutdown(max(0.0, deadline - time.monotonic()))


def next_wait(records: int, elapsed_s: float, shortest_s: float, longest_s: float, fill: int) -> float:
    """The export thread's next wait (s): long enough for ``fill`` records at the rate of the last interval
    (``records`` taken in ``elapsed_s``), within [shortest_s, longest_s]; the longest when it took none.

    Each wake costs vLLM's process a fixed share whatever it sends (the thread's caches and the device poll's CUDA
    calls run cold after a sleep: ~74 µs of CPU a wake on the 2-core CPU machine, ``benchmarks/results/cpu/
    export_interval``; several hundred µs on the GPU hosts with the device poll, ``benchmarks/results/h200/
    export_parts``), so at long steps a 200 ms interval spent most of the export thread's time per step on waking
    (``benchmarks/results/cpu/export_wait``). Many records a second keep the shortest wait: the flushes stay a few
    chunks, and the device timer's pending events well under their bound."""
    if shortest_s >= longest_s:
        return shortest_s
    if records <= 0 or elapsed_s <= 0:
        return longest_s
    return min(longest_s, max(shortest_s, fill * elapsed_s / records))


_pipeline: Pipeline | None = None
_pipeline_lock = threading.Lock()
# The process's recorder once its pipeline is built (None before, and again in a forked child): the hooks read
# ``RECORDER[0] or recorder()``, a list load instead of a Python call, several times per engine step.
RECORDER: list[Recorder | None] = [None]


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
        p = Pipeline(config.current())
        p.connect()
        p.start()
        _pipeline = p
        RECORDER[0] = p.recorder
        return p


def set_running(on: bool) -> None:
    """``Pipeline.set_running`` of this process's pipeline, if it has one."""
    p = _pipeline
    if p is not None:
        p.set_running(on)


def export_wakes() -> int | None:
    """How often this process's export thread has woken (None: no pipeline here)."""
    p = _pipeline
    return None if p is None else p.wakes


def flush_if_started(timeout_s: float | None = None) -> None:
    p = _pipeline
    if p is not None:
        p.flush(timeout_s)


def exit_flush_if_started(budget_s: float) -> None:
    """``Pipeline.exit_flush`` of this process's pipeline, if it has one."""
    p = _pipeline
    if p is not None:
        p.exit_flush(budget_s)


def recorder() -> Recorder:
    p = _pipeline
    return p.recorder if p is not None else get().recorder


def _after_fork_in_child() -> None:
    # Threads and exporters of the parent do not exist in a forked child; start afresh there.
    global _pipeline
    old, _pipeline = _pipeline, None
    RECORDER[0] = None
    if old is not None:
        for target in (old.remote, old.chain):
            if target is not None:
                target.close_in_forked_child()
    identity.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
