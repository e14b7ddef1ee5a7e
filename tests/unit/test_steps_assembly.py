"""Export-side assembly on hand-built records whose answers are known: step attributes and links,
engine.request spans with their life (events, phases, steps, preemptions, prefill interference), the
split of the worker's CPU gap, and device idle given to its causes."""
import itertools

from vllm_w2ext.steps.assemble import Assembler
from vllm_w2ext.steps.facts import DeviceSample, ExecutionRecord, Finished, NewRequest, Stamp, StepFacts, StepRecord
from vllm_w2ext.steps.gaps import gap_attrs, overlap
from vllm_w2ext.steps.idle import attribute
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.vocab import ENGINE, FRONT, WORKER, Attr, Event, Span, device_idle_attr

MS = 1_000_000


def facts(num_reqs, new=(), preempted=(), resumed=(), scheduled=None, prefill=0, decode=None, first=()):
    return StepFacts(num_reqs, prefill, num_reqs if decode is None else decode, tuple(preempted), tuple(resumed),
                     0, 0, tuple(new), tuple(first), scheduled, num_reqs, 0)


def parents(headers):
    return (int(headers["traceparent"]), 99) if headers else None


def step_range(i, data, dur=10 * MS):
    return Range(Span.STEP, ENGINE, 1000 + i, 2000 + i, 0, i * 100 * MS, i * 100 * MS + dur, None, i, data=data)


def make(links="boundary"):
    ids = itertools.count(1)
    return Assembler(parents, lambda: next(ids), lambda: 777, links=links)


def test_request_life_steps_preemption_and_phases():
    a = make()
    new = NewRequest("r", {"traceparent": "42"}, 0.05, 10)            # arrived at 50 ms
    records = [
        StepRecord(facts(1, new=[new], prefill=10, decode=0, first=["r"]), True, (), 1),   # 1: prefill
        StepRecord(facts(1), True, (), 1),                                                  # 2
        StepRecord(facts(1, preempted=["r"]), True, (), 1),                                 # 3: preempted
        StepRecord(None, False, (), 1),                                                     # 4: nothing
        StepRecord(facts(1), True, (), 1),                                                  # 5: r waits
        StepRecord(facts(1, resumed=["r"]), True, (), 1),                                   # 6: resumed
        StepRecord(facts(1), True, (Finished("r", "FINISHED_LENGTH_CAPPED", 6),), 0),      # 7: finished
    ]
    out = a([step_range(i + 1, d) for i, d in enumerate(records)])
    (req,) = [r for r in out if r.name == Span.ENGINE_REQUEST]
    at = req.attrs
    # scheduling steps 1..7 minus step 4 (empty) = 6, minus step 5 (preempted) = 5
    assert (at[Attr.FIRST_STEP], at[Attr.LAST_STEP], at[Attr.NUM_STEPS]) == (1, 7, 5)
    assert at[Attr.QUEUE_S] == 0.05 and at[Attr.PREFILL_S] == 0.01 and at[Attr.DECODE_S] == 0.6
    assert (at[Attr.REQUEST_PREEMPTIONS], at[Attr.FINISH_REASON], at[Attr.OUTPUT_TOKENS]) == (1, "length", 6)
    assert [e[0] for e in req.events] == [Event.QUEUED, Event.SCHEDULED, Event.FIRST_TOKEN, Event.PREEMPTED,
                                          Event.RESUMED, Event.FINISHED]
    assert req.events[3][2] == {"reason": "kv_cache_full"} and req.events[-1][2] == {"reason": "length"}
    assert (req.trace_id, req.parent_id) == (42, 99)                  # in the request's own trace
    assert (req.start_ns, req.end_ns) == (100 * MS, 710 * MS) and req.events[0][1] == 50 * MS
    assert req.links == [(1001, 2001), (1007, 2007)]
    assert out[0].links == [(42, 99)] and out[0].attrs[Attr.PREFILL_TOKENS] == 10
    assert out[3].attrs == {Attr.STEP_ID: 4, Attr.MODEL_EXECUTED: False} and out[3].links is None


def test_prefill_interference_of_a_decoding_request():
    a = make()
    new = NewRequest("d", None, 0.0, 4)
    recs = [(StepRecord(facts(1, new=[new], prefill=4, decode=0, first=["d"]), True, (), 1), 10 * MS)]
    recs += [(StepRecord(facts(1), True, (), 1), 10 * MS)] * 3                        # decode-only: 10 ms
    other = NewRequest("p", None, 0.0, 500)
    recs += [(StepRecord(facts(2, new=[other], prefill=500, decode=1), True, (), 2), 40 * MS)]   # +30 ms
    recs += [(StepRecord(facts(2, prefill=0, decode=2), True, (Finished("d", "FINISHED_STOPPED", 5),), 1), 10 * MS)]
    out = a([step_range(i + 1, d, dur) for i, (d, dur) in enumerate(recs)])
    (req,) = [r for r in out if r.name == Span.ENGINE_REQUEST]
    assert req.attrs[Attr.STEPS_WITH_PREFILL] == 1
    assert req.attrs[Attr.PREFILL_INTERFERENCE_S] == 0.03
    assert req.attrs[Attr.FINISH_REASON] == "stop"


def test_all_links_mode_links_every_scheduled_request():
    a = make("all")
    new = [NewRequest("a", {"traceparent": "1"}, 0.0, 1), NewRequest("b", {"traceparent": "2"}, 0.0, 1)]
    out = a([step_range(1, StepRecord(facts(2, new=new), True, (), 2)),
             step_range(2, StepRecord(facts(2, scheduled=("a", "b")), True, (), 2))])
    assert out[1].links == [(1, 99), (2, 99)]


def test_the_front_end_request_carries_its_input_processing():
    """The front end records one range per request; the end of its input processing (its data) becomes the
    ``front.add_request`` child, from the request's start; a request range without it gets none."""
    a = make()
    req = Range(Span.REQUEST, FRONT, 5, 6, 0, 10 * MS, 90 * MS, {Attr.REQUEST_ID: "q"}, data=12 * MS)
    bare = Range(Span.REQUEST, FRONT, 7, 8, 0, 20 * MS, 80 * MS)
    out = a([req, bare])
    adds = [r for r in out if r.name == Span.ADD_REQUEST]
    assert len(adds) == 1 and req.data is None
    (add,) = adds
    assert (add.trace_id, add.parent_id, add.start_ns, add.end_ns, add.role) == (5, 6, 10 * MS, 12 * MS, FRONT)
    assert add.span_id not in (6, 8) and {r.name for r in out} == {Span.REQUEST, Span.ADD_REQUEST}


def test_request_without_context_gets_its_own_trace():
    a = make()
    out = a([step_range(1, StepRecord(facts(1, new=[NewRequest("x", None, 0.0, 1)]), True,
                                      (Finished("x", "FINISHED_ABORTED", 0),), 0))])
    assert out[-1].trace_id == 777 and out[-1].parent_id == 0 and out[0].links == []
    assert out[-1].attrs[Attr.FINISH_REASON] == "abort"


def test_gap_split_by_engine_intervals():
    # previous execution ended at 100; this one starts at 200. Schedule ran 150-170, update 90-120,
    # engine idle (between steps) 170-180: 20 + 20 + 10 = 50 of the 100 ns gap; the rest is "other".
    stamp = Stamp(1, 2, 3, 150, 170, 90, 120, 170, 180, 1)
    a = gap_attrs(100, 200, stamp)
    assert a == {Attr.GAP_CPU: 100e-9, Attr.GAP_SCHEDULE: 20e-9, Attr.GAP_UPDATE: 20e-9,
                 Attr.GAP_ENGINE_IDLE: 10e-9, Attr.GAP_OTHER: 50e-9}
    assert overlap(0, 10, 0, 5) == 0          # an unset interval (start 0) counts nothing


def test_attribute_gives_each_nanosecond_one_cause_by_priority():
    # window 0-100: schedule 10-40 and engine_loop 30-60 overlap (schedule wins 30-40), rest unattributed
    got = attribute(0, 100, [("engine_loop", 30, 60), ("schedule", 10, 40), ("ipc", 200, 300)])
    assert got == {"unattributed": 10 + 40, "schedule": 30, "engine_loop": 20}
    assert sum(got.values()) == 100 and attribute(5, 5, []) == {}


def execute(step, start, end, stamp, dispatch, prev_end=0, cuda=False):
    return Range(Span.WORKER_EXECUTE, WORKER, 1, 10 + step, 2, start, end, {}, step,
                 data=ExecutionRecord(stamp, prev_end, dispatch, cuda))


def device_samples(*samples):
    """The record a worker's export thread emits with the CUDA-event samples it resolved (plain tuples)."""
    return Range(Span.DEVICE_SAMPLES, WORKER, 7, 8, 0, 0, 0, None, -1, data=tuple(tuple(s) for s in samples))


def child(name, step, start, end):
    return Range(name, WORKER, 1, 100 + step, 10 + step, start, end, None, step, nested=True)


def test_cpu_build_device_idle_by_cause():
    # step 1: execute 0-100 (forward 10-90), sample 100-120.
    # step 2: the EngineCore updated 125-135, had requests, looped 135-140, scheduled 140-160,
    # dispatched at 165; the worker started at 170 and its forward at 180.
    s1 = Stamp(1, 2, 1, 0, 0, 0, 0, 0, 0, 1)
    s2 = Stamp(1, 2, 2, 140, 160, 125, 135, 130, 135, 3)
    ranges = [child(Span.FORWARD, 1, 10, 90), execute(1, 0, 100, s1, 0), child(Span.WORKER_SAMPLE, 1, 100, 120),
              child(Span.FORWARD, 2, 180, 260), execute(2, 170, 270, s2, 165, prev_end=120)]
    out = make()(ranges)
    ex2 = next(r for r in out if r.name == Span.WORKER_EXECUTE and r.step == 2)
    a = ex2.attrs
    assert a[Attr.DEVICE_IDLE] == 90e-9 and a[Attr.DEVICE_BUSY] == 80e-9
    assert (a[Attr.DEVICE_IDLE_START], a[Attr.DEVICE_IDLE_END]) == (90, 180)
    # 90-120 sample (the previous step after its forward), 120-125 ipc back, 125-135 update,
    # 135-140 engine_loop, 140-160 schedule, 160-165 engine_loop, 165-170 ipc, 170-180 prepare_inputs
    want = {"sample": 30, "ipc": 10, "update_from_output": 10, "engine_loop": 10, "schedule": 20,
            "prepare_inputs": 10}
    assert {c: round(a[device_idle_attr(c)] * 1e9) for c in want} == want
    assert a[Attr.DEVICE_IDLE_CAUSE] == "sample"
    assert sum(v for k, v in a.items() if k.startswith("vllm.device.idle.")) == a[Attr.DEVICE_IDLE]


def test_no_work_when_the_engine_had_no_request():
    s1 = Stamp(1, 2, 1, 0, 0, 0, 0, 0, 0, 1)
    s2 = Stamp(1, 2, 2, 1000, 1010, 0, 0, 100, 1000, 0)        # idle between steps, nothing pending
    out = make()([child(Span.FORWARD, 1, 10, 90), execute(1, 0, 100, s1, 0),
                  child(Span.FORWARD, 2, 1020, 1100), execute(2, 1015, 1110, s2, 1012, prev_end=100)])
    a = next(r for r in out if r.step == 2 and r.name == Span.WORKER_EXECUTE).attrs
    assert a[Attr.DEVICE_IDLE_CAUSE] == "no_work" and round(a[device_idle_attr("no_work")] * 1e9) == 900


def test_gpu_samples_are_placed_at_their_launch_and_held_until_then():
    asm = make()
    s1 = Stamp(1, 2, 1, 0, 0, 0, 0, 0, 0, 1)
    s2 = Stamp(1, 2, 2, 960, 990, 900, 950, 0, 0, 1)
    s3 = Stamp(1, 2, 3, 0, 0, 0, 0, 0, 0, 1)
    # step 2 launched at 1000 after 100 ns of GPU idle; its sample arrives in a later batch, after step 3's
    # execution, in the record the export thread emits (never exported itself)
    first = asm([execute(1, 0, 50, s1, 0, cuda=True), execute(2, 1000, 1050, s2, 995, prev_end=50, cuda=True)])
    assert first == []                                            # both held: no device sample yet
    out = asm([execute(3, 2000, 2050, s3, 0, prev_end=1050, cuda=True),
               device_samples(DeviceSample(1, 0, 5e-7, 0.0), DeviceSample(2, 1000, 6e-7, 1e-7))])
    assert all(r.name != Span.DEVICE_SAMPLES for r in out)
    a = next(r for r in out if r.step == 2).attrs
    assert a[Attr.DEVICE_IDLE] == 1e-7 and a[Attr.DEVICE_CLOCK] == "cuda_events"
    # window 900-1000: update 900-950, schedule 960-990, ipc 995-1000 (dispatch -> worker), the rest
    # (950-960, 990-995) unattributed: the step's start was not recorded in this stamp
    assert {c: round(a[device_idle_attr(c)] * 1e9) for c in
            ("update_from_output", "schedule", "ipc", "unattributed")} == \
        {"update_from_output": 50, "schedule": 30, "ipc": 5, "unattributed": 15}
    assert [r.step for r in out] == [1, 2] and [r.step for r in asm.drain()] == [3]


def test_gpu_input_preparation_before_the_forward_launch_is_idle_prepare_inputs():
    # step 2: execute_model starts at 1000, the forward is launched at 1400 (the sample's launch: the V2 runner's
    # worker.forward_launch), the GPU finished step 1 at 600. Idle 600-1400: the EngineCore's update and
    # schedule, the dispatch, then 1000-1400 the worker preparing inputs (the GPU ran nothing of the step's forward)
    asm = make()
    s1 = Stamp(1, 2, 1, 0, 0, 0, 0, 0, 0, 1)
    s2 = Stamp(1, 2, 2, 900, 980, 600, 880, 0, 0, 1)
    asm([execute(1, 0, 50, s1, 0, cuda=True), execute(2, 1000, 1500, s2, 990, prev_end=50, cuda=True)])
    out = asm([device_samples(DeviceSample(1, 0, 6e-7, 0.0), DeviceSample(2, 1400, 3e-7, 8e-7))])
    a = next(r for r in out if r.step == 2).attrs
    assert (a[Attr.DEVICE_IDLE_START], a[Attr.DEVICE_IDLE_END]) == (600, 1400)
    assert {c: round(a[device_idle_attr(c)] * 1e9) for c in
            ("update_from_output", "schedule", "ipc", "prepare_inputs", "unattributed")} == \
        {"update_from_output": 280, "schedule": 80, "ipc": 10, "prepare_inputs": 400, "unattributed": 30}
    assert a[Attr.DEVICE_IDLE_CAUSE] == "prepare_inputs" and a[Attr.DEVICE_BUSY] == 3e-7


def test_worker_execution_gets_gap_attributes():
    stamp = Stamp(1, 2, 3, 150, 170, 90, 120, 170, 180, 1)
    (out,) = make()([execute(3, 200, 300, stamp, 0, prev_end=100)])
    assert out.attrs[Attr.GAP_CPU] == 100e-9 and out.data is None


def test_round_trip_between_execute_and_sample_is_ipc_not_sample():
    # the worker's execute_model ended at 100, but sample_tokens was dispatched back only at 150
    s1 = Stamp(1, 2, 1, 0, 0, 0, 0, 0, 0, 1)
    s2 = Stamp(1, 2, 2, 0, 0, 0, 0, 0, 0, 1)
    out = make()([child(Span.FORWARD, 1, 10, 90), execute(1, 0, 100, s1, 0), child(Span.WORKER_SAMPLE, 1, 150, 160),
                  child(Span.FORWARD, 2, 170, 200), execute(2, 170, 210, s2, 0, prev_end=160)])
    a = next(r for r in out if r.name == Span.WORKER_EXECUTE and r.step == 2).attrs
    assert {c: round(a.get(device_idle_attr(c), 0) * 1e9) for c in ("sample", "ipc", "unattributed")} == \
        {"sample": 10 + 10, "ipc": 50, "unattributed": 10}


def test_gpu_samples_of_the_previous_batch_land_after_a_long_batch():
    # a 200 ms export interval of 1 ms steps: 100 executions per batch, more than DeviceIdle.KEEP_STEPS; the
    # last steps of batch 1 were still on the GPU at its poll, so their samples come at the end of batch 2
    asm = make()
    st = Stamp(1, 2, 0, 0, 0, 0, 0, 0, 0, 1)
    sample = lambda s: DeviceSample(s, s * 1000, 5e-7, 1e-7)          # noqa: E731
    first = asm([execute(s, s * 1000, s * 1000 + 500, st._replace(step=s), 0, prev_end=s * 1000 - 500, cuda=True)
                 for s in range(1, 101)]
                + [device_samples(*(sample(s) for s in range(1, 99)))])
    assert sorted(r.step for r in first) == list(range(1, 99))       # 99 and 100 held for their samples
    out = asm([execute(s, s * 1000, s * 1000 + 500, st._replace(step=s), 0, prev_end=s * 1000 - 500, cuda=True)
               for s in range(101, 201)]
              + [device_samples(*(sample(s) for s in range(99, 199)))])
    late = {r.step: r.attrs for r in out if r.step in (99, 100)}
    assert set(late) == {99, 100}
    assert all(a[Attr.DEVICE_CLOCK] == "cuda_events" and a[Attr.DEVICE_IDLE] == 1e-7 for a in late.values())
    assert len(asm.device.runs) == asm.device.KEEP_STEPS


def test_cpu_build_no_idle_measured_across_a_pause():
    """After the hooks were paused and resumed (hooks.control), the first execution comes with no previous
    end (worker.forget_previous_step); the 10 s the paused steps ran unrecorded are not device idle."""
    s1 = Stamp(1, 2, 1, 0, 0, 0, 0, 0, 0, 1)
    s2 = Stamp(1, 2, 2, 10_000_000_000, 10_000_000_010, 0, 0, 0, 10_000_000_000, 0)
    out = make()([child(Span.FORWARD, 1, 10, 90), execute(1, 0, 100, s1, 0),
                  child(Span.FORWARD, 2, 10_000_000_020, 10_000_000_100),
                  execute(2, 10_000_000_015, 10_000_000_110, s2, 10_000_000_012, prev_end=0)])
    a = next(r for r in out if r.step == 2 and r.name == Span.WORKER_EXECUTE).attrs
    assert a[Attr.DEVICE_IDLE] == 0.0 and Attr.DEVICE_IDLE_CAUSE not in a and Attr.GAP_CPU not in a
    assert a[Attr.DEVICE_BUSY] == 80e-9 and a[Attr.DEVICE_IDLE_UNKNOWN] is True    # not measured, not zero


def test_gpu_no_idle_measured_across_a_pause():
    """The CUDA-event twin of the test above: the sample of the first step after a resume carries the GPU's
    idle time across the pause (the timer resolves every pair it recorded), and the execution record without a
    previous end makes the export side keep its busy time and drop that idle."""
    s1 = Stamp(1, 2, 1, 0, 0, 0, 0, 0, 0, 1)
    s2 = Stamp(1, 2, 2, 10_000_000_000, 10_000_000_010, 0, 0, 0, 10_000_000_000, 0)
    asm = make()
    out = asm([execute(1, 0, 100, s1, 0, prev_end=0, cuda=True),
               execute(2, 10_000_000_015, 10_000_000_110, s2, 10_000_000_012, prev_end=0, cuda=True),
               device_samples(DeviceSample(1, 0, 9e-8, 0.0), DeviceSample(2, 10_000_000_015, 8e-8, 9.9))])
    a = next(r for r in out if r.step == 2).attrs
    assert a[Attr.DEVICE_IDLE] == 0.0 and Attr.DEVICE_IDLE_CAUSE not in a and Attr.GAP_CPU not in a
    assert a[Attr.DEVICE_BUSY] == 8e-8 and a[Attr.DEVICE_CLOCK] == "cuda_events"
    assert a[Attr.DEVICE_IDLE_UNKNOWN] is True
