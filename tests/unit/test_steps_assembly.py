"""Export-side assembly: step attributes and links, engine.request spans with their step counts, and
the split of the worker's gap, on hand-built records whose answers are known."""
import itertools

from vllm_w2ext.steps.assemble import Assembler
from vllm_w2ext.steps.facts import ExecutionRecord, Stamp, StepFacts, StepRecord
from vllm_w2ext.steps.gaps import gap_attrs, overlap
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.vocab import ENGINE, WORKER, Attr, Span


def facts(num_reqs, new=(), preempted=(), resumed=(), scheduled=None, prefill=0):
    return StepFacts(num_reqs, prefill, num_reqs, tuple(preempted), tuple(resumed), 0, tuple(new), scheduled,
                     num_reqs, 0)


def parents(headers):
    return (int(headers["traceparent"]), 99) if headers else None


def step_range(i, data):
    return Range(Span.STEP, ENGINE, 1000 + i, 2000 + i, 0, i * 100, i * 100 + 50, None, i, data=data)


def make(links="boundary"):
    ids = itertools.count(1)
    return Assembler(parents, lambda: next(ids), lambda: 777, links=links)


def test_request_span_counts_scheduling_steps_minus_preemption():
    a = make()
    tp = {"traceparent": "42"}
    records = [
        StepRecord(facts(1, new=[("r", tp)], prefill=10), True, ()),          # step 1: first scheduled
        StepRecord(facts(1), True, ()),                                        # 2
        StepRecord(facts(1, preempted=["r"]), True, ()),                       # 3: preempted after it ran
        StepRecord(None, False, ()),                                           # 4: nothing scheduled
        StepRecord(facts(1), True, ()),                                        # 5: others ran, r waited
        StepRecord(facts(1, resumed=["r"]), True, ()),                         # 6: resumed
        StepRecord(facts(1), True, ("r",)),                                    # 7: finished
    ]
    out = a([step_range(i + 1, d) for i, d in enumerate(records)])
    (req,) = [r for r in out if r.name == Span.ENGINE_REQUEST]
    # scheduling steps 1..7 minus step 4 (empty) = 6, minus step 5 (preempted) = 5
    assert req.attrs == {Attr.REQUEST_ID: "r", Attr.FIRST_STEP: 1, Attr.LAST_STEP: 7, Attr.NUM_STEPS: 5}
    assert (req.trace_id, req.parent_id) == (42, 99)                # in the request's own trace
    assert (req.start_ns, req.end_ns) == (100, 750)
    assert req.links == [(1001, 2001), (1007, 2007)]
    first = out[0]
    assert first.links == [(42, 99)] and first.attrs[Attr.NUM_REQS] == 1 and first.attrs[Attr.PREFILL_TOKENS] == 10
    assert out[3].attrs == {Attr.STEP_ID: 4, Attr.MODEL_EXECUTED: False} and out[3].links is None


def test_all_links_mode_links_every_scheduled_request():
    a = make("all")
    new = [("a", {"traceparent": "1"}), ("b", {"traceparent": "2"})]
    out = a([step_range(1, StepRecord(facts(2, new=new), True, ())),
             step_range(2, StepRecord(facts(2, scheduled=("a", "b")), True, ()))])
    assert out[1].links == [(1, 99), (2, 99)]


def test_request_without_context_gets_its_own_trace():
    a = make()
    out = a([step_range(1, StepRecord(facts(1, new=[("x", None)]), True, ("x",)))])
    assert out[-1].trace_id == 777 and out[-1].parent_id == 0 and out[0].links == []


def test_gap_split_by_engine_intervals():
    # previous execution ended at 100; this one starts at 200. Schedule ran 150-170, update 90-120,
    # engine idle (between steps) 170-180: 20 + 20 + 10 = 50 of the 100 ns gap; the rest is "other".
    stamp = Stamp(1, 2, 3, 150, 170, 90, 120, 170, 180)
    a = gap_attrs(100, 200, stamp)
    assert a == {Attr.GAP_CPU: 100e-9, Attr.GAP_SCHEDULE: 20e-9, Attr.GAP_UPDATE: 20e-9,
                 Attr.GAP_ENGINE_IDLE: 10e-9, Attr.GAP_OTHER: 50e-9}
    assert overlap(0, 10, 0, 5) == 0          # an unset interval (start 0) counts nothing


def test_worker_execution_gets_gap_attributes():
    stamp = Stamp(1, 2, 3, 150, 170, 90, 120, 170, 180)
    r = Range(Span.WORKER_EXECUTE, WORKER, 1, 5, 2, 200, 300, {Attr.WORKER_TOKENS: 1}, 3,
              data=ExecutionRecord(stamp, 100))
    (out,) = make()([r])
    assert out.attrs[Attr.GAP_CPU] == 100e-9 and out.attrs[Attr.WORKER_TOKENS] == 1 and out.data is None
