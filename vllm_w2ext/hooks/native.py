"""The native path: vLLM's own step observers (``vllm.v1.step_observer``, added by ``patches/``).

Where the installed vLLM has that module, the hooks of the step loop are not wrapped: one observer,
registered when vLLM imports the module (a post-import hook, per process, like the wrapt path),
runs the SAME ``pre``/``post`` functions of the hook table at vLLM's observation points, with the
same fault handling (a raising hook disables itself), fault injection and self-cost sampling.
Hooks outside the step loop (front end, runner forward, shutdown, profiler) stay on wrapt.
"""
from __future__ import annotations

import importlib.util
import logging
import time

import wrapt

from vllm_w2ext.hooks.base import Hook, _with_fault
from vllm_w2ext.telemetry import selfcost

log = logging.getLogger("vllm_w2ext")

MODULE = "vllm.v1.step_observer"
NATIVE_PATH = "native step observers (vllm.step_observers)"
WRAPT_PATH = "monkeypatch (wrapt)"

# hook name -> vLLM observation point
POINTS = {
    "engine.step": "engine_core.step",
    "engine.step_with_batch_queue": "engine_core.step_with_batch_queue",
    "engine.schedule": "scheduler.schedule",
    "engine.update_from_output": "scheduler.update_from_output",
    "engine.free_request": "scheduler.free_request",
    "engine.execute_model.UniProcExecutor": "executor.execute_model",
    "engine.execute_model.MultiprocExecutor": "executor.execute_model",
    "engine.sample_tokens.UniProcExecutor": "executor.sample_tokens",
    "engine.sample_tokens.MultiprocExecutor": "executor.sample_tokens",
    "worker.execute_model": "worker.execute_model",
    "worker.sample_tokens": "worker.sample_tokens",
}


def available() -> bool:
    """Does the installed vLLM have the step-observer API? (finds the module, does not import it)"""
    try:
        return importlib.util.find_spec(MODULE) is not None
    except (ImportError, ValueError):
        return False


def hook_path() -> str:
    return NATIVE_PATH if available() else WRAPT_PATH


class _Entry:
    """One hook as the observer runs it: its pre (or the injected fault), post and a call count."""
    __slots__ = ("hook", "pre", "post", "calls")

    def __init__(self, hook: Hook, fault: str):
        injected = bool(fault) and (fault == "all" or hook.name in fault.split(","))
        self.hook, self.post, self.calls = hook, hook.post, 0
        self.pre = _with_fault(hook) if injected else hook.pre


class HookObserver:
    """A ``vllm.v1.step_observer.StepObserver`` that runs hook-table functions at vLLM's points."""

    def __init__(self, hooks: list[Hook], fault: str = ""):
        self.by_point: dict[str, list[_Entry]] = {}
        for h in hooks:
            self.by_point.setdefault(POINTS[h.name], []).append(_Entry(h, fault))
        self.single = {p: e[0] for p, e in self.by_point.items() if len(e) == 1}
        self.by_type: dict[tuple[str, type], _Entry | None] = {}

    def _pick(self, point: str, obj) -> _Entry | None:
        key = (point, type(obj))            # executors: one hook per class, chosen by the MRO
        if key not in self.by_type:
            names = {k.__name__ for k in type(obj).__mro__}
            self.by_type[key] = next((e for e in self.by_point.get(point, ()) if e.hook.cls_name in names), None)
        return self.by_type[key]

    def on_start(self, point, obj, args, kwargs):
        e = self.single.get(point) or self._pick(point, obj)
        if e is None or not e.hook.active:
            return None
        e.calls += 1
        timed = not e.calls % selfcost.SAMPLE_EVERY        # time our own cost on one call in SAMPLE_EVERY
        t0 = time.perf_counter_ns() if timed else 0
        try:
            state = e.pre(obj, args, kwargs)
        except Exception as err:
            e.hook.fail(err)
            return None
        if timed:
            selfcost.hook_self_ns[0] += (time.perf_counter_ns() - t0) * selfcost.SAMPLE_EVERY
        return (e, state, timed) if e.post is not None else None

    def on_end(self, point, token, result, error):
        if token is None:
            return
        e, state, timed = token
        t0 = time.perf_counter_ns() if timed else 0
        try:
            e.post(state, result, error)
        except Exception as err:
            e.hook.fail(err)
        if timed:
            selfcost.hook_self_ns[0] += (time.perf_counter_ns() - t0) * selfcost.SAMPLE_EVERY


_registered: list = []


def uninstall() -> None:
    while _registered:
        module, observer = _registered.pop()
        module.unregister_step_observer(observer)


def install(hooks: list[Hook], fault: str = "") -> set[str]:
    """If vLLM has step observers: register our observer when vLLM imports the module and return
    the names of the hooks it covers (not to be wrapped). Else: an empty set."""
    if not available():
        return set()
    covered = {h.name for h in hooks if h.name in POINTS}

    def on_import(module) -> None:
        try:
            missing = {n for n in covered if POINTS[n] not in module.POINTS}
            observer = HookObserver([h for h in hooks if h.name in covered and h.name not in missing], fault)
            module.register_step_observer(observer)
        except Exception as e:                 # an API we do not know: everything back to wrapt
            log.warning("vllm_w2ext: vLLM step observers unusable (%r); wrapping methods instead", e)
            covered.clear()
            return
        covered.difference_update(missing)     # points this vLLM lacks: back to wrapt
        _registered.append((module, observer))
        for h in hooks:
            if h.name in covered:
                h.attached = True

    wrapt.register_post_import_hook(on_import, MODULE)
    return covered
