"""Python's collections inside a C front's timed sections (``_cfront.c``'s ``gc_phase``, put in ``gc.callbacks`` by
``hooks/runner.py`` with the first C front that counts): a collection that an allocation of a hook happens to trigger
walks the young objects of the whole process (vLLM's, in a busy step), so the direct counter leaves it out and counts
it apart (``_cfront.collected``). Planted: a pre that spins a known time and then collects a garbage pile (made
before the call) that takes far longer; a post that spins alone."""
import gc

import pytest
from test_direct_counter import Target, front_of, ns_of
from test_hook_cost_engine_fronts import spin

from vllm_w2ext.hooks import runner
from vllm_w2ext.hooks.spec import Hook

_cfront = pytest.importorskip("vllm_w2ext.hooks._cfront", reason="the C extension is not built")
PRE_US, POST_US = 300, 200


def garbage(n: int = 300_000) -> None:
    """Cycles the collector must find: a pile that takes milliseconds to collect."""
    for _ in range(n // 2):
        a, b = [], []
        a.append(b)
        b.append(a)


def test_the_collector_is_timed_once_a_front_counts():
    """The callback goes in when a C front with a direct counter is made (processes that only import the hooks, as
    the doctor does, make none), and only once."""
    if _cfront.gc_phase in gc.callbacks:
        gc.callbacks.remove(_cfront.gc_phase)
    front_of(Hook("t.first", __name__, "Target.method", lambda i, a, k: 1, None))
    front_of(Hook("t.second", __name__, "Target.method", lambda i, a, k: 1, None))
    assert gc.callbacks.count(_cfront.gc_phase) == 1 and runner.CFront is not None


def test_a_collection_inside_a_hook_is_left_out_of_the_direct_counter_and_counted_apart(no_marks):
    def pre(instance, args, kwargs):
        spin(PRE_US)
        gc.collect()
        return 1

    _, front = front_of(Hook("t.collect", __name__, "Target.method", pre, lambda st, res, err: spin(POST_US)))
    front(Target(), 1)                                     # warm
    gc.disable()                                           # the pile made outside the hook, collected inside it
    try:
        garbage()
    finally:
        gc.enable()
    spent0, (gc0, n0) = front.spent, _cfront.collected()
    front(Target(), 1)
    spent = ns_of(front.spent - spent0) / 1e3
    collected = ns_of(_cfront.collected()[0] - gc0) / 1e3
    assert _cfront.collected()[1] == n0 + 1               # one section had a collection (the pre's)
    assert collected > 2 * (PRE_US + POST_US)             # the pile took longer than the hook's own work
    # the hook's own work (the spins) stays; the collection does not
    assert PRE_US + POST_US <= spent < PRE_US + POST_US + 0.2 * collected


def test_a_section_without_a_collection_loses_nothing(no_marks):
    _, front = front_of(Hook("t.plain", __name__, "Target.method", lambda i, a, k: spin(PRE_US) or 1,
                             lambda st, res, err: spin(POST_US)))
    front(Target(), 1)
    gc.disable()
    try:
        spent0, got0 = front.spent, _cfront.collected()
        front(Target(), 1)
        assert _cfront.collected() == got0
        assert ns_of(front.spent - spent0) / 1e3 >= PRE_US + POST_US
    finally:
        gc.enable()
