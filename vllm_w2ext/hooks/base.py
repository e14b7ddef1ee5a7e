"""Hook specs and the one generic wrapper every hook uses.

A :class:`Hook` names a vLLM method (module + ``Class.method``) and two small functions:
``pre(instance, args, kwargs) -> state`` and ``post(state, result, error)``. The generic wrapper
runs them around the original method with ``wrapt``. A fault inside ``pre``/``post`` disables that
hook (counted, one log line) and never reaches the request.
"""
from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import wrapt

from vllm_w2ext.telemetry import selfcost

log = logging.getLogger("vllm_w2ext")

Pre = Callable[[Any, tuple, dict], Any]
Post = Callable[[Any, Any, "BaseException | None"], None]


@dataclass
class Hook:
    name: str                       # stable id, e.g. "engine.step"
    module: str                     # vLLM module holding the class
    target: str                     # "Class.method"
    pre: Pre
    post: Post | None = None
    role: str = ""
    note: str = ""                  # what it is for / which vLLM versions have it
    optional: bool = False          # absent in some supported versions: skip quietly (doctor shows it)
    active: bool = field(default=True, repr=False)
    attached: bool = field(default=False, repr=False)
    errors: int = field(default=0, repr=False)

    @property
    def cls_name(self) -> str:
        return self.target.split(".")[0]

    @property
    def method(self) -> str:
        return self.target.split(".", 1)[1]

    def fail(self, exc: BaseException) -> None:
        """A fault inside the plugin: count it, switch this hook off, say so once."""
        self.errors += 1
        selfcost.hook_failed(self.name)
        try:   # make sure this process reports the fault even if no hook ever recorded anything
            from vllm_w2ext.telemetry import identity, pipeline
            if self.role:
                identity.set_role(self.role)
            pipeline.get()
        except Exception:  # pragma: no cover - reporting must not raise either
            pass
        if self.active:
            self.active = False
            log.error("vllm_w2ext: hook %s (%s.%s) raised %r and is now disabled; vLLM continues "
                      "without it", self.name, self.module, self.target, exc)


class InjectedFault(RuntimeError):
    """Raised by a hook chosen with VLLM_W2EXT_FAULT_INJECT (tests only)."""


def _with_fault(hook: Hook) -> Pre:
    def pre(instance, args, kwargs):
        raise InjectedFault(f"injected fault in {hook.name}")
    return pre


def make_wrapper(hook: Hook, fault: str = "") -> Callable:
    injected = fault == "all" or hook.name in fault.split(",")
    pre = _with_fault(hook) if fault and injected else hook.pre
    post = hook.post
    calls = [0]
    every = selfcost.SAMPLE_EVERY
    clock = time.perf_counter_ns
    self_ns = selfcost.hook_self_ns

    def sync_wrapper(wrapped, instance, args, kwargs):
        if not hook.active:
            return wrapped(*args, **kwargs)
        calls[0] += 1
        timed = calls[0] % every == 0          # sample our own cost on one call in `every`
        t0 = clock() if timed else 0
        try:
            state = pre(instance, args, kwargs)
        except Exception as e:
            hook.fail(e)
            return wrapped(*args, **kwargs)
        if timed:
            t1 = clock()
            self_ns[0] += (t1 - t0) * every
        if post is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as e:
            try:
                post(state, None, e)
            except Exception as e2:
                hook.fail(e2)
            raise
        t2 = clock() if timed else 0
        try:
            post(state, result, None)
        except Exception as e:
            hook.fail(e)
        if timed:
            self_ns[0] += (clock() - t2) * every
        return result

    async def async_wrapper_impl(wrapped, instance, args, kwargs):
        if not hook.active:
            return await wrapped(*args, **kwargs)
        try:
            state = pre(instance, args, kwargs)
        except Exception as e:
            hook.fail(e)
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as e:
            if post is not None:
                try:
                    post(state, None, e)
                except Exception as e2:
                    hook.fail(e2)
            raise
        if post is not None:
            try:
                post(state, result, None)
            except Exception as e:
                hook.fail(e)
        return result

    def async_wrapper(wrapped, instance, args, kwargs):
        return async_wrapper_impl(wrapped, instance, args, kwargs)

    return sync_wrapper, async_wrapper


def resolve(hook: Hook, module) -> Any | None:
    cls = getattr(module, hook.cls_name, None)
    if cls is None:
        return None
    return inspect.getattr_static(cls, hook.method, None) if hook.method in vars(cls) else None


def attach(hook: Hook, module, fault: str = "") -> bool:
    """Wrap the method on its original class (never swap classes). Returns False if absent."""
    fn = resolve(hook, module)
    if fn is None:
        return False
    if isinstance(fn, wrapt.FunctionWrapper):  # already ours (idempotent register under spawn)
        hook.attached = True
        return True
    sync_w, async_w = make_wrapper(hook, fault)
    raw = fn.__func__ if isinstance(fn, (staticmethod, classmethod)) else fn
    w = async_w if inspect.iscoroutinefunction(raw) else sync_w
    wrapt.wrap_function_wrapper(module, hook.target, w)
    hook.attached = True
    return True


def detach(hook: Hook, module) -> None:
    cls = getattr(module, hook.cls_name, None)
    if cls is None:
        return
    fn = vars(cls).get(hook.method)
    if isinstance(fn, wrapt.FunctionWrapper):
        setattr(cls, hook.method, fn.__wrapped__)
    hook.attached = False


def is_wrapped(cls: type, method: str) -> bool:
    return isinstance(vars(cls).get(method), wrapt.FunctionWrapper)
