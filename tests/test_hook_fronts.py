"""Every sync hook's function is written for the vLLM method's own parameters (``hooks.runner._exact_front``),
so no hooked call packs its arguments into a tuple and a dict and unpacks them again, and a light step calls a
gated method after one flag test. A signature the front cannot copy falls back to the generic front (through
``(instance, *args, **kwargs)``) silently; this checks on the installed vLLM that none of the hooked methods
does (known answer: every sync hook but the constructors gets an exact front, the V1 runner's ``**model_kwargs``
included), with the method's parameter names and default objects (what a front hands ``pre``:
tests/unit/test_step_gate.py)."""
from __future__ import annotations

import importlib
import inspect
import types

import pytest

from vllm_w2ext.hooks import all_hooks, end_event
from vllm_w2ext.hooks.runner import FRONT_FILE, CFront, HookRunner, _c_layout, python_front


def test_every_sync_vllm_method_gets_a_front():
    seen, constructors = {}, set()
    for h in all_hooks():
        cls = getattr(importlib.import_module(h.module), h.cls_name, None)
        if cls is None or h.method not in vars(cls):
            assert h.optional, h.name
            continue
        fn = vars(cls)[h.method]
        if inspect.iscoroutinefunction(inspect.unwrap(fn)):
            continue                                   # coroutines: wrapt (hooks/wrapping.py)
        outer = HookRunner(h).bind(fn)
        front = python_front(outer)                     # a bounds hook's C front, where built, hands calls to it
        in_c = h.method != "__init__" and (h.bounds is not None or _c_layout(fn) is not None)
        assert (outer is not front) == (in_c and CFront is not None), h.name
        assert front.__code__.co_filename == FRONT_FILE, h.name
        seen[h.name] = not front.__code__.co_flags & inspect.CO_VARARGS      # exact: no (instance, *args, ...)
        if h.method == "__init__":
            assert not seen[h.name], h.name          # constructors get the generic front (bind's docstring)
            constructors.add(h.name)
            continue
        ours, theirs = inspect.signature(front, follow_wrapped=False), inspect.signature(fn)
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
            [(p.name, p.kind, p.default) for p in theirs.parameters.values()], h.name
    fronts = {n for n, front in seen.items() if front}
    assert seen.keys() - constructors == fronts, seen
    assert {"engine.step", "engine.schedule", "engine.update_from_output", "engine.free_request",
            "worker.execute_model", "worker.sample_tokens", "worker.forward_v1", "front.engine_step",
            "front.process_outputs", "front.request_start", "front.request_finish"} <= fronts


def test_the_installed_vllms_async_output_is_rebound_and_restored():
    """The real class: its constructor reads a torch whose Event times, the code object stays vLLM's, and detach
    puts vLLM's function back (the CPU build cannot make CUDA events; the GPU runs are in benchmarks/results)."""
    mod_name, cls_name, attr = end_event.SOURCES[0]
    try:
        m = importlib.import_module(mod_name)
    except Exception as e:                                         # pragma: no cover
        pytest.skip(f"{mod_name} does not import here: {e!r}")

    class Event:                                                   # the CPU build makes no CUDA event
        def __init__(self, enable_timing=False, blocking=False, interprocess=False):
            self.timing = enable_timing
    cls = getattr(m, cls_name)
    own_init = cls.__init__
    torch = types.SimpleNamespace(cuda=types.SimpleNamespace(Event=Event, set_stream=lambda s: None), Tensor=object)
    try:
        assert end_event.attach(m, cls_name, attr, torch=torch)
        seen = cls.__init__.__globals__["torch"]
        assert seen.cuda.Event(blocking=True).timing is True and seen.cuda.set_stream is torch.cuda.set_stream
        assert cls.__init__.__code__ is own_init.__code__ and m.torch is not seen
    finally:
        end_event.detach()
    assert cls.__init__ is own_init
