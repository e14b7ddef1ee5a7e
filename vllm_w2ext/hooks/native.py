"""The native path: vLLM's own step observers (``vllm.v1.step_observer``, added by ``patches/``).

Where the installed vLLM has that module, the hooks of the step loop are not wrapped: one observer,
registered when vLLM imports the module (a post-import hook, per process, like the wrapt path),
drives the SAME runners (``runner.HookRunner``: pre/post, fault handling, fault injection, self-cost
sampling) at vLLM's observation points. Hooks outside the step loop stay on wrapt. The step loop's hooks then have
no C front, so the direct hook counter (``selfcost.direct``: every C-front call timed) does not see them: for
those hooks those processes report the sampled counters only.
"""
from __future__ import annotations

import importlib.util
import logging
import os

import wrapt

from vllm_w2ext.hooks.runner import HookRunner

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
    "engine.execute_model.MultiprocExecutor": "executor.execute_model",
    "engine.sample_tokens.MultiprocExecutor": "executor.sample_tokens",
    "worker.execute_model": "worker.execute_model",
    "worker.sample_tokens": "worker.sample_tokens",
}


def available() -> bool:
    """Does the installed vLLM have the step-observer API? Looks for the file: importing (or
    ``find_spec`` of a submodule, which imports its parents) would import vLLM and torch."""
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    rel = MODULE.split(".")[1:]
    return any(os.path.exists(os.path.join(d, *rel[:-1], rel[-1] + ".py")) for d in spec.submodule_search_locations)


def hook_path() -> str:
    return NATIVE_PATH if available() else WRAPT_PATH


class HookObserver:
    """A ``vllm.v1.step_observer.StepObserver`` that runs hook runners at vLLM's points."""

    def __init__(self, runners: list[HookRunner]):
        self.by_point: dict[str, list[HookRunner]] = {}
        for r in runners:
            self.by_point.setdefault(POINTS[r.spec.name], []).append(r)
        self.single = {p: rs[0] for p, rs in self.by_point.items() if len(rs) == 1}
        self.by_type: dict[tuple[str, type], HookRunner | None] = {}

    def _pick(self, point: str, obj) -> HookRunner | None:
        key = (point, type(obj))            # executors: one hook per class, chosen by the MRO
        if key not in self.by_type:
            names = {k.__name__ for k in type(obj).__mro__}
            self.by_type[key] = next((r for r in self.by_point.get(point, ()) if r.spec.cls_name in names), None)
        return self.by_type[key]

    def on_start(self, point, obj, args, kwargs):
        r = self.single.get(point) or self._pick(point, obj)
        if r is None:
            return None
        state = r.enter(obj, args, kwargs)
        return (r, state) if r.needs_exit(state) else None

    def on_end(self, point, token, result, error):
        if token is not None:
            token[0].exit(token[1], result, error)


_registered: list = []


def uninstall() -> None:
    while _registered:
        module, observer = _registered.pop()
        module.unregister_step_observer(observer)


def install(runners: list[HookRunner]) -> set[str]:
    """If vLLM has step observers: register our observer when vLLM imports the module and return
    the names of the hooks it covers (not to be wrapped). Else: an empty set."""
    if not available():
        return set()
    covered = {r.spec.name for r in runners if r.spec.name in POINTS}

    def on_import(module) -> None:
        try:
            missing = {n for n in covered if POINTS[n] not in module.POINTS}
            observer = HookObserver([r for r in runners if r.spec.name in covered - missing])
            module.register_step_observer(observer)
        except Exception as e:                 # an API we do not know: everything back to wrapt
            log.warning("vllm_w2ext: vLLM step observers unusable (%r); wrapping methods instead", e)
            covered.clear()
            return
        covered.difference_update(missing)     # points this vLLM lacks: back to wrapt
        _registered.append((module, observer))

    wrapt.register_post_import_hook(on_import, MODULE)
    return covered
