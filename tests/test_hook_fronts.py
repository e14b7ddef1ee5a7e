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

from vllm_w2ext.hooks import all_hooks
from vllm_w2ext.hooks.runner import FRONT_FILE, HookRunner


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
        front = HookRunner(h).bind(fn)
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

