"""The one hook runner: run ``pre``, the call, ``post``; contain faults; sample the plugin's own cost.

Every way a hook is driven goes through :class:`HookRunner`: ``sync`` and ``async_`` as wrapt
wrappers of vLLM's methods (``wrapping.py``), ``enter``/``exit`` from vLLM's native step observers
(``native.py``). A fault inside ``pre``/``post`` disables that hook (counted, one log line) and never
reaches the request; ``VLLM_W2EXT_FAULT_INJECT`` makes chosen hooks raise (tests). One call in
``selfcost.SAMPLE_EVERY`` is timed (thread CPU and wall time of pre + post), async hooks included.
"""
from __future__ import annotations

import logging
import time

from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.telemetry import selfcost

log = logging.getLogger("vllm_w2ext")
SKIP = object()                   # enter's result when post must not run (hook off or pre failed)
_MASK = selfcost.SAMPLE_EVERY - 1
_cpu = time.thread_time_ns
_wall = time.perf_counter_ns


class InjectedFault(RuntimeError):
    """Raised by a hook chosen with VLLM_W2EXT_FAULT_INJECT (tests only)."""


def injected(name: str, fault: str) -> bool:
    return bool(fault) and (fault == "all" or name in fault.split(","))


class HookRunner:
    __slots__ = ("spec", "pre", "post", "active", "calls")

    def __init__(self, spec: Hook, fault: str = ""):
        self.spec = spec
        self.pre = self._raise if injected(spec.name, fault) else spec.pre
        self.post = spec.post
        self.active = True
        self.calls = 0

    def _raise(self, instance, args, kwargs):
        raise InjectedFault(f"injected fault in {self.spec.name}")

    def fail(self, exc: BaseException) -> None:
        """A fault inside the plugin: count it, switch this hook off, say so once."""
        selfcost.hook_failed(self.spec.name)
        try:   # make sure this process reports the fault even if no hook ever recorded anything
            from vllm_w2ext.telemetry import identity, pipeline
            if self.spec.role:
                identity.set_role(self.spec.role)
            pipeline.get()
        except Exception:  # pragma: no cover - reporting must not raise either
            pass
        if self.active:
            self.active = False
            s = self.spec
            log.error("vllm_w2ext: hook %s (%s.%s) raised %r and is now disabled; vLLM continues "
                      "without it", s.name, s.module, s.target, exc)

    # -- the two halves, shared by every way of driving a hook ---------------------------------------
    def enter(self, instance, args, kwargs):
        """Run ``pre``; its state, or SKIP."""
        if not self.active:
            return SKIP
        self.calls = n = self.calls + 1
        if n & _MASK:
            try:
                return self.pre(instance, args, kwargs)
            except Exception as e:
                self.fail(e)
                return SKIP
        c0, w0 = _cpu(), _wall()
        try:
            return self.pre(instance, args, kwargs)
        except Exception as e:
            self.fail(e)
            return SKIP
        finally:
            selfcost.add_sample(_cpu() - c0, _wall() - w0)

    def exit(self, state, result, error) -> None:
        """Run ``post`` (after ``enter`` returned ``state``, not SKIP)."""
        if self.calls & _MASK:
            try:
                self.post(state, result, error)
            except Exception as e:
                self.fail(e)
            return
        c0, w0 = _cpu(), _wall()
        try:
            self.post(state, result, error)
        except Exception as e:
            self.fail(e)
        finally:
            selfcost.add_sample(_cpu() - c0, _wall() - w0)

    # -- wrapt wrappers ----------------------------------------------------------------------------
    def sync(self, wrapped, instance, args, kwargs):
        if not self.active:
            return wrapped(*args, **kwargs)
        n = self.calls = self.calls + 1
        if not n & _MASK:                     # the sampled call: timed through enter/exit
            return self._sync_timed(wrapped, instance, args, kwargs)
        # the other calls: enter/exit inlined (two Python calls fewer per hooked call, on vLLM's thread)
        try:
            state = self.pre(instance, args, kwargs)
        except Exception as e:
            self.fail(e)
            return wrapped(*args, **kwargs)
        post = self.post
        if post is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as e:
            try:
                post(state, None, e)
            except Exception as e2:
                self.fail(e2)
            raise
        try:
            post(state, result, None)
        except Exception as e:
            self.fail(e)
        return result

    def _sync_timed(self, wrapped, instance, args, kwargs):
        self.calls -= 1                       # enter() counts this call again
        state = self.enter(instance, args, kwargs)
        if state is SKIP or self.post is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as e:
            self.exit(state, None, e)
            raise
        self.exit(state, result, None)
        return result

    def async_(self, wrapped, instance, args, kwargs):
        return self._run_async(wrapped, instance, args, kwargs)

    async def _run_async(self, wrapped, instance, args, kwargs):
        state = self.enter(instance, args, kwargs)
        if state is SKIP or self.post is None:
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as e:
            self.exit(state, None, e)
            raise
        self.exit(state, result, None)
        return result
