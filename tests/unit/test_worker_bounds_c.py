"""``_cfront.worker_bounds``, the C copy of ``engine_core._worker_bounds`` the engine step's post runs where the
extension was built: on planted bounds buffers, the same WorkerBounds tuple (or None), the same buffers left, the
same ``Mode`` state and the same calls of the device timer's stop and of ``forget``, case by case, as the Python
definition, with the buffers the hooks use (``bounds.buffer()``: a ``_cfront.Slot``, its last call held raw). Any other
buffer is refused with a TypeError."""
from collections import deque

import pytest

from vllm_w2ext.hooks import bounds, engine_core
from vllm_w2ext.steps.facts import STAMP_STEP, WorkerBounds

_cfront = pytest.importorskip("vllm_w2ext.hooks._cfront", reason="the C extension is not built")


class Mode:
    def __init__(self, stop: bool, raises: bool = False):
        self.last_end = 500
        self.calls = []
        self.device_stop = self._stop if stop else None
        self.raises = raises

    def _stop(self, step, launch, result):
        self.calls.append(("stop", step, launch, result))
        if self.raises:
            raise RuntimeError("planted stop fault")

    def forget(self):
        self.calls.append(("forget",))
        self.last_end = 0


class SO:
    total_num_scheduled_tokens = 7


STAMP = (11, 22, 5, 100, 110, 0, 0, 90, 95, 1)      # a Stamp: its step (STAMP_STEP) is 5


def planted(case: dict) -> tuple:
    """Fresh buffers holding the case's Bounds tuples (oldest first)."""
    bufs = tuple(bounds.buffer() for _ in range(4))
    for buf, key in zip(bufs, ("ex", "fw", "la", "sa")):
        buf.extend(case.get(key, ()))
    return bufs


def run(fn, case: dict, monkeypatch, setup) -> tuple:
    bufs = planted(case)
    mode = Mode(case.get("stop", True), case.get("raises", False))
    setup(bufs, mode)
    try:
        out = fn(case.get("stamp", STAMP))
        error = None
    except Exception as e:               # noqa: BLE001 (compared between the two)
        out, error = None, (type(e), str(e))
    return out, error, [list(b) for b in bufs], mode.last_end, mode.calls


KE = KeyError("planted")
CASES = {
    "nothing": {},
    "a sample alone": {"sa": [(1, 2, "r", None)]},
    "execution only": {"ex": [(100, 200, SO(), None)]},
    "v1 forward and sample": {"ex": [(100, 200, SO(), None)], "fw": [(120, 180, None, None)],
                              "sa": [(210, 230, "result", None)]},
    "v2 launch, older calls left": {"ex": [(1, 2, SO(), None), (100, 200, SO(), None)],
                                    "la": [(3, 4, None, None), (130, 131, None, None)],
                                    "sa": [(5, 6, "old", None), (210, 230, "result", None)]},
    "v1 forward, no sample": {"ex": [(100, 200, SO(), None)], "fw": [(120, 180, None, None)]},
    "failed execution": {"ex": [(100, 200, SO(), KE)], "sa": [(210, 230, "result", None)]},
    "failed forward and sample": {"ex": [(100, 200, SO(), None)], "fw": [(120, 180, None, ValueError("f"))],
                                  "sa": [(210, 230, None, OSError("s"))]},
    "no timer": {"ex": [(100, 200, SO(), None)], "sa": [(210, 230, "result", None)], "stop": False},
    "sample with start 0": {"ex": [(100, 200, SO(), None)], "sa": [(0, 230, "result", None)]},
    "unrecorded step": {"ex": [(100, 200, SO(), None)], "fw": [(120, 180, None, None)],
                        "sa": [(210, 230, "result", None)], "stamp": None},
    "the timer raises": {"ex": [(100, 200, SO(), None)], "sa": [(210, 230, "result", None)], "raises": True},
    "not a Bounds": {"ex": [(100, 200)]},
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_c_copy_does_what_the_definition_does(name, monkeypatch):
    case = CASES[name]
    if name == "not a Bounds":              # a Slot refuses it when it is noted
        with pytest.raises(TypeError, match="Bounds tuple"):
            bounds.buffer().append((100, 200))
        return

    def python_setup(bufs, mode):
        for attr, buf in zip(("EXECUTIONS", "FORWARDS", "LAUNCHES", "SAMPLES"), bufs):
            monkeypatch.setattr(engine_core, attr, buf)
        monkeypatch.setattr(engine_core, "MODE", mode)

    def c_setup(bufs, mode):
        _cfront.worker_bounds_setup(*bufs, mode, STAMP_STEP)

    try:
        want = run(engine_core._worker_bounds, case, monkeypatch, python_setup)
        got = run(_cfront.worker_bounds, case, monkeypatch, c_setup)
    finally:                                # the process's own buffers and Mode again
        _cfront.worker_bounds_setup(bounds.EXECUTIONS, bounds.FORWARDS, bounds.LAUNCHES, bounds.SAMPLES, bounds.MODE,
                                    STAMP_STEP)
    assert got == want
    if got[0] is not None:                  # and it is a WorkerBounds in its field order
        wb = WorkerBounds._make(got[0])
        assert wb.stamp is STAMP and wb.prev_end == 500


def test_the_engine_step_post_reads_the_c_copy():
    assert engine_core.read_worker_bounds is _cfront.worker_bounds


def test_the_c_copy_reads_slots_only():
    """Every buffer the C hooks read is a Slot (``bounds.buffer``, made by the same extension); anything else is a
    TypeError naming what it got, not a misread."""
    mode = Mode(True)
    bufs = (deque(maxlen=4),) + tuple(bounds.buffer() for _ in range(3))
    bufs[0].append((100, 200, SO(), None))
    _cfront.worker_bounds_setup(*bufs, mode, STAMP_STEP)
    try:
        with pytest.raises(TypeError, match="must be a _cfront.Slot"):
            _cfront.worker_bounds(STAMP)
    finally:
        _cfront.worker_bounds_setup(bounds.EXECUTIONS, bounds.FORWARDS, bounds.LAUNCHES, bounds.SAMPLES, bounds.MODE,
                                    STAMP_STEP)
