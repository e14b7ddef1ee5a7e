"""What in vLLM is wrapped: one table per component (front, engine_core, worker, lifecycle).

``Instrumentor.instrument()`` makes one runner per hook and registers a post-import hook per vLLM
module (``wrapt.register_post_import_hook``), so a class is patched when - and only in the processes
where - its module is imported: the worker module is never imported by the front end just to patch it.
``uninstrument()`` unwraps everything and unregisters the native observer; instrumenting again works
(tests/unit/test_instrumentor.py), as OpenTelemetry's instrumentors do.
"""
from __future__ import annotations

import importlib
import logging
import sys

import wrapt

from vllm_w2ext.hooks import bounds, control, end_event, native
from vllm_w2ext.hooks.runner import GATE, HookRunner, front_kind
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.hooks.wrapping import attach, detach, is_wrapped, resolve

log = logging.getLogger("vllm_w2ext")


def all_hooks() -> list[Hook]:
    from vllm_w2ext.hooks import engine_core, front, lifecycle, worker
    return front.HOOKS + engine_core.HOOKS + worker.HOOKS + lifecycle.HOOKS


class Instrumentor:
    def __init__(self, hooks: list[Hook] | None = None) -> None:
        self.hooks = all_hooks() if hooks is None else hooks
        self.runners: dict[str, HookRunner] = {}
        self.active = False
        self._registered: set = set()          # (kind, module name) with a post-import hook (_when_imported)
        self.native: set[str] = set()      # hooks run by vLLM's step observers (hooks/native.py)

    def instrument(self, fault: str = "") -> None:
        if self.active:
            return
        self.active = True
        from vllm_w2ext.hooks import instance
        instance.install()                         # the instance's metrics folder, before engines start
        from vllm_w2ext.telemetry import selfcost
        selfcost.register(h.name for h in self.hooks)
        self.runners = {h.name: HookRunner(h, fault) for h in self.hooks}
        GATE.use(self.runners.values())
        bounds.MODE.use(self.runners.values())
        self.native = native.install(list(self.runners.values()))
        for mod_name, cls_name in control.TARGETS:   # the pause/resume method (hooks/control.py)
            self._when_imported("control", mod_name, lambda m, c=cls_name: control.attach(m, c))
        from vllm_w2ext import config
        if config.current().device_timing == "on":  # vLLM's step-end event, timed (hooks/end_event.py)
            for mod_name, _, _ in end_event.SOURCES:
                self._when_imported("end_event", mod_name, end_event.on_import)
        for mod_name in dict.fromkeys(r.spec.module for r in self.runners.values()):
            self._when_imported("hooks", mod_name, lambda m, name=mod_name: self._on_import_named(m, name))

    def _when_imported(self, kind: str, mod_name: str, fn) -> None:
        """``fn(module)`` once vLLM imports ``mod_name`` (at once if it is imported already), while instrumented.
        wrapt cannot unregister a post-import hook: each (kind, module) registers once, and instrumenting again
        after ``uninstrument()`` calls ``fn`` itself for a module already imported."""
        if (kind, mod_name) not in self._registered:
            self._registered.add((kind, mod_name))
            wrapt.register_post_import_hook(lambda m: fn(m) if self.active else None, mod_name)
        elif mod_name in sys.modules:
            fn(sys.modules[mod_name])

    def _on_import_named(self, module, mod_name: str) -> None:
        """The current runners (a later instrumentation's after uninstrument()) whose class is in ``mod_name``."""
        self._on_import(module, [r for r in self.runners.values() if r.spec.module == mod_name])

    def _on_import(self, module, runners: list[HookRunner]) -> None:
        for r in runners:
            h = r.spec
            if h.name in self.native:
                continue
            try:
                ok = attach(r, module)
            except Exception as e:  # never break vLLM's import
                log.warning("vllm_w2ext: could not wrap %s.%s: %r", h.module, h.target, e)
                continue
            if not ok and not h.optional:
                log.warning("vllm_w2ext: %s.%s not found in this vLLM; hook %s skipped",
                            h.module, h.target, h.name)

    def set_active(self, on: bool) -> int:
        """Pause (``False``) or resume every hook of this process without unwrapping: a paused hook
        calls vLLM's method straight through (one attribute test). Bound methods that vLLM captured
        at start-up (``EngineCore.step_fn``) keep the wrapper, so pausing reaches them where
        ``uninstrument()`` does not. Resuming also re-enables hooks a fault switched off. Call it
        between steps (with no request in flight), as ``benchmarks/gpu/toggle_ab.py`` does. Returns the
        hook calls counted so far in this process (``HookRunner.calls``: they do not grow while paused, and the
        bounds hooks timed in their clock's windows count none). The export thread sleeps
        while paused (``Pipeline.set_running``)."""
        from vllm_w2ext.telemetry import pipeline
        if on:                      # the paused steps ran unrecorded: no gap or idle measured across them
            from vllm_w2ext.hooks import worker
            worker.forget_previous_step()
        for r in self.runners.values():
            r.pause(on)
        pipeline.set_running(on)
        return sum(r.calls for r in self.runners.values())

    def uninstrument(self) -> None:
        """Unwrap every method and unregister the native observer (post-import hooks stay registered
        with wrapt, which has no way to remove them; they do nothing while inactive)."""
        self.active = False
        GATE.use(())                               # every gated hook switched on again, then forgotten
        bounds.MODE.use(())
        native.uninstall()
        control.detach()
        end_event.detach()
        for h in self.hooks:
            mod = sys.modules.get(h.module)
            if mod is not None:
                detach(h, mod)


INSTRUMENTOR = Instrumentor()


def doctor_rows(import_modules: bool = True) -> list[dict]:
    """For every hook: does its target exist in the installed vLLM, and is it wrapped now?"""
    rows = []
    via_native = native.available()
    for h in all_hooks():
        mod = sys.modules.get(h.module)
        err = ""
        if mod is None and import_modules:
            try:
                mod = importlib.import_module(h.module)
            except Exception as e:
                err = f"{type(e).__name__}: {e}"
        found = mod is not None and resolve(h, mod) is not None
        cls = getattr(mod, h.cls_name, None) if mod is not None else None
        wrapped = bool(cls is not None and is_wrapped(cls, h.method))
        rows.append({"hook": h.name, "role": h.role, "target": f"{h.module}.{h.target}",
                     "attaches": found, "wrapped": wrapped,
                     "front": front_kind(vars(cls)[h.method]) if wrapped else "",
                     "native": via_native and h.name in native.POINTS,
                     "optional": h.optional, "note": h.note, "import_error": err})
    return rows
