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
