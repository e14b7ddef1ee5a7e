"""hooks.cost_budget: the N that keeps the plugin's measured share of the wall time under VLLM_W2EXT_COST_BUDGET,
from planted (time, cumulative cost) readings: doubled after a window over the budget (never 2), held inside
the band, halved back to the configured SAMPLE after windows under 0.4x the budget, capped, one decision per
window, none while the engine is idle."""
from types import SimpleNamespace as NS

import pytest

from vllm_w2ext.hooks.cost_budget import LOWER, MAX_EVERY, WINDOW_S, CostBudget, effective_share


class Run:
    """A CostBudget fed one reading per window, each window's cost the planted share of it."""

    def __init__(self, budget: float, base: int = 1):
        self.b = CostBudget(budget, base)
        self.t, self.c, self.steps, self.device = 100.0, 0.0, 0, (0, 0)
        self.b.update(self.t, self.c, self.steps, self.device)

    def windows(self, shares: list[float], steps: int = 500, idle: float | None = None) -> list:
        """The decisions (None: no change), one per window of ``steps`` engine steps; ``idle``: the device's
        planted idle share of its measured stepping time in each (None: no device timeline)."""
        out = []
        for share in shares:
            self.t += WINDOW_S
            self.c += share * WINDOW_S
            self.steps += steps
            if idle is not None:                          # 1 s of measured stepping, ns
                self.device = (self.device[0] + round(idle * 1e9), self.device[1] + round((1 - idle) * 1e9))
            out.append(self.b.update(self.t, self.c, self.steps, self.device))
        return out


def test_over_the_budget_doubles_n_skipping_two():
    r = Run(1.0)                                          # 1 % of the wall time
    assert r.windows([0.02, 0.02, 0.015]) == [4, 8, 16]
    assert r.b.every == 16 and r.b.share == pytest.approx(0.015)


def test_inside_the_band_n_holds():
    r = Run(1.0)
    r.windows([0.02, 0.02])                               # N = 8
    assert r.windows([0.009, 0.005, LOWER * 0.01 + 1e-6]) == [None, None, None]
    assert r.b.every == 8


def test_well_under_the_budget_n_falls_back_to_the_setting():
    r = Run(1.0)
    r.windows([0.02, 0.02, 0.02])                         # N = 16
    assert r.windows([0.001, 0.001, 0.001, 0.001]) == [8, 4, 1, None]


def test_the_configured_sample_is_the_floor_and_the_first_step_up_doubles_it():
    r = Run(0.5, base=10)
    assert r.windows([0.001]) == [None]                   # under the budget at the floor: stays
    assert r.windows([0.01, 0.01]) == [20, 40]
    assert r.windows([0.0, 0.0, 0.0]) == [20, 10, None]


def test_n_is_capped():
    r = Run(0.0001)
    got = r.windows([1.0] * 12)
    assert r.b.every == MAX_EVERY and got[-1] is None
    assert [n for n in got if n] == [4, 8, 16, 32, 64, 128, 256, 512, 1024]


def test_one_decision_per_window_whatever_the_polling_rate():
    """The export thread polls every 200 ms: readings inside a window decide nothing; the window's share is its
    cost over its whole length."""
    b = CostBudget(1.0)
    b.update(0.0, 0.0, 0)
    assert [b.update(t, t * 0.05, int(t * 500)) for t in (0.2, 0.4, 0.6, 0.8)] == [None] * 4
    assert b.update(1.0, 0.05, 500) == 4 and b.share == pytest.approx(0.05)
    assert b.update(1.2, 0.06, 600) is None


def test_a_device_that_never_waits_keeps_full_tracing():
    """A GPU-bound engine under async scheduling (the H200's 8B at batch 1: the plugin 1.78 % of the EngineCore's
    time, the device busy 99.99 %): the plugin's time does not delay the device, so a 1 % budget keeps every
    step; a CPU-bound one (4 layers: 3 % cost, the device idle 9 %) is thinned as without a device timeline."""
    gpu_bound = Run(1.0)
    assert gpu_bound.windows([0.0178] * 4, idle=0.0001) == [None] * 4
    assert gpu_bound.b.every == 1 and gpu_bound.b.cost_share == pytest.approx(0.0178)
    assert gpu_bound.b.idle_share == pytest.approx(0.0001) and gpu_bound.b.share == pytest.approx(0.0001)
    cpu_bound = Run(1.0)
    assert cpu_bound.windows([0.03, 0.03], idle=0.09) == [4, 8]
    assert cpu_bound.b.share == pytest.approx(0.03)


def test_the_cost_share_stands_alone_without_a_device_timeline():
    assert effective_share(0.02, None) == 0.02
    assert effective_share(0.02, 0.5) == 0.02 and effective_share(0.02, 0.001) == 0.001
    r = Run(1.0)
    assert r.windows([0.02]) == [4] and r.b.idle_share is None


def test_an_idle_engine_keeps_its_n_for_the_next_burst():
    """No step in a window: nothing to measure (the share reads ~0 only because nothing ran); N holds, and the
    next busy window decides again."""
    r = Run(1.0)
    r.windows([0.02, 0.02])                               # N = 8
    assert r.windows([0.0001, 0.0001, 0.0001], steps=0) == [None, None, None]
    assert r.b.every == 8
    assert r.windows([0.0001]) == [4]


def test_a_budget_must_be_positive():
    with pytest.raises(ValueError):
        CostBudget(0.0)


@pytest.mark.parametrize("env, budget", [({}, None), ({"VLLM_W2EXT_COST_BUDGET": "0"}, None),
                                         ({"VLLM_W2EXT_COST_BUDGET": "1"}, 0.01),
                                         ({"VLLM_W2EXT_COST_BUDGET": "2.5", "VLLM_W2EXT_SAMPLE": "8"}, 0.025)])
def test_the_engine_runs_a_budget_only_when_asked(monkeypatch, env, budget):
    """The EngineCore's first step starts the budget's watcher when one is set (its share of the wall time, with
    VLLM_W2EXT_SAMPLE as its floor), and none by default or at ``0``: full tracing is the default."""
    from vllm_w2ext import config
    from vllm_w2ext.hooks import engine_core
    from vllm_w2ext.hooks.runner import StepGate
    from vllm_w2ext.telemetry.recording import Recorder
    started = []
    rec = Recorder(1 << 10, None)
    monkeypatch.setattr(engine_core, "S", engine_core._State())
    monkeypatch.setattr(engine_core, "RECORDER", [rec])
    monkeypatch.setattr(engine_core, "GATE", StepGate())        # a light step shuts the gate: not the process's one
    monkeypatch.setattr(engine_core, "_watch_cost", started.append)
    monkeypatch.setattr(engine_core.identity, "set_role", lambda *a, **k: None)
    monkeypatch.setattr(config, "current", lambda: config.load({"VLLM_W2EXT": "1", **env}))
    core = NS(scheduler=NS(running=[], waiting=[]))
    engine_core._step_pre(core, (), {})
    engine_core._step_pre(core, (), {})
    if budget is None:
        assert started == []
    else:
        assert len(started) == 1 and started[0].budget == pytest.approx(budget)
        assert started[0].base == started[0].every == int(env.get("VLLM_W2EXT_SAMPLE", 1))
