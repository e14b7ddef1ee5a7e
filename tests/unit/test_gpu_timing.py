"""hooks.gpu_timing: vLLM's thread records one end event per step; the export thread places the end events on
the wall clock through its anchors (events on a stream of its own, run at once) and turns them into
DeviceSamples (idle = launch - previous end when the GPU had finished it, busy = end - max(launch, previous
end)), recycles events, and restarts the idle chain after steps were dropped or a pause. Stand-in events with
planted GPU timestamps and a planted wall clock (no torch, no GPU). Every timer test runs both ways of timing the
end events: one call per step (``elapsed``), and every pending step in one call of the C extension
(``_event_times.resolve``, the GIL released) through a ctypes function that stands for ``cudaEventElapsedTime``."""
import abc
import ctypes
import os
from collections import deque

import pytest

from vllm_w2ext.hooks import gpu_timing
from vllm_w2ext.hooks.gpu_timing import GpuTimer
from vllm_w2ext.steps.facts import DeviceSample

WALL0 = 10**15            # the wall clock (ns) when the GPU clock reads 0 ms
MS = 1_000_000


def at(ms: float) -> int:
    """Wall clock (ns) of a GPU time (ms)."""
    return WALL0 + round(ms * MS)


try:
    from vllm_w2ext.hooks import _event_times
except ImportError:                       # not built here: the batch way's tests are skipped
    _event_times = None


def test_built_where_ci_asks_for_it():
    if os.environ.get("W2EXT_REQUIRE_C_FRONT") == "1":
        assert _event_times is not None, "the C extension vllm_w2ext.hooks._event_times was not built"


ELAPSED = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_void_p)
CLEAR = ctypes.CFUNCTYPE(ctypes.c_int)


class FakeGpu:
    """vLLM's stream, whose events complete when the test says, at planted GPU times (ms); the timer's own
    stream runs its events at once, at the GPU's current time ``now``. Each event has a handle (``cuda_event``)."""

    def __init__(self, way="per_step"):
        self.way = way
        self.events = {}                  # handle -> event
        self.cleared = 0
        self.now = 0.0
        self.created = 0
        self.records = []                 # (event, stream) on vLLM's stream
        self.anchors = 0
        self.elapsed_calls = 0
        self.device_uses = 0
        self.queue = []                   # recorded events the GPU has not reached, in stream order

    def event(self, enable_timing):
        assert enable_timing
        self.created += 1

        class Ev:
            t = None
            done = False
            cuda_event = self.created

        e = Ev()
        self.events[e.cuda_event] = e
        return e

    def runtime(self):
        """The runtime's two functions as C function pointers over ``elapsed`` (which a test may replace): its ms
        and 0, 600 when not ready, the code a RuntimeError names."""
        def elapsed(out, start, end):
            try:
                ms = self.elapsed(self.events[start], self.events[end])
            except RuntimeError as e:
                return int(str(e).rsplit(" ", 1)[-1])
            if ms is None:
                return gpu_timing.NOT_READY
            out[0] = ms
            return 0

        def clear():
            self.cleared += 1
            return 0
        self._keep = (ELAPSED(elapsed), CLEAR(clear))        # alive while the timer may call them
        return [ctypes.cast(f, ctypes.c_void_p).value for f in self._keep]

    def elapsed(self, start, end):
        """The runtime's cudaEventElapsedTime: ms, or None (not ready) while either event has not run."""
        self.elapsed_calls += 1
        if not (start.done and end.done):
            return None
        return end.t - start.t

    def use_device(self):
        self.device_uses += 1

    def record(self, e, stream):
        if stream == "anchor stream":
            e.done, e.t = True, self.now
            self.anchors += 1
            return
        e.done, e.t = False, None
        self.records.append((e, stream))
        self.queue.append(e)

    def current(self, device):
        return (7, device, 1)

    def finish(self, *times_ms):
        """The GPU reaches the oldest unfinished recorded events at these times."""
        for t in times_ms:
            e = self.queue.pop(0)
            e.done, e.t = True, t


@pytest.fixture(params=["per_step", "batch"])
def gpu(monkeypatch, request):
    if request.param == "batch" and _event_times is None:
        pytest.skip("the C extension _event_times is not built here")
    g = FakeGpu(request.param)
    monkeypatch.setattr(gpu_timing, "_wall", lambda: at(g.now))     # the record returns as the GPU runs it
    return g


def make(gpu, spent=None):
    resolve = None
    if gpu.way == "batch":
        elapsed, clear = gpu.runtime()

        def resolve(*state):
            return _event_times.resolve(elapsed, clear, *state)
    return GpuTimer((gpu.event, gpu.record, gpu.current, lambda **ids: ("stream", ids), lambda: "anchor stream", 0,
                     lambda start, end: gpu.elapsed(start, end), gpu.use_device, resolve), spent=spent)


def samples(timer):
    return [DeviceSample._make(x) for x in timer.poll()]


def close(a, b):
    return abs(a - b) < 1e-12


def test_idle_and_busy_from_one_end_event_per_step(gpu):
    """A CPU-bound engine: the GPU finishes each step before the next one starts."""
    timer = make(gpu)
    gpu.now = 99.0
    timer.stop(1, at(100.0))                      # no anchor yet: vLLM's thread records the first
    gpu.finish(102.0)                             # step 1 ends at 102 ms
    gpu.now = 104.0
    timer.stop(2, at(105.0))
    gpu.finish(107.5)
    gpu.now = 108.0
    got = samples(timer)
    assert [(x.step, x.launch_ns) for x in got] == [(1, at(100.0)), (2, at(105.0))]
    assert close(got[0].busy_s, 2e-3) and got[0].idle_s == 0.0          # the first: no previous step
    assert close(got[1].busy_s, 2.5e-3) and close(got[1].idle_s, 3e-3)  # 102 -> 105 ms idle, 105 -> 107.5 busy
    # one record per step on vLLM's stream, whose Stream object is built once
    assert len(gpu.records) == 2 and {id(s) for _, s in gpu.records} == {id(gpu.records[0][1])}
    assert gpu.anchors == 1                       # vLLM's thread's first; 9 ms old at the poll: kept
    assert gpu.elapsed_calls == 2                 # one runtime call per step: no query of its own
    assert gpu.device_uses == 1                   # the events' device made current on the polling thread
    timer.stop(3, at(109.0))                      # the same anchor places step 3
    gpu.finish(110.0)
    (x,) = samples(timer)
    assert close(x.idle_s, 1.5e-3) and close(x.busy_s, 1e-3)
    created = gpu.created
    timer.stop(4, at(111.0))
    assert gpu.created == created                 # step 4's end event came from the pool
    assert gpu.device_uses == 1                   # once for the thread, not once per poll


def test_a_poll_records_a_new_anchor_once_the_last_is_a_second_old(gpu):
    """Anchors cost the export thread more than the steps they place: a poll makes one only once the current
    one is ANCHOR_EVERY_NS old; steps recorded after the new one are placed from it, those before from theirs."""
    timer = make(gpu)
    gpu.now = 100.0
    timer.stop(1, at(100.0))                      # anchor 1 at 100 ms
    gpu.now = 600.0
    assert samples(timer) == [] and gpu.anchors == 1          # step 1 unfinished; anchor 500 ms old: kept
    gpu.now = 1100.0
    samples(timer)
    assert gpu.anchors == 2                       # 1,000 ms old: a new one (at 1,100 ms)
    first, second = timer.pending[0][3], timer.anchor
    timer.stop(2, at(1150.0))
    assert timer.pending[1][3] is second and first is not second
    gpu.finish(1120.0, 1160.0)
    gpu.now = 1170.0
    got = samples(timer)
    assert [x.step for x in got] == [1, 2]
    assert close(got[1].busy_s, 10e-3) and close(got[1].idle_s, 30e-3)   # 1,120 -> 1,150 idle, -> 1,160 busy
    assert gpu.anchors == 2


def test_a_step_queued_behind_the_previous_one_has_no_idle(gpu):
    """Async scheduling: step 2 is launched while the GPU still runs step 1, so its work runs after step 1's:
    idle 0, busy from step 1's end."""
    timer = make(gpu)
    timer.stop(1, at(100.0))
    timer.stop(2, at(101.0))                      # step 1 ends on the GPU at 102 ms, after step 2's launch
    timer.stop(3, at(103.0))
    gpu.finish(102.0, 104.0, 107.0)
    gpu.now = 108.0
    got = samples(timer)
    assert [(x.step, round(x.busy_s * 1e3, 9), x.idle_s) for x in got] == [(1, 2.0, 0.0), (2, 2.0, 0.0),
                                                                            (3, 3.0, 0.0)]
    assert timer.prev_end == at(107.0)


def test_an_unfinished_step_waits_for_a_later_poll(gpu):
    timer = make(gpu)
    timer.stop(1, at(100.0))
    assert samples(timer) == []
    gpu.finish(101.0)
    assert [x.step for x in samples(timer)] == [1]


def test_dropped_steps_restart_the_idle_chain(gpu, monkeypatch):
    monkeypatch.setattr(gpu_timing, "MAX_PENDING", 2)
    timer = make(gpu)
    for step in (1, 2, 3):                        # step 1 is dropped: no one polled
        timer.stop(step, at(step * 10.0))
        gpu.finish(step * 10.0 + 1)               # each step finished before the next started
    assert timer.dropped == 1 and [p[1] for p in timer.pending] == [2, 3]
    got = samples(timer)
    assert [x.step for x in got] == [2, 3]
    assert got[0].idle_s == 0.0                   # no idle across the dropped step
    assert close(got[1].idle_s, 9e-3)             # 21 -> 30 ms


def vllm_event(gpu, timing=True):
    """An event vLLM recorded on its own stream at the step's end (end_event): the GPU reaches it in stream order."""
    e = gpu.event(True)
    e.timing = timing
    gpu.queue.append(e)
    return e


def test_a_borrowed_end_event_is_placed_like_an_own_one_with_no_record(gpu):
    """vLLM's V2 runner hands over its step-end event: vLLM's thread makes no CUDA call of the plugin's (no
    record, no stream look-up), the step is placed from the same anchor, and the event never enters the pool
    (vLLM's object, not the timer's)."""
    timer = make(gpu)
    gpu.now = 99.0
    timer.stop(1, at(100.0), vllm_event(gpu))
    gpu.finish(102.0)
    gpu.now = 104.0
    timer.stop(2, at(105.0), vllm_event(gpu))
    gpu.finish(107.5)
    gpu.now = 108.0
    got = samples(timer)
    assert gpu.records == [] and gpu.anchors == 1             # the anchor is the timer's; no record on vLLM's
    assert close(got[0].busy_s, 2e-3) and got[0].idle_s == 0.0
    assert close(got[1].busy_s, 2.5e-3) and close(got[1].idle_s, 3e-3)
    assert timer.pool == []
    assert len(timer.spent) == 2                  # resolved, oldest first: kept for vLLM's constructor to hand
    timer.stop(3, at(109.0), vllm_event(gpu))     # out again (end_event), not freed on the export thread (the
    assert len(timer.spent) == 2                  # driver's lock) nor by vLLM's thread while few
    timer.stop(4, at(111.0))                      # nothing handed over (the V1 runner): its own, as before
    assert len(gpu.records) == 1


def test_resolved_events_beyond_the_bound_are_freed_oldest_first_on_vllms_thread(gpu, monkeypatch):
    """Borrowed events the constructor does not take again (vLLM stopped making outputs that carry one) pile up
    in ``spent`` no further than ``MAX_SPENT``: vLLM's thread drops the oldest at its next stop, and the list the
    timer was given stays the same object (the constructor reads it)."""
    monkeypatch.setattr(gpu_timing, "MAX_SPENT", 2)
    spent = []
    timer = make(gpu, spent)
    gpu.now = 99.0
    ends = []
    for n in range(4):
        ends.append(vllm_event(gpu))
        timer.stop(n, at(100.0 + 3 * n), ends[-1])
        gpu.finish(101.0 + 3 * n)
    gpu.now = 120.0
    assert len(samples(timer)) == 4 and spent == ends
    timer.stop(4, at(121.0), vllm_event(gpu))
    assert timer.spent is spent and spent == ends[2:]


def test_a_borrowed_event_the_runtime_cannot_time_turns_borrowing_off(gpu, monkeypatch):
    """vLLM made a plain event after all (the runtime refuses to time it): that step is dropped, the next one
    measures no idle across it, and vLLM's thread records its own events from then on. An own event that
    fails is the plugin's fault: it still raises (the pipeline drops the poller)."""
    elapsed = gpu.elapsed

    def refusing(start, end):
        if not getattr(end, "timing", True):
            raise RuntimeError("cudaEventElapsedTime returned 400")
        return elapsed(start, end)
    gpu.elapsed = refusing
    timer = make(gpu)
    timer.stop(1, at(100.0), vllm_event(gpu))
    timer.stop(2, at(103.0), vllm_event(gpu, timing=False))
    gpu.finish(101.0, 104.0)
    timer.stop(3, at(105.0), vllm_event(gpu))     # handed over, but borrowing is still on: taken
    gpu.finish(106.0)
    gpu.now = 107.0
    got = samples(timer)
    assert [x.step for x in got] == [1, 3] and got[1].idle_s == 0.0     # no idle across the dropped step 2
    assert timer.borrow is False
    timer.stop(4, at(108.0), vllm_event(gpu))
    assert len(gpu.records) == 1 and timer.pending[-1][5] is True      # its own event now
    timer.pending[-1][0].timing = False
    gpu.queue.pop(0)                              # vLLM's event of step 4, never reached: only the own one runs
    gpu.finish(109.0)
    with pytest.raises(RuntimeError):
        timer.poll()


class RacingDeque:
    """A pending deque whose first popleft loses a race: vLLM's thread drops the head (queue full) between the
    export thread's look at it and its take."""

    def __init__(self, items):
        self.items = deque(items)
        self.raced = False

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def popleft(self):
        if not self.raced:
            self.raced = True
            self.items.popleft()                  # the drop, on vLLM's thread
        return self.items.popleft()

    def appendleft(self, x):
        self.items.appendleft(x)


def test_a_head_dropped_while_polling_is_not_resolved_unfinished(gpu):
    timer = make(gpu)
    timer.stop(1, at(100.0))
    gpu.finish(101.0)                             # step 1 finished on the GPU, step 2 not yet
    timer.stop(2, at(102.0))
    timer.pending = RacingDeque(timer.pending)
    assert timer.poll() == ()                     # step 2 unfinished: no elapsed_time on it
    assert [p[1] for p in timer.pending.items] == [2] and timer.prev_end is None


def test_no_idle_is_measured_across_a_pause(gpu):
    """hooks.control resumed the hooks: the paused steps ran unrecorded, so the first step after the resume
    has no previous one: idle 0 (the export side also drops it: its execution record has no previous end,
    test_steps_assembly.test_gpu_no_idle_measured_across_a_pause); the chain goes on from it."""
    timer = make(gpu)
    timer.stop(1, at(100.0))
    timer.forget_previous()                       # pause ... resume
    timer.stop(9, at(1000.0))
    timer.stop(10, at(1003.0))
    gpu.finish(101.0, 1002.0, 1004.0)
    gpu.now = 1005.0
    got = samples(timer)
    assert [x.step for x in got] == [1, 9, 10]
    assert got[1].idle_s == 0.0 and close(got[1].busy_s, 2e-3)
    assert close(got[2].idle_s, 1e-3) and close(got[2].busy_s, 1e-3)


class FakeRuntime:
    """The CUDA runtime's two calls as ctypes would call them: ``cudaEventElapsedTime(byref(float), start, end)``
    answering the planted code (and ms), ``cudaGetLastError`` counted."""

    def __init__(self, rc: int, ms: float = 0.0):
        self.rc, self.ms, self.cleared, self.handles = rc, ms, 0, []
        outer = self

        class Fn:
            argtypes = restype = None

            def __call__(self, out, start, end):
                outer.handles.append((start, end))
                if outer.rc == 0:
                    out._obj.value = outer.ms           # byref's target: the float the caller reads
                return outer.rc

        class Clear(Fn):
            def __call__(self):
                outer.cleared += 1
                return outer.rc

        self.cudaEventElapsedTime, self.cudaGetLastError = Fn(), Clear()


class Handle:
    def __init__(self, h):
        self.cuda_event = h


@pytest.mark.parametrize("rc, want, cleared", [(0, 2.5, 0), (gpu_timing.NOT_READY, None, 1)])
def test_the_runtime_call_reads_elapsed_or_not_ready(monkeypatch, rc, want, cleared):
    """One cudaEventElapsedTime per step, on the events' raw handles: its ms, or None while not ready (the
    runtime's last error cleared, as torch does after a query that is not ready)."""
    import ctypes
    fake = FakeRuntime(rc, 2.5)
    monkeypatch.setattr(ctypes, "PyDLL", lambda path: fake)
    elapsed = gpu_timing.runtime_elapsed("libcudart.so.13")
    assert elapsed(Handle(11), Handle(22)) == want
    assert fake.handles == [(11, 22)] and fake.cleared == cleared


def test_a_runtime_error_is_raised_with_its_code(monkeypatch):
    """Any other code is a fault: raised (the pipeline drops a poller that raises, with one log line)."""
    import ctypes
    fake = FakeRuntime(400)
    monkeypatch.setattr(ctypes, "PyDLL", lambda path: fake)
    with pytest.raises(RuntimeError, match="returned 400"):
        gpu_timing.runtime_elapsed("libcudart.so.13")(Handle(1), Handle(2))
    assert fake.cleared == 1


def test_without_a_loaded_runtime_torch_calls_are_the_fallback(monkeypatch):
    monkeypatch.setattr(gpu_timing, "loaded_cudart", lambda: None)
    assert gpu_timing.runtime_elapsed() is None

    class Ev:
        def __init__(self, done, t):
            self.done, self.t, self.queries = done, t, 0

        def query(self):
            self.queries += 1
            return self.done

        def elapsed_time(self, other):
            return other.t - self.t
    elapsed = gpu_timing.torch_elapsed()
    late_anchor = Ev(False, None)
    assert elapsed(late_anchor, Ev(True, 3.5)) is None           # the anchor has not run
    anchor = Ev(True, 1.0)
    assert elapsed(anchor, Ev(False, None)) is None              # the step has not finished
    assert anchor.queries == 0                                   # (its end is asked first)
    assert [elapsed(anchor, Ev(True, t)) for t in (3.5, 4.0, 6.0)] == [2.5, 3.0, 5.0]
    assert anchor.queries == 1                                   # an anchor found done is not asked again


def test_the_loaded_runtime_is_found_in_the_process_maps(monkeypatch, tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/libc.so.6\n"
                    "7f02-7f03 r-xp 0 08:01 2 /site/nvidia/cu13/lib/libcudart.so.13\n"
                    "7f04-7f05 r-xp 0 08:01 3 /usr/local/nvidia/lib64/libcuda.so.580.159.04\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(maps if p == "/proc/self/maps" else p, *a, **k))
    assert gpu_timing.loaded_cudart() == "/site/nvidia/cu13/lib/libcudart.so.13"
    assert gpu_timing.loaded_library("libcuda.so") == "/usr/local/nvidia/lib64/libcuda.so.580.159.04"   # not cudart
    assert gpu_timing.loaded_library("libnvToolsExt.so") is None


def test_only_measured_idle_goes_into_the_process_totals(gpu, monkeypatch):
    """The cost budget's device bound (gpu_timing.MEASURED): idle and busy of the steps whose idle was measured;
    a first step (or the first after a pause) says idle 0 without having measured it and stays out."""
    monkeypatch.setattr(gpu_timing, "MEASURED", [0, 0])
    timer = make(gpu)
    timer.stop(1, at(100.0))
    timer.stop(2, at(105.0))
    timer.forget_previous()                       # pause ... resume
    timer.stop(9, at(200.0))
    gpu.finish(102.0, 107.5, 201.0)
    gpu.now = 202.0
    samples(timer)
    assert gpu_timing.MEASURED == [3 * MS, round(2.5 * MS)]      # step 2 alone: 102 -> 105 idle, 105 -> 107.5 busy


needs_batch = pytest.mark.skipif(_event_times is None, reason="the C extension _event_times is not built here")


@needs_batch
def test_one_c_call_times_the_pending_steps_up_to_the_first_unfinished():
    """``_event_times.resolve``: each pending step's end event from its anchor, in order, until a call is not 0; the
    steps timed taken off and placed (samples, totals, events), the runtime's last error cleared after the call that
    stopped (as a per-step call clears it)."""
    g = FakeGpu("batch")
    anchor = g.event(True)
    anchor.done, anchor.t = True, 1.0
    ends = [g.event(True) for _ in range(3)]
    for e, t in zip(ends[:2], (3.5, 4.0)):
        e.done, e.t = True, t
    wall = 10**15
    pending = deque((e, n, wall + n * MS, (anchor, wall), n == 0, n != 1) for n, e in enumerate(ends))
    pool, spent, measured, out = [], [], [0, 0], []
    elapsed, clear = g.runtime()
    prev, code, released, head = _event_times.resolve(elapsed, clear, pending, None, pool, spent, measured, out)
    assert code == gpu_timing.NOT_READY and head is pending[0] and head[0] is ends[2] and released > 0
    assert prev == wall + 3 * MS                  # step 1 ended 3 ms after the anchor
    # step 0: fresh, so no idle; busy from its launch (the anchor's wall) to its end at +2.5 ms. Step 1: launched at
    # +1 ms while step 0 still ran (till +2.5 ms): queued behind it, idle 0, busy 0.5 ms
    assert out == [(0, wall, 2.5e-3, 0.0), (1, wall + MS, 0.5e-3, 0.0)]
    assert measured == [0, MS // 2]               # step 1's (measured: it had a previous step)
    assert pool == [ends[0]] and spent == [ends[1]]    # own / borrowed
    assert g.elapsed_calls == 3 and g.cleared == 1
    ends[2].done, ends[2].t = True, 9.0
    prev, code, _, head = _event_times.resolve(elapsed, clear, pending, prev, pool, spent, measured, out)
    assert (code, head, len(pending)) == (0, None, 0) and g.cleared == 1    # nothing to clear after an all-zero pass
    assert out[-1] == (2, wall + 2 * MS, 5e-3, 0.0) and prev == wall + 8 * MS   # idle 0: step 1 ran till +3 ms
    assert _event_times.resolve(elapsed, clear, pending, prev, pool, spent, measured, out)[:2] == (prev, 0)


@needs_batch
def test_the_c_call_names_what_is_wrong_with_its_arguments():
    g = FakeGpu("batch")
    elapsed, clear = g.runtime()
    with pytest.raises(ValueError, match="cudaEventElapsedTime"):
        _event_times.resolve(0, clear, deque(), None, [], [], [0, 0], [])
    with pytest.raises(TypeError, match="anchor"):
        _event_times.resolve(elapsed, clear, deque([(g.event(True), 1)]), None, [], [], [0, 0], [])
    with pytest.raises(AttributeError, match="cuda_event"):
        _event_times.resolve(elapsed, clear, deque([(object(), 1, 0, (object(), 0), False, True)]), None, [], [],
                             [0, 0], [])
    with pytest.raises(ValueError, match="measured"):
        _event_times.resolve(elapsed, clear, deque(), None, [], [], [0], [])


@needs_batch
def test_the_runtime_resolver_calls_the_loaded_runtime_by_address(monkeypatch):
    """``runtime_resolve`` hands the C call the loaded runtime's cudaEventElapsedTime and cudaGetLastError."""
    g = FakeGpu("batch")
    calls = []

    def elapsed(out, start, end):
        calls.append((start, end))
        out[0] = 2.0
        return 0

    class Lib:
        cudaEventElapsedTime = ELAPSED(elapsed)
        cudaGetLastError = CLEAR(lambda: 0)
    monkeypatch.setattr(ctypes, "CDLL", lambda path: Lib)
    resolve = gpu_timing.runtime_resolve("libcudart.so.13")
    anchor, end = g.event(True), g.event(True)
    out = []
    assert resolve(deque([(end, 1, 0, (anchor, 0), True, True)]), None, [], [], [0, 0], out)[:2] == (2 * MS, 0)
    assert calls == [(anchor.cuda_event, end.cuda_event)] and out == [(1, 0, 2e-3, 0.0)]
    monkeypatch.setattr(gpu_timing, "loaded_cudart", lambda: None)
    assert gpu_timing.runtime_resolve() is None


@needs_batch
def test_the_c_call_keeps_and_loses_no_reference():
    """Over 300 polls (each step placed, an unfinished one left, a race, a refused event): the events, the step
    objects and the anchor hold as many references after as before, beyond those the lists it filled hold."""
    import sys
    g = FakeGpu("batch")
    elapsed, clear = g.runtime()
    anchor = g.event(True)
    anchor.done, anchor.t = True, 0.0
    step, launch, wall = object(), 10**15 + 1, 10**15
    ev = g.event(True)
    ev.done, ev.t = True, 1.0
    late = g.event(True)
    objs = [anchor, step, ev, late]
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(300):
        pool, spent, out = [], [], []
        pending = deque([(ev, step, launch, (anchor, wall), False, True), (late, step, launch, (anchor, wall), True,
                                                                          False)])
        _event_times.resolve(elapsed, clear, pending, wall, pool, spent, [0, 0], out)
        racing = RacingDeque([(ev, step, launch, (anchor, wall), False, True) for _ in range(2)])
        _event_times.resolve(elapsed, clear, racing, None, pool, spent, [0, 0], out)
        g.elapsed = lambda s, e: (_ for _ in ()).throw(RuntimeError("returned 400"))
        _event_times.resolve(elapsed, clear, deque([(ev, step, launch, (anchor, wall), False, True)]), None, pool,
                             spent, [0, 0], out)
        g.elapsed = FakeGpu.elapsed.__get__(g)
        del pool, spent, out, pending, racing
    assert [sys.getrefcount(o) for o in objs] == before


class CarrierBase(abc.ABC):                      # (vLLM's AsyncOutput derives from an ABC: a class of ABCMeta)
    pass


class Carrier(CarrierBase):
    """Stands for vLLM's AsyncOutput: the step's output that holds its end event."""

    def __init__(self, event):
        self.copy_event = event


@pytest.mark.parametrize("way", ["python", "c"])
@pytest.mark.parametrize("case", ["carrier", "other result", "no anchor yet", "borrowing off", "queue full",
                                  "spent full", "fresh after a pause"])
def test_stop_by_result_does_what_stop_does(gpu, monkeypatch, case, way):
    """``stop_by_result`` writes ``stop``'s borrowing out (the Python closure, and its C copy
    ``_event_times.borrow_stop`` where built): for each branch, the same pending entries, drops, records, anchors and
    freshness as ``stop`` given the same steps."""
    import operator
    if way == "c" and gpu_timing._c_borrow_stop is None:
        pytest.skip("the C extension _event_times was not built")
    monkeypatch.setattr(gpu_timing, "MAX_PENDING", 3)
    monkeypatch.setattr(gpu_timing, "MAX_SPENT", 1)

    def run(use_closure: bool):
        g = FakeGpu(gpu.way)
        monkeypatch.setattr(gpu_timing, "_wall", lambda: at(g.now))
        timer = make(g)
        by_result = timer.stop_by_result(Carrier, operator.attrgetter("copy_event"), c=way == "c")
        assert (type(by_result) is gpu_timing._c_borrow_stop) == (way == "c")
        g.now = 99.0
        if case != "no anchor yet":
            timer.new_anchor()
        if case == "borrowing off":
            timer.borrow = False
        if case == "spent full":
            timer.spent.extend(["old1", "old2", "old3"])
        if case == "fresh after a pause":
            timer.fresh = False
            timer.forget_previous()
        for n in range(4 if case == "queue full" else 1):
            ev = vllm_event(g)
            result = Carrier(ev) if case != "other result" else object()
            if use_closure:
                by_result(n, at(100.0 + n), result)
            else:
                timer.stop(n, at(100.0 + n), ev if type(result) is Carrier else None)
        shape = [(e is not None, step, launch, anchor[1], fresh, own) for e, step, launch, anchor, fresh, own in
                 timer.pending]
        return shape, len(g.records), g.anchors, timer.dropped, list(timer.spent), timer.fresh
    assert run(True) == run(False)


def test_the_c_borrow_stop_keeps_and_loses_no_reference():
    """Over 1000 stops through each branch (borrowed, handed to ``stop`` with and without the event, a failing
    ``event_of``): the objects it touches hold as many references after as before, beyond the queued entries."""
    import operator
    import sys
    if gpu_timing._c_borrow_stop is None:
        pytest.skip("the C extension _event_times was not built")

    class Timer:
        def __init__(self):
            self.anchor, self.borrow, self.fresh = ("anchor", 1), True, True
            self.calls = []

        def stop(self, step, launch, event=None):
            self.calls.append(event)

    timer, pending, spent = Timer(), deque(), []
    ev, step, launch = object(), object(), object()
    result = Carrier(ev)
    stop = gpu_timing._c_borrow_stop(timer, Carrier, operator.attrgetter("copy_event"), pending, spent, timer.stop,
                                     10**9, 10**9)
    objs = [ev, step, launch, result, timer.anchor]
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(1000):
        stop(step, launch, result)                 # borrowed: queued
        stop(step, launch, object())               # no carrier: the timer's own
        timer.borrow = False
        stop(step, launch, result)                 # borrowing off: handed to stop with the event
        timer.borrow = True
        with pytest.raises(AttributeError):
            stop(step, launch, Carrier.__new__(Carrier))   # event_of fails: its error raised, nothing queued
    assert len(pending) == 1000 and timer.fresh is False and pending[0][4] is True and pending[1][4] is False
    assert timer.calls.count(None) == 1000 and timer.calls.count(ev) == 1000
    pending.clear()
    timer.calls.clear()
    assert [sys.getrefcount(o) for o in objs] == before
