"""hooks.end_event: vLLM's step-end event made a timing event in the one constructor that makes it, and nowhere
else; put back on detach. A stand-in ``torch`` (no GPU) planted in a module shaped like vLLM's (the installed
vLLM's own class: tests/test_hook_fronts.py)."""
import sys
import textwrap
import types

import pytest

from vllm_w2ext.hooks import end_event


class FakeCuda(types.ModuleType):
    def __init__(self):
        super().__init__("torch.cuda")
        self.made = []

        class Event:
            def __init__(ev, enable_timing=False, blocking=False, interprocess=False):
                ev.timing, ev.blocking, ev.interprocess = enable_timing, blocking, interprocess
                self.made.append(ev)

            def record(ev, stream=None):
                ev.stream = stream

        self.Event = Event
        self.set_stream = lambda s: None


def fake_torch():
    t = types.ModuleType("torch")
    t.cuda = FakeCuda()
    t.Tensor = type("Tensor", (), {})
    t.float32 = "float32"
    return t


SOURCE = textwrap.dedent('''
    import torch

    class AsyncOutput:
        def __init__(self, copy_stream, *, n=1):
            self.copy_event = torch.cuda.Event(blocking=True)
            self.kind: torch.Tensor | None = None
            self.dtype = torch.float32
            self.n = n
            self.copy_event.record(copy_stream)

    class AsyncPoolingOutput:
        def __init__(self):
            self.copy_event = torch.cuda.Event(blocking=True)

    def other():
        return torch.cuda.Event()
''')


@pytest.fixture
def module(monkeypatch):
    torch = fake_torch()
    monkeypatch.setitem(sys.modules, "torch", torch)
    m = types.ModuleType("vllm.v1.worker.gpu.async_utils")
    exec(SOURCE, m.__dict__)
    monkeypatch.setitem(sys.modules, m.__name__, m)
    yield m, torch
    end_event.detach()


def test_only_the_carrier_constructor_makes_timing_events(module):
    m, torch = module
    own_init = m.AsyncOutput.__init__
    end_event.on_import(m)
    out = m.AsyncOutput("copy stream", n=3)
    ev = out.copy_event
    assert (ev.timing, ev.blocking, ev.stream, out.n, out.dtype) == (True, True, "copy stream", 3, "float32")
    assert m.AsyncPoolingOutput().copy_event.timing is False       # the rest of the module: vLLM's torch
    assert m.other().timing is False and m.torch is torch
    assert end_event.CARRIER[0] is m.AsyncOutput and end_event.CARRIER[1](out) is ev
    assert m.AsyncOutput.__init__.__code__ is own_init.__code__    # vLLM's code, run as it is
    end_event.on_import(m)                                         # attached again (instrument after
    assert getattr(m.AsyncOutput.__init__, end_event.MARK) is own_init   # uninstrument): not wrapped twice
    end_event.detach()
    assert m.AsyncOutput.__init__ is own_init and end_event.CARRIER == [None, None]
    assert m.AsyncOutput("s").copy_event.timing is False


def test_an_interprocess_event_is_made_as_asked():
    torch = fake_torch()
    make = end_event.timing_torch(torch).cuda.Event
    assert make(interprocess=True).timing is False                 # CUDA cannot time those
    assert make(False, True).timing is False                       # positional: as the caller says
    assert make(blocking=True).timing is True


def test_a_module_not_shaped_as_expected_is_left_alone(module):
    m, _ = module
    own_init = m.AsyncOutput.__init__
    del m.torch                                                    # the constructor's globals: the module's
    assert end_event.attach(m, "AsyncOutput", "copy_event") is False
    assert end_event.attach(m, "NoSuchClass", "copy_event") is False
    assert m.AsyncOutput.__init__ is own_init and end_event.CARRIER == [None, None]


def bare_event_torch():
    """A stand-in ``torch`` whose events nothing else keeps (``FakeCuda`` lists every event it made)."""
    class Event:
        def __init__(ev, enable_timing=False, blocking=False, interprocess=False):
            ev.timing, ev.blocking, ev.interprocess = enable_timing, blocking, interprocess

    t = fake_torch()
    t.cuda.Event = Event
    return t


@pytest.fixture(params=["c", "python"])
def recycled(monkeypatch, request):
    """Each recycling test runs on the constructor in C (``_event_times.recycler``, where built) and on the Python
    closure."""
    if request.param == "c" and end_event._c_recycler is None:
        pytest.skip("the C extension _event_times is not built here")
    if request.param == "python":
        monkeypatch.setattr(end_event, "_c_recycler", None)
    monkeypatch.setattr(end_event, "RECYCLED", [])
    monkeypatch.setattr(end_event, "MADE", [0])
    return end_event.RECYCLED


def test_a_resolved_event_nothing_else_holds_is_handed_out_again(recycled):
    """The device timer puts resolved borrowed events in ``RECYCLED`` (oldest first); the constructor hands out the
    oldest when only that list holds it and it was made with the same arguments: no new event per step (torch
    would make a CUDA event at its first record and free it with the output), else a new one."""
    make = end_event.timing_torch(bare_event_torch()).cuda.Event
    first = make(blocking=True)
    assert end_event.MADE == [1] and first.timing is True
    recycled.append(first)                        # resolved; vLLM's output that carried it is gone
    del first
    again = make(blocking=True)
    assert recycled == [] and end_event.MADE == [1] and again.timing and again.blocking
    held = again                                  # a second name: vLLM's output still holds it
    recycled.append(again)
    other = make(blocking=True)
    assert other is not held and recycled == [held] and end_event.MADE == [2]
    del again, held                               # now only the list holds it
    assert make(blocking=False) is not recycled[0] and end_event.MADE == [3]   # other arguments: a new one
    assert make(blocking=True).blocking is True and recycled == [] and end_event.MADE == [3]


def test_a_planted_share_of_held_events_is_what_gets_made(recycled):
    """Planted: 100 steps, each output dropped one step after it was made (async scheduling keeps one alive), the
    timer resolving each event two steps later. After the first two steps every event is one handed out again."""
    make = end_event.timing_torch(bare_event_torch()).cuda.Event
    alive, made_at = [], []
    for step in range(100):
        ev = make(blocking=True)
        alive.append(ev)
        made_at.append(end_event.MADE[0])
        del ev
        if len(alive) > 1:
            old = alive.pop(0)                    # vLLM drops the previous step's output
            recycled.append(old)                  # the export thread resolved its event
            del old
    assert end_event.MADE == [2] and made_at[:3] == [1, 2, 2]


def test_detach_drops_the_recycled_events(module, recycled):
    m, _ = module
    end_event.on_import(m)
    recycled.append(m.AsyncOutput("s").copy_event)
    end_event.detach()
    assert recycled == []


def test_other_calls_go_to_torch_as_they_are(recycled):
    """Positional arguments or an interprocess event: torch's constructor as asked, nothing taken or counted."""
    make = end_event.timing_torch(bare_event_torch()).cuda.Event
    recycled.append(make(blocking=True))
    assert end_event.MADE == [1]
    ev = make(False, True)
    assert (ev.timing, ev.blocking) == (False, True) and make(interprocess=True).timing is False
    assert len(recycled) == 1 and end_event.MADE == [1]


def test_the_c_constructor_keeps_and_loses_no_reference(recycled):
    """Made, handed out again, refused while held elsewhere: the event's and the list's counts end where they began
    (a reference kept would leak an event per step; one lost would free an event vLLM still holds)."""
    if end_event._c_recycler is None:
        pytest.skip("the python closure")
    import gc
    import weakref
    make = end_event.timing_torch(bare_event_torch()).cuda.Event
    recycled.append(make(blocking=True))
    ref = weakref.ref(recycled[0])
    list_refs = sys.getrefcount(recycled)
    for _ in range(1000):
        e = make(blocking=True)                    # taken off the list
        assert e is ref() and recycled == []
        recycled.append(e)
        other = make(blocking=True)                # held by ``e`` as well: a new one is made
        assert other is not e
        del e, other
    gc.collect()
    counts = sys.getrefcount(recycled[0]), sys.getrefcount(recycled)    # before the asserts hold any of them
    assert counts == (2, list_refs) and len(recycled) == 1 and recycled[0] is ref()
    assert end_event.MADE == [1001]
