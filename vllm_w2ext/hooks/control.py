"""Pause and resume every hook of an engine, in every process it has (front end, EngineCore, workers).

``set_everywhere(llm, on)`` reaches each process through vLLM's own control paths: the front end
directly, the EngineCore through a utility call (``EngineCoreClient.call_utility``, which calls a method
of that name on the EngineCore) and the workers through ``LLM.collective_rpc`` by method name (no pickled
callable, so no ``VLLM_ALLOW_INSECURE_SERIALIZATION``). For that, ``instrument()`` adds one method,
``w2ext_set_active``, to vLLM's ``EngineCore`` and ``WorkerBase`` classes (``uninstrument()`` removes it).
Each process answers with its pid, its hook-call count, which does not grow while paused, and how often its
export thread has woken (``export_wakes``: it sleeps while paused, ``Pipeline.set_running``): the in-engine
A/B (``benchmarks/gpu/toggle_ab.py``) and tests/test_parallel_engines.py check that. Call it with no request
in flight.
"""
from __future__ import annotations

import os
import sys

UTILITY = "w2ext_set_active"
TARGETS = (("vllm.v1.engine.core", "EngineCore"), ("vllm.v1.worker.worker_base", "WorkerBase"))


def _set_active(self, on: bool) -> dict:
    """Switch this process; its pid, hook calls, and export-thread wakes read before the switch (so a pause's own
    flush counts in the paused interval, a resume's in the running one)."""
    from vllm_w2ext.hooks import INSTRUMENTOR
    from vllm_w2ext.telemetry import pipeline
    wakes = pipeline.export_wakes()
    return {"pid": os.getpid(), "calls": INSTRUMENTOR.set_active(bool(on)), "export_wakes": wakes}


def attach(module, cls_name: str) -> None:
    cls = getattr(module, cls_name, None)
    if cls is not None and UTILITY not in vars(cls):
        setattr(cls, UTILITY, _set_active)


def detach() -> None:
    for mod_name, cls_name in TARGETS:
        cls = getattr(sys.modules.get(mod_name), cls_name, None)
        if cls is not None and vars(cls).get(UTILITY) is _set_active:
            delattr(cls, UTILITY)


def set_everywhere(llm, on: bool, front: bool = True, engine: bool = True) -> dict:
    """Pause (``False``) or resume every hook of ``llm``'s processes; each one's pid, hook calls and export wakes:
    ``{"front": {...}, "engine": [{...}, ...]}`` (the EngineCore, then each worker; at TP=1 on the GPU
    the worker runs inside the EngineCore, so that pid appears twice). ``front`` / ``engine`` False: that side
    is left as it is and not listed (``"front"`` absent, ``"engine"`` empty), to tell their costs apart."""
    out: dict = {"engine": []}
    if front:
        out["front"] = _set_active(None, on)
    if engine:
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if hasattr(core, "call_utility"):            # an EngineCore in its own process
            out["engine"].append(core.call_utility(UTILITY, on))
        out["engine"] += list(llm.collective_rpc(UTILITY, args=(on,)))
    return out
