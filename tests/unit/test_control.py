"""hooks/control.py: the pause/resume method is added to vLLM's classes and removed again, and
set_everywhere reaches the front end, the EngineCore (a utility call) and the workers (collective_rpc by
method name), each answering with its pid and hook calls. Stand-ins for vLLM's objects; the real engine is
covered by tests/test_parallel_engines.py (TP=2: every process's count stays put while paused)."""
import sys
import types

from vllm_w2ext.hooks import INSTRUMENTOR, control


def test_attach_and_detach(monkeypatch):
    mod = types.ModuleType("vllm.v1.engine.core")
    exec("class EngineCore:\n    pass\n", mod.__dict__)
    monkeypatch.setitem(sys.modules, "vllm.v1.engine.core", mod)
    control.attach(mod, "EngineCore")
    assert mod.EngineCore().w2ext_set_active(True)["calls"] >= 0
    control.detach()
    assert not hasattr(mod.EngineCore, control.UTILITY)


def test_set_everywhere_asks_every_process():
    calls = []

    class Core:
        def call_utility(self, method, *args):
            calls.append(("utility", method, args))
            return {"pid": 2, "calls": 7}

    class LLM:
        llm_engine = types.SimpleNamespace(engine_core=Core())

        def collective_rpc(self, method, args=()):
            calls.append(("rpc", method, args))
            return [{"pid": 3, "calls": 5}, {"pid": 4, "calls": 5}]

    got = control.set_everywhere(LLM(), False)
    try:
        assert calls == [("utility", "w2ext_set_active", (False,)), ("rpc", "w2ext_set_active", (False,))]
        assert [p["pid"] for p in got["engine"]] == [2, 3, 4] and "calls" in got["front"]
        assert all(not r.active for r in INSTRUMENTOR.runners.values())
    finally:
        INSTRUMENTOR.set_active(True)


def test_set_everywhere_one_side_only():
    """``engine=False`` switches the front end alone, ``front=False`` the engine's processes alone: the side left
    out is not called and not listed."""
    calls = []

    class Core:
        def call_utility(self, method, *args):
            calls.append("utility")
            return {"pid": 2, "calls": 7}

    class LLM:
        llm_engine = types.SimpleNamespace(engine_core=Core())

        def collective_rpc(self, method, args=()):
            calls.append("rpc")
            return [{"pid": 3, "calls": 5}]

    try:
        got = control.set_everywhere(LLM(), False, engine=False)
        assert calls == [] and got["engine"] == [] and "calls" in got["front"]
        assert all(not r.active for r in INSTRUMENTOR.runners.values())
        INSTRUMENTOR.set_active(True)
        got = control.set_everywhere(LLM(), False, front=False)
        assert calls == ["utility", "rpc"] and "front" not in got and [p["pid"] for p in got["engine"]] == [2, 3]
        assert all(r.active for r in INSTRUMENTOR.runners.values())   # this (front-end) process left on
    finally:
        INSTRUMENTOR.set_active(True)
