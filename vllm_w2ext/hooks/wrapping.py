"""Attaching runners to vLLM's methods, detaching them, asking what is wrapped.

A sync method is replaced by the runner's plain function (``HookRunner.bind``: the hot path, half the
cost of a wrapt wrapper per call); a coroutine method gets a ``wrapt.FunctionWrapper`` around
``HookRunner.async_``. Either way the original stays reachable (``__wrapped__``) and comes back on detach.
"""
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


def _ours(fn) -> bool:
    raw = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
    return isinstance(raw, wrapt.FunctionWrapper) or hasattr(raw, "__w2ext_runner__")


def attach(runner: HookRunner, module) -> bool:
    """Wrap the method on its original class (never swap classes). False if it is absent."""
    fn = resolve(runner.spec, module)
    if fn is None:
        return False
    if _ours(fn):                              # already ours (idempotent register under spawn)
        return True
    raw = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
    if inspect.iscoroutinefunction(raw):
        wrapt.wrap_function_wrapper(module, runner.spec.target, runner.async_)
        return True
    hooked = runner.bind(raw)
    cls = getattr(module, runner.spec.cls_name)
    ours = type(fn)(hooked) if isinstance(fn, (staticmethod, classmethod)) else hooked
    setattr(cls, runner.spec.method, ours)
    return True


def detach(hook: Hook, module) -> None:
    cls = getattr(module, hook.cls_name, None)
    if cls is None:
        return
    fn = vars(cls).get(hook.method)
    if fn is None or not _ours(fn):
        return
    if isinstance(fn, (staticmethod, classmethod)):
        setattr(cls, hook.method, type(fn)(fn.__func__.__wrapped__))
    else:
        setattr(cls, hook.method, fn.__wrapped__)


def is_wrapped(cls: type, method: str) -> bool:
    fn = vars(cls).get(method)
    return fn is not None and _ours(fn)
