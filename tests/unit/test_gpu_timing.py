"""hooks.gpu_timing: vLLM's thread only records events; the export thread resolves finished pairs into
DeviceSamples (busy = start->end, idle = previous end -> start), recycles events, and restarts the idle
chain after steps were dropped. Stand-in events with planted GPU timestamps (no torch, no GPU)."""
from collections import deque

from vllm_w2ext.hooks import gpu_timing
from vllm_w2ext.hooks.gpu_timing import GpuTimer
from vllm_w2ext.steps.facts import DeviceSample


class FakeGpu:
    """A stream whose events complete when the test says, at planted GPU times (ms)."""

    def __init__(self):
        self.created = 0
        self.records = []
        self.stream_lookups = []
        self.queue = []                   # recorded events the GPU has not reached, in stream order

    def event(self, enable_timing):
        assert enable_timing
        self.created += 1

        class Ev:
            t = None
            done = False

            def query(self):
                return self.done

            def elapsed_time(self, other):
                return other.t - self.t

        return Ev()

    def record(self, e, stream):
        e.done, e.t = False, None
        self.records.append((e, stream))
        self.queue.append(e)

    def current(self, device):
        self.stream_lookups.append(device)
        return (7, device, 1)

    def finish(self, *times_ms):
        """The GPU reaches the oldest unfinished recorded events at these times."""
        for t in times_ms:
            e = self.queue.pop(0)
            e.done, e.t = True, t


def make():
    gpu = FakeGpu()
    return gpu, GpuTimer((gpu.event, gpu.record, lambda e: e.query(), gpu.current, lambda **ids: ("stream", ids), 0))


def test_poll_resolves_finished_steps_with_busy_and_idle():
    gpu, timer = make()
    s1 = timer.start()
    timer.stop(s1, 1, 100)
    gpu.finish(0.0, 2.0)                                        # step 1: 0-2 ms; the GPU is idle after it
    s2 = timer.start()                                          # so step 2 records its own start event
    timer.stop(s2, 2, 200)
    assert s2 is not s1 and len(gpu.records) == 4
    assert timer.poll()[0][:2] == (1, 100)
    gpu.finish(2.5, 4.5)                                        # step 2: 2.5-4.5 ms (0.5 ms idle before it)
    got = [DeviceSample._make(x) for x in timer.poll()]
    assert [(x.step, x.launch_ns) for x in got] == [(2, 200)]
    assert got[0].busy_s == 2e-3 and abs(got[0].idle_s - 0.5e-3) < 1e-12
    timer.stop(timer.start(), 3, 300)                           # step 2 done: step 3 records its start
    gpu.finish(5.0, 5.5)                                        # 0.5 ms idle again, 0.5 ms busy
    (x,) = timer.poll()
    assert x[0] == 3 and abs(x[3] - 0.5e-3) < 1e-12 and x[2] == 0.5e-3
    # the stream is looked up by id each time but built once; events are recycled through the pool
    assert {id(s) for _, s in gpu.records} == {id(gpu.records[0][1])}
    created = gpu.created
    timer.stop(timer.start(), 4, 400)
    assert gpu.created == created                               # step 4 reused two pooled events


def test_a_step_queued_behind_the_previous_one_reuses_its_end_event():
    """Async scheduling: step 2 starts while the GPU still runs step 1, so step 1's end event is step 2's start
    (no record; idle 0); its busy time runs from step 1's end. Each event goes back to the pool once."""
    gpu, timer = make()
    timer.stop(timer.start(), 1, 100)
    s2 = timer.start()                                          # step 1's end has not run on the GPU yet
    assert s2 is gpu.records[1][0] and len(gpu.records) == 2    # reused, nothing recorded
    timer.stop(s2, 2, 200)
    s3 = timer.start()
    timer.stop(s3, 3, 300)
    assert len(gpu.records) == 4                                # s1, e1 = s2, e2 = s3, e3
    gpu.finish(0.0, 2.0, 4.0, 7.0)
    got = [DeviceSample._make(x) for x in timer.poll()]
    assert [(x.step, x.busy_s, x.idle_s) for x in got] == [(1, 2e-3, 0.0), (2, 2e-3, 0.0), (3, 3e-3, 0.0)]
    assert len(timer.pool) == len({id(e) for e in timer.pool}) == 3    # s1, e1, e2 once each; e3 kept
    assert timer.prev_end is gpu.records[3][0]
    gpu.finish()
    timer.stop(timer.start(), 4, 400)                           # e3 done: a new start, from the pool
    assert gpu.created == 4


def test_dropped_steps_restart_the_idle_chain(monkeypatch):
    monkeypatch.setattr(gpu_timing, "MAX_PENDING", 2)
    gpu, timer = make()
    for step in (1, 2, 3):                                      # step 1 is dropped: no one polled
        timer.stop(timer.start(), step, step * 100)
        gpu.finish(step * 10.0, step * 10.0 + 1)                # each step finished before the next started
    assert timer.dropped == 1 and [p[2] for p in timer.pending] == [2, 3]
    got = timer.poll()
    assert [x[0] for x in got] == [2, 3]
    assert got[0][3] == 0.0                                     # no idle across the dropped step
    assert abs(got[1][3] - 9e-3) < 1e-12                        # 21 -> 30 ms


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
            self.items.popleft()                                # the drop, on vLLM's thread
        return self.items.popleft()

    def appendleft(self, x):
        self.items.appendleft(x)


def test_a_head_dropped_while_polling_is_not_resolved_unfinished():
    gpu, timer = make()
    timer.stop(timer.start(), 1, 100)
    gpu.finish(0.0, 1.0)                                        # step 1 finished on the GPU, step 2 not yet
    timer.stop(timer.start(), 2, 200)
    timer.pending = RacingDeque(timer.pending)
    assert timer.poll() == ()                                   # step 2 unfinished: no elapsed_time on it
    assert [p[2] for p in timer.pending.items] == [2] and timer.prev_end is None


def test_a_resume_does_not_reuse_an_event_from_before_the_pause():
    """hooks.control resumed the hooks: the paused steps ran unrecorded, so the first step after the resume
    records its own start even though the last recorded end is still pending. Its sample's idle spans the
    pause (1000 ms here); the export side drops it, because the step's execution record has no previous end
    (test_steps_assembly.test_gpu_no_idle_measured_across_a_pause)."""
    gpu, timer = make()
    timer.stop(timer.start(), 1, 100)
    timer.forget_previous()                                     # pause ... resume
    s9 = timer.start()                                          # step 1's end still pending, but not reused
    assert s9 is not gpu.records[1][0]                          # across the pause
    timer.stop(s9, 9, 900)
    gpu.finish(0.0, 1.0, 1001.0, 1002.0)
    timer.stop(timer.start(), 10, 1000)
    gpu.finish(1003.0, 1004.0)
    got = [DeviceSample._make(x) for x in timer.poll()]
    assert [x.step for x in got] == [1, 9, 10] and got[1].busy_s == 1e-3
    assert abs(got[1].idle_s - 1.0) < 1e-12                     # 1 -> 1001 ms, across the pause
    assert abs(got[2].idle_s - 1e-3) < 1e-12                    # 1002 -> 1003 ms
