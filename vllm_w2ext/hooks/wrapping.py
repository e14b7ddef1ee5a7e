"""Wrapping vLLM's methods with wrapt: attach a runner to a method, detach it, ask what is wrapped."""
from __future__ import annotations

import inspect
from typing import Any

import wrapt

from vllm_w2ext.hooks.runner import HookRunner
from vllm_w2ext.hooks.spec import Hook


def resolve(hook: Hook, module) -> Any | None:
    """The method the hook names, as defined on its own class (not inherited), or None."""
    cls = getattr(module, hook.cls_name, None)
    if cls is None:
        return None
    return inspect.getattr_static(cls, hook.method, None) if hook.method in vars(cls) else None


def attach(runner: HookRunner, module) -> bool:
    """Wrap the method on its original class (never swap classes). False if it is absent."""
    fn = resolve(runner.spec, module)
    if fn is None:
        return False
    if isinstance(fn, wrapt.FunctionWrapper):  # already ours (idempotent register under spawn)
        return True
    raw = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
    wrapper = runner.async_ if inspect.iscoroutinefunction(raw) else runner.sync
    wrapt.wrap_function_wrapper(module, runner.spec.target, wrapper)
    return True


def detach(hook: Hook, module) -> None:
    cls = getattr(module, hook.cls_name, None)
    if cls is None:
        return
    fn = vars(cls).get(hook.method)
    if isinstance(fn, wrapt.FunctionWrapper):
        setattr(cls, hook.method, fn.__wrapped__)


def is_wrapped(cls: type, method: str) -> bool:
    return isinstance(vars(cls).get(method), wrapt.FunctionWrapper)
