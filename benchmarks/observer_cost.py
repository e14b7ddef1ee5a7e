"""Micro-benchmark: what the step-observer patch (patches/) costs per observed call, on this CPU.

The module the patches add (``patches/step_observer.py``, loaded as ``vllm.v1.step_observer``) is
timed on a method with one argument, as vLLM calls ``Scheduler.update_from_output`` etc.:
  - ``stock``: the undecorated method (vLLM without the patch);
  - ``observed_none``: decorated with ``@observe_step``, no observer registered (the patched vLLM as
    shipped: one global check, plus the decorator's call);
  - ``inline_guard``: for comparison, the cheapest possible guard, ``if _observers:`` written at the
    call site (what the decorator's check costs without its extra call);
  - ``observed_noop``: one registered observer whose callbacks do nothing;
  - plugin, no-op hook pre/post: ``wrapt`` (the monkeypatch path, hooks/runner.py) vs ``native``
    (hooks/native.py's observer).

    python benchmarks/observer_cost.py [--out benchmarks/results/cpu/observer_cost.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import timeit
from pathlib import Path

from vllm_w2ext.lab.lab_env import cpu_model

ROOT = Path(__file__).resolve().parent.parent
CALLS_PER_STEP = 5         # observed calls on the EngineCore thread per sync step (step, schedule,
                           # executor execute + sample, update); the worker adds 2 in its own process


def load_step_observer():
    spec = importlib.util.spec_from_file_location("vllm.v1.step_observer", ROOT / "patches" / "step_observer.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def per_call_ns(cases: dict, number: int, repeat: int) -> dict[str, float]:
    """Interleaved: every round times each case once (``setup`` then ``fn`` ``number`` times), so all
    cases see the same machine load; the minimum over rounds is the least disturbed."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeat):
        for name, (setup, fn, teardown) in cases.items():
            setup()
            best[name] = min(best[name], timeit.timeit(fn, number=number) / number * 1e9)
            teardown()
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/cpu/observer_cost.json"))
    ap.add_argument("--number", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=100)
    a = ap.parse_args(argv)
    so = load_step_observer()
    gate = so  # module whose _observers the inline guard reads

    class Stock:
        def update(self, x):
            return x

    class Patched:
        @so.observe_step("scheduler.update_from_output")
        def update(self, x):
            return x

    class Inline:
        def update(self, x):
            if gate._observers:
                return None
            return x

    stock, patched, inline = Stock(), Patched(), Inline()
    noop = so.StepObserver()

    # the plugin's two paths for one hook whose pre/post do nothing
    from vllm_w2ext.hooks.native import HookObserver
    from vllm_w2ext.hooks.runner import HookRunner
    from vllm_w2ext.hooks.spec import Hook
    hook = HookRunner(Hook("engine.update_from_output", "m", "Stock.update", lambda i, a, k: None,
                           lambda s, r, e: None))

    class Wrapped:
        def update(self, x):
            return x
    Wrapped.update = hook.bind(Wrapped.__dict__["update"])
    wrapped = Wrapped()
    plugin = HookObserver([hook])

    def nothing():
        return None

    def with_observer(obs, fn):
        return lambda: so.register_step_observer(obs), fn, lambda: so.unregister_step_observer(obs)

    res = per_call_ns({
        "stock": (nothing, lambda: stock.update(1), nothing),
        "observed_none": (nothing, lambda: patched.update(1), nothing),
        "inline_guard": (nothing, lambda: inline.update(1), nothing),
        "observed_noop": with_observer(noop, lambda: patched.update(1)),
        "plugin_wrapt": (nothing, lambda: wrapped.update(1), nothing),
        "plugin_native": with_observer(plugin, lambda: patched.update(1)),
    }, a.number, a.repeat)
    assert not so.step_observers()

    out = {
        "what": "ns per call of a one-argument method; min over interleaved rounds",
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "cpu_model": cpu_model()},
        "ns_per_call": {k: round(v, 1) for k, v in res.items()},
        "added_ns_per_call_no_observer": round(res["observed_none"] - res["stock"], 1),
        "added_ns_per_call_inline_guard": round(res["inline_guard"] - res["stock"], 1),
        "number": a.number, "rounds": a.repeat,
        "engine_calls_per_step": CALLS_PER_STEP,
        "added_ns_per_engine_step_no_observer": round((res["observed_none"] - res["stock"]) * CALLS_PER_STEP, 1),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
