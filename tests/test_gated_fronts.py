"""With ``VLLM_W2EXT_SAMPLE`` > 1 every gated hook (``recorded_only``) gets a front with the vLLM method's own
parameters (``hooks.runner._exact_front``), so a light step calls vLLM's method without packing its arguments.
A signature the front cannot copy falls back to the generic wrapper silently; this checks on the installed vLLM
that none of the gated methods does (known answer: all of them get a front, the V1 runner's ``**model_kwargs``
included), with the method's parameter names and default objects."""
from __future__ import annotations

import importlib
import inspect

from vllm_w2ext.hooks import all_hooks
from vllm_w2ext.hooks.runner import FRONT_FILE, HookRunner


def test_every_gated_vllm_method_gets_a_front():
    seen = {}
    for h in all_hooks():
        if not h.recorded_only:
            continue
        cls = getattr(importlib.import_module(h.module), h.cls_name, None)
        if cls is None or h.method not in vars(cls):
            assert h.optional, h.name
            continue
        fn = vars(cls)[h.method]
        front = HookRunner(h, sampled=True).bind(fn)
        seen[h.name] = front.__code__.co_filename == FRONT_FILE
        ours, theirs = inspect.signature(front, follow_wrapped=False), inspect.signature(fn)
        assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
            [(p.name, p.kind, p.default) for p in theirs.parameters.values()], h.name
    assert seen and all(seen.values()), seen
    assert {"engine.update_from_output", "worker.execute_model", "worker.sample_tokens"} <= set(seen)
