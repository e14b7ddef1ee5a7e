"""The engine step's range as raw values: what ``_cfront.step_raw`` writes (the C step post appends it in place of the
list on the steady decode) ``steps.facts.expand_raw_step`` reads back into the same list, value for value and type
for type (a bool stays a bool, an empty tuple a tuple, None None); every range the layout cannot carry exactly is
refused (the post then appends the list, as before), and the export side's reader takes either."""
import pytest

from vllm_w2ext.hooks import engine_core  # noqa: F401  (sets the C step post up: step_pre_setup, step_raw_setup)
from vllm_w2ext.steps.facts import RAW_MAGIC, RAW_STEP, expand_raw_step
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.vocab import ENGINE, Span

_cfront = pytest.importorskip("vllm_w2ext.hooks._cfront", reason="the C extension is not built")

T = 1_786_000_000_000_000_000                       # a wall-clock time in ns (2026)
FACTS = (64, 0, 64, (), (), 0, 2, (), (), None, 64, 3)             # the steady decode's StepFacts
STAMP = (2**128 - 1, 2**64 - 1, 41, T + 10, T + 20, T - 40, T - 30, T - 50, T, 64)
WORKER = (STAMP, T - 45, True, 64, T + 30, T + 900, None, T + 40, T + 800, None, T + 910, T + 990, None)


def step_range(trace=0xABCDEF << 70, span=12345, data_changes: dict | None = None, **changes) -> list:
    data = [FACTS, True, (), 67, (0, 0, 0), T + 10, T + 20, T - 40, T - 30, 40, 1, None]
    for i, v in (data_changes or {}).items():
        data[i] = v
    r = [Span.STEP, ENGINE, trace, span, 0, T, T + 1000, 41, None, None, None, 1, tuple(data)]
    for i, v in changes.items():
        r[int(i[1:])] = v
    return r


def strictly_equal(a, b) -> bool:
    """Equal and of the same types all the way down (``True == 1``, ``() == ()`` of another type would pass ``==``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(strictly_equal(x, y) for x, y in zip(a, b))
    return a == b


FITTING = {
    "steady decode": step_range(),
    "worker on this thread (TP=1), CUDA-timed": step_range(data_changes={11: WORKER}),
    "worker, no CUDA events": step_range(data_changes={11: (STAMP, 0, False) + WORKER[3:]}),
    "nothing scheduled (no facts)": step_range(data_changes={0: None, 1: False}),
    "light steps before it": step_range(data_changes={4: (5, 2, 5)}),
    "the largest ids": step_range(trace=2**128 - 1, span=2**64 - 1),
    "id 1 and negative ints": step_range(trace=1, span=1, data_changes={9: -1, 3: 0}),
    "int64's edges": step_range(_5=-(2**63), _6=2**63 - 1),
    "the name an equal str": step_range(_0="engine." + "step"),
}

REFUSED = {
    "a trace id of 129 bits": step_range(trace=2**128),
    "a negative span id": step_range(span=-1),
    "a time past int64": step_range(_6=2**63),
    "a bool for an int": step_range(_7=True),
    "a float for an int": step_range(_5=float(T)),
    "another span's name": step_range(_0=Span.SCHEDULE),
    "a parent": step_range(_4=7),
    "attributes": step_range(_8={"a": 1}),
    "links": step_range(_9=[(1, 2)]),
    "an error": step_range(_10="KeyError"),
    "pushed on the thread's stack (marks)": step_range(_11=True),
    "requests freed in the step": step_range(data_changes={2: (("r1", "FINISHED_STOPPED", 9),)}),
    "a preempted request": step_range(data_changes={0: FACTS[:3] + (("r1",),) + FACTS[4:]}),
    "a new request": step_range(data_changes={0: FACTS[:7] + (("r2", 16, 0),) + FACTS[8:]}),
    "the scheduled ids (VLLM_W2EXT_STEP_LINKS=all)": step_range(data_changes={0: FACTS[:9] + (("r1",),) + FACTS[10:]}),
    "an execution that failed": step_range(data_changes={11: WORKER[:6] + ("KeyError",) + WORKER[7:]}),
    "a sample that failed": step_range(data_changes={11: WORKER[:12] + ("RuntimeError",)}),
    "executed not a bool": step_range(data_changes={1: 1}),
    "SkippedSteps of two": step_range(data_changes={4: (0, 0)}),
    "a list for a tuple": step_range(data_changes={0: list(FACTS)}),
    "no StepRecord": step_range(_12=None),
    "a short range": step_range()[:12],
    "a tuple (an Interval)": tuple(step_range()),
}


@pytest.mark.parametrize("name", list(FITTING))
def test_what_the_c_post_writes_reads_back_as_the_same_range(name):
    r = FITTING[name]
    raw = _cfront.step_raw(r)
    assert type(raw) is bytes and len(raw) == RAW_STEP.size
    assert strictly_equal(expand_raw_step(raw), r)
    via_reader, direct = Range.from_record(raw), Range.from_record(list(r))     # the export side's reader
    assert all(strictly_equal(getattr(via_reader, k), getattr(direct, k)) for k in Range.__slots__)


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_the_layout_cannot_carry_is_refused(name):
    assert _cfront.step_raw(REFUSED[name]) is None


def test_the_two_ends_agree_on_the_layout():
    _cfront.step_raw_setup(RAW_STEP.size, RAW_MAGIC)                    # what engine_core did at import
    with pytest.raises(ValueError, match="RAW_STEP of 336 bytes"):
        _cfront.step_raw_setup(RAW_STEP.size - 8, RAW_MAGIC)
    with pytest.raises(ValueError, match="magic"):
        _cfront.step_raw_setup(RAW_STEP.size, RAW_MAGIC + 0x100)
    with pytest.raises(ValueError, match="not a RAW_STEP record"):
        expand_raw_step(bytes(RAW_STEP.size))
