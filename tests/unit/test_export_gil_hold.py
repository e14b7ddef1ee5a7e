"""The export thread's GIL hold (``Pipeline.export_hold_s``, ``vllm_w2ext_export_thread_gil_hold_seconds``): the wall
time of its work between the calls that release the GIL. Planted: Python work of a known length holding the GIL
(a poller that spins), a pipe write that blocks for a known time (an export process that reads late), and a
second Python thread that takes the GIL at every yield between chunks."""
import subprocess
import sys
import threading
import time

from vllm_w2ext import config
from vllm_w2ext.telemetry.export_process import ExportProcessSink
from vllm_w2ext.telemetry.pipeline import CHUNK, Pipeline
from vllm_w2ext.vocab import WORKER, Span

SPIN_S = 0.06          # the poller's Python work, GIL held
LATE_S = 0.4           # the export process starts reading this late: the write blocks, GIL released


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _late_reader() -> subprocess.Popen:
    code = f"import sys, time; time.sleep({LATE_S}); sys.stdin.buffer.read()"
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def test_hold_counts_work_with_the_gil_and_not_a_blocked_write():
    p = Pipeline(config.Settings())
    proc = _late_reader()
    p.remote = ExportProcessSink(proc)
    try:
        p.add_poller(lambda rec: _spin(SPIN_S), "device")
        # ~4 MB in one frame: far beyond the pipe's 64 KiB, so the write waits for the late reader
        p.recorder.emit(Span.DEVICE_SAMPLES, WORKER, None, 0, 0, data=b"x" * (4 << 20))
        t0 = time.perf_counter()
        assert p.flush_once() == 1
        wall = time.perf_counter() - t0
    finally:
        p.remote.shutdown(5.0)
    assert p.remote.released_here() >= LATE_S / 2      # the write did block, with the GIL released
    assert wall >= SPIN_S + LATE_S / 2
    assert SPIN_S * 0.95 <= p.export_hold_s <= SPIN_S + 0.05      # the spin, not the blocked write
    assert p.export_hold_s <= wall - p.remote.released_here() + 1e-6
    cost = p.self_cost()
    assert cost.export_gil_hold_s == p.export_hold_s


def test_a_pollers_released_time_is_not_held():
    """A poller that says how long it ran with the GIL released (the device timer's end events timed in one C call,
    ``hooks/_event_times.c``): that time is out of the hold, its Python work in it."""
    p = Pipeline(config.Settings())
    released = 0.2

    def poll(rec):
        _spin(SPIN_S)
        time.sleep(released)                    # the runtime's calls, the GIL let go
        return released
    p.add_poller(poll, "device")
    assert p.flush_once() == 0
    assert p.poll_released_s == released
    assert SPIN_S * 0.95 <= p.export_hold_s <= SPIN_S + 0.05


def test_another_threads_blocked_write_is_not_the_export_threads():
    """A write blocked on another thread (vLLM's thread flushing at shutdown) meanwhile: its released time is that
    thread's, and the export thread's hold stays its own work."""
    p = Pipeline(config.Settings())
    proc = _late_reader()
    p.remote = remote = ExportProcessSink(proc)
    try:
        remote.sync_identity(None)              # sent now, while the pipe is free: not again in the flush below
        p._stats_due = float("inf")             # no counters frame either: the flush writes nothing
        other = threading.Thread(target=remote.consume, args=([b"x" * (4 << 20)],))
        other.start()
        time.sleep(0.05)                        # its write is blocked on the late reader now
        spin = LATE_S + 0.3                     # and ends inside this flush's spin
        p.add_poller(lambda rec: _spin(spin), "device")
        p.flush_once()
        assert not other.is_alive()
        other.join()
    finally:
        remote.shutdown(5.0)
    assert remote.released_here() < 0.01                       # its one write (the identity), to a free pipe
    assert spin * 0.95 <= p.export_hold_s <= spin + 0.05


def test_yields_to_a_busy_thread_are_not_counted_as_held():
    """Between chunks the export thread yields the GIL (``time.sleep(0)``); a busy Python thread then keeps it for a
    switch interval. That wait is the export thread's, not time it held the GIL."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    stop = threading.Event()

    def spin_until_stopped():
        while not stop.is_set():
            pass
    busy = threading.Thread(target=spin_until_stopped, daemon=True)
    chunks = 12
    busy.start()
    try:
        time.sleep(0.02)
        # The busy thread must hold the GIL at the yields: on a loaded machine the kernel may not run it then (the
        # export thread takes the GIL straight back), so up to three flushes, the first where most yields waited.
        for _ in range(3):
            p = Pipeline(config.Settings())
            for i in range(chunks * CHUNK):
                p.recorder.emit(Span.DEVICE_SAMPLES, WORKER, None, i, i + 1)
            p.chain = type("Chain", (), {"consume": lambda self, batch: None, "tick": lambda self: None,
                                         "parent_cost": None})()
            t0 = time.perf_counter()
            p.flush_once()
            wall = time.perf_counter() - t0
            if wall >= chunks * 0.005 * 0.5:           # most yields waited about a switch interval
                break
    finally:
        stop.set()
        busy.join()
        sys.setswitchinterval(old)
    assert wall >= chunks * 0.005 * 0.5
    assert p.export_hold_s <= wall / 3


def test_each_flushs_hold_goes_out_with_the_own_counters_and_is_observed_once():
    """``SelfCost.export_flushes`` / ``export_holds``: each flush's hold, the last ``HOLDS_KEPT`` of them; the metrics
    histogram observes every flush since the last report it saw once, whatever the number of reports of the same
    counters. Planted: flushes whose pollers spin 20 ms and 5 ms (held), then a report lost in between."""
    from vllm_w2ext.telemetry import wire
    from vllm_w2ext.telemetry.metrics import StepMetrics
    p = Pipeline(config.Settings())
    spins = [0.02, 0.005]
    p.add_poller(lambda rec: _spin(spins.pop(0)) if spins else None, "device")
    p.flush_once()
    p.flush_once()
    cost = p.self_cost()
    assert cost.export_flushes == 2 and len(cost.export_holds) == 2
    assert cost.export_holds[0] >= 0.02 and cost.export_holds[1] >= 0.005     # each flush's spin, held (a busy
    assert max(cost.export_holds) < 0.5                                       # machine may stretch them, never shorten)
    assert abs(sum(cost.export_holds) - p.export_hold_s) < 1e-9
    m = StepMetrics()
    m.self_cost("engine_core", cost)
    m.self_cost("engine_core", cost)                 # the same report again (the chain ticks between reports)
    fam = {f.name: f for f in m.registry.collect()}["vllm_w2ext_export_thread_gil_hold_per_flush_seconds"]
    count = {s.name: s.value for s in fam.samples if s.name.endswith("_count")}
    total = {s.name: s.value for s in fam.samples if s.name.endswith("_sum")}
    assert list(count.values()) == [2] and abs(list(total.values())[0] - sum(cost.export_holds)) < 1e-9
    for _ in range(wire.HOLDS_KEPT + 10):       # more flushes than one report keeps: the last HOLDS_KEPT counted
        p.flush_once()
    later = p.self_cost()
    assert later.export_flushes == wire.HOLDS_KEPT + 12 and len(later.export_holds) == wire.HOLDS_KEPT
    m.self_cost("engine_core", later)
    fam = {f.name: f for f in m.registry.collect()}["vllm_w2ext_export_thread_gil_hold_per_flush_seconds"]
    assert [s.value for s in fam.samples if s.name.endswith("_count")] == [2 + wire.HOLDS_KEPT]
