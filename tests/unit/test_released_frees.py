"""vLLM's objects the step's post takes out of the bounds buffers (``_cfront.c``'s ``bury``/``release``): where the
buffer's reference is the last one, the C post and ``worker_bounds`` do not free them inside the direct counter's
timed section; a C front frees them right after it, still inside the hook's call, and counts that time apart
(``_cfront.freed``). Planted: a SchedulerOutput and a runner's output held by nothing but the buffers, a post that
takes them, and a front whose post is that post."""
import gc
import weakref

import pytest
from test_direct_counter import Target, front_of, ns_of
from test_hook_cost_engine_fronts import spin

from vllm_w2ext.hooks import bounds
from vllm_w2ext.hooks.spec import Hook

_cfront = pytest.importorskip("vllm_w2ext.hooks._cfront", reason="the C extension is not built")

FREE_US = 400


class Output:
    """vLLM's object whose dealloc takes a known time (as a large batch's lists and dicts take)."""

    def __init__(self, total: int = 1) -> None:
        self.total_num_scheduled_tokens = total

    def __del__(self) -> None:
        spin(FREE_US)


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr(bounds.MODE, "device_stop", None)
    monkeypatch.setattr(bounds.MODE, "last_end", 0)
    bounds.clear()
    _cfront.release_buried()          # (posts other tests called outside a front buried what they took)
    yield
    bounds.clear()
    _cfront.freed()


def plant() -> tuple:
    so, out = Output(), Output()
    refs = weakref.ref(so), weakref.ref(out)
    bounds.EXECUTIONS.append((10, 20, so, None))
    bounds.SAMPLES.append((21, 30, out, None))
    return refs


def test_worker_bounds_keeps_what_it_takes_until_a_front_releases_it(in_process):
    refs = plant()
    wb = _cfront.worker_bounds((1, 2, 7, 0, 0, 0, 0, 0, 0, 1))
    assert wb is not None and wb[3] == 1                    # read as before (the total from the SchedulerOutput)
    assert not bounds.EXECUTIONS and not bounds.SAMPLES     # out of the buffers
    gc.collect()
    assert all(r() is not None for r in refs)               # not freed in the call: buried
    ticks0, calls0 = _cfront.freed()
    _, front = front_of(Hook("t.release", __name__, "Target.method", lambda i, a, k: 1, lambda st, res, err: None))
    front(Target(), 1)
    assert all(r() is None for r in refs)                   # freed by the next front's post, after its timed section
    ticks1, calls1 = _cfront.freed()
    assert calls1 == calls0 + 1
    assert ns_of(ticks1 - ticks0) / 1e3 >= 2 * FREE_US * 0.98   # both frees' time counted apart


def test_the_frees_are_not_in_the_direct_counter(in_process):
    """A front whose post takes the buffers' entries (as the engine step's post does): its direct figure holds the
    post's own work, not the frees; ``freed`` holds them."""
    def post(st, res, err):
        _cfront.worker_bounds((1, 2, 7, 0, 0, 0, 0, 0, 0, 1))
    _, front = front_of(Hook("t.release_post", __name__, "Target.method", lambda i, a, k: 1, post))
    spent = []
    for _ in range(5):
        refs = plant()
        before, f0 = front.spent, _cfront.freed()[0]
        front(Target(), 1)
        assert all(r() is None for r in refs)
        spent.append((ns_of(front.spent - before) / 1e3, ns_of(_cfront.freed()[0] - f0) / 1e3))
    assert min(s for s, _ in spent) < FREE_US / 2, spent    # (a preempted call reads longer: the least of five)
    assert all(f >= 2 * FREE_US * 0.98 for _, f in spent), spent


def test_a_post_outside_any_front_frees_past_the_bound(in_process):
    """Called outside a front (a test, the Python front's timed call): buried up to a bound, then freed where taken,
    so nothing piles up."""
    kept = []
    for _ in range(100):
        kept.append(plant())
        _cfront.worker_bounds((1, 2, 7, 0, 0, 0, 0, 0, 0, 1))
    alive = sum(r() is not None for pair in kept for r in pair)
    assert 0 < alive <= 64


def test_an_error_pending_is_not_touched(in_process):
    """A WorkerBounds read that fails (a stamp that is no Stamp) raises its own error; what it took is freed there."""
    refs = plant()
    with pytest.raises(ValueError, match="not a Stamp"):
        _cfront.worker_bounds(("no stamp",))
    gc.collect()
    assert all(r() is None for r in refs)
