"""benchmarks/hook_cost_engine.py's ``TimedFrees`` in place of the GPU timer's ``spent`` list: the borrowed end events
the export thread resolved wait there for vLLM's constructor to hand them out again (hooks/end_event.py); those beyond
``MAX_SPENT`` are freed at vLLM's thread's next ``stop`` (inside the worker's sample_tokens post), and the stand-in
times that free, counts the events, and starts afresh at ``take`` (stand-in GPU of test_gpu_timing)."""
import importlib.util
import sys
from pathlib import Path

from test_gpu_timing import at, gpu, make, samples, vllm_event  # noqa: F401  (gpu: the fixture)

_path = Path(__file__).resolve().parents[2] / "benchmarks" / "hook_cost_engine.py"


def _engine_script():
    sys.path.insert(0, str(_path.parent))          # its own imports (gc_by_thread) sit beside it
    try:
        spec = importlib.util.spec_from_file_location("_w2ext_hook_cost_engine", _path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(_path.parent))
    mod.GC.stop()                                  # it times collections from import on: not in this test process
    return mod


def test_the_free_of_resolved_end_events_is_timed_where_vllm_thread_does_it(gpu, monkeypatch):  # noqa: F811
    """Resolved events stay for vLLM's constructor (end_event) up to MAX_SPENT; beyond it vLLM's thread frees the
    oldest at its next stop (``free_oldest``), timed; ``take`` counts them and the events the constructor made
    meanwhile. The timer's list stays the same object (the constructor holds it)."""
    from vllm_w2ext.hooks import end_event, gpu_timing, worker
    hce = _engine_script()
    monkeypatch.setattr(gpu_timing, "MAX_SPENT", 1)
    monkeypatch.setattr(end_event, "MADE", [5])
    timer = make(gpu)
    spent = timer.spent
    monkeypatch.setattr(worker.S, "timer", timer)
    window = hce.Window(0, 100)
    window.on = True
    frees = hce._timed_frees(window)
    gpu.now = 99.0
    timer.stop(1, at(100.0), vllm_event(gpu))
    timer.stop(2, at(101.0), vllm_event(gpu))
    gpu.finish(100.5, 101.5)
    gpu.now = 102.0
    assert len(samples(timer)) == 2 and len(spent) == 2 and frees.calls == 0   # resolved on the export thread
    timer.stop(3, at(103.0), vllm_event(gpu))      # vLLM's thread: the oldest one freed here, timed
    assert timer.spent is spent and len(spent) == 1
    assert frees.calls == 1 and frees.freed == 1 and frees.ns > 0 and frees.steady_ns == frees.ns
    timer.stop(4, at(104.0), vllm_event(gpu))      # none beyond the bound: no free, no call
    assert frees.calls == 1
    end_event.MADE[0] += 3                         # vLLM's constructor made three meanwhile
    ns, calls, freed, steady_ns, made = frees.take()
    assert (calls, freed, made) == (1, 1, 3) and ns == steady_ns > 0 and frees.take() == (0, 0, 0, 0, 0)


def test_an_older_trees_clear_is_timed_instead(monkeypatch):
    """An A/B arm of an older tree frees every resolved event at each stop (``spent.clear()``) and has no
    ``free_oldest``: the list is replaced by one whose ``clear`` is timed, its events kept."""
    from vllm_w2ext.hooks import worker
    hce = _engine_script()
    old = type("OldTimer", (), {})()
    old.spent = ["e1", "e2"]
    monkeypatch.setattr(worker.S, "timer", old)
    frees = hce._timed_frees(hce.Window(0, 100))
    assert old.spent == ["e1", "e2"]
    old.spent.clear()
    old.spent.clear()                              # empty: nothing freed, no call
    assert old.spent == [] and (frees.calls, frees.freed) == (1, 2)


def test_vllm_frees_are_beside_the_direct_figures_not_in_them(monkeypatch):
    """``--counter-only``: the fronts' releases of vLLM's objects (``_cfront.freed``, under ``FREED``) and the
    collections inside their sections (``_cfront.collected``, under ``COLLECTED``) are reported per step beside the
    hooks, not summed into them; the steady window's readings add up window by window (planted
    readings of the fronts' counters, one tick a ns)."""
    mod = _engine_script()
    from vllm_w2ext.telemetry import selfcost
    monkeypatch.setattr(selfcost, "ns_per_tick", lambda: 0.5)
    tick = 0.5
    before = {"engine.step": (0, 0), mod.FREED: (0, 0), mod.COLLECTED: (0, 0)}
    after = {"engine.step": (round(10_000 / tick), 10), mod.FREED: (round(4_000 / tick), 10),
             mod.COLLECTED: (round(30_000 / tick), 2)}
    got = mod.direct_by_hook(before, after, 10)
    assert abs(got["us_per_step"] - 1.0) < 0.02 and list(got["hooks"]) == ["engine.step"]
    assert abs(got["vllm_frees"]["us_per_step"] - 0.4) < 0.02 and got["vllm_frees"]["releases_per_step"] == 1.0
    assert abs(got["collections_in_hooks"]["us_per_step"] - 3.0) < 0.02           # beside them too
    assert got["collections_in_hooks"]["sections_per_step"] == 0.2

    readings = iter([{"engine.step": (0, 0)}, {"engine.step": (round(2_000 / tick), 2)},
                     {"engine.step": (round(5_000 / tick), 3)}, {"engine.step": (round(9_000 / tick), 5)}])
    mod._fronts_direct = lambda: next(readings)
    from vllm_w2ext.hooks import engine_core
    monkeypatch.setattr(engine_core.S, "step", 0)
    steady = mod.SteadyDirect(mod.Window(0, 10))
    for step0, step1 in ((0, 2), (5, 7)):          # two windows: 2 steps, then 2 steps
        engine_core.S.step = step0
        steady._open = (mod._fronts_direct(), step0)
        engine_core.S.step = step1
        steady.close()
    got = steady.take()
    assert got["steps"] == 4 and abs(got["us_per_step"] - (2 + 4) / 4) < 0.02   # (2 µs, then 9 - 5 = 4 µs)
