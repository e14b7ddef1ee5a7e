"""The switched-in-flight A/B's arithmetic (benchmarks/gpu/flip_steps.py) on planted step times: a known cost
under the H200 host's kind of drift (20-50 % over seconds), slow spells and the catch-up after each switch is
found within a fraction of a percent, an A/A run reads zero, and the naive on-vs-off comparison of the same
steps would not."""
import math
import random
import statistics

from gpu_scripts import load

flip_steps = load("flip_steps")


def planted(cost_pct: float, real: bool, start_on: bool, seed: int, steps: int = 3000, every: int = 64,
            drift: float = 0.35, catch_up: bool = True, spell_rate: float = 0.0005) -> dict:
    """A generate of ``steps`` decode steps of ~2 ms: the host's speed swings by ``drift`` over ~3 s and
    wanders, a 1.5x slow spell of 0.1-0.4 s about once a second (``spell_rate`` per step), 4 % noise per step; every ``every`` steps a switch,
    after which 3 steps come fast (outputs buffered during the round trip). Steps in an "on" block of a real
    flip take ``cost_pct`` % longer."""
    rng = random.Random(seed)
    out, t, walk, on, switches, spell = [], 0.0, 0.0, start_on, [], 0
    for i in range(steps):
        if i and i % every == 0:
            on = not on
            switches.append({"after": i, "on": on, "ms": 1.0, "counts": None})
        walk += rng.gauss(0, 0.001)
        base = 2000 * (1 + drift * math.sin(2 * math.pi * t / 3.0) + walk)
        if not spell and rng.random() < spell_rate:
            spell = rng.randint(50, 200)
        if spell:
            spell -= 1
            base *= 1.5
        x = base * (1 + (cost_pct / 100 if (on and real) else 0)) * (1 + rng.gauss(0, 0.04))
        if catch_up and switches and i - switches[-1]["after"] < 3:
            x = 150
        out.append(round(x))
        t += x / 1e6
    return {"steps_us": out, "switches": switches, "real": real, "start_on": start_on}


def gens(cost_pct: float, n: int = 8, **kw) -> list:
    return [planted(cost_pct, real=g % 2 == 0, start_on=(g // 2) % 2 == 0, seed=g, **kw) for g in range(n)]


def test_a_planted_cost_is_found_under_drift_and_the_aa_reads_zero():
    s = flip_steps.summarize(gens(2.0))
    lo, hi = s["flip"]["cost_90pct"]
    assert abs(s["flip"]["cost_pct"] - 2.0) < 0.5 and lo < 2.0 < hi and hi - lo < 1.5
    lo, hi = s["aa"]["cost_90pct"]
    assert abs(s["aa"]["cost_pct"]) < 0.5 and lo < 0 < hi
    assert s["flip"]["generates"] == 4 and s["flip"]["windows"] > 60
    # the naive comparison of the same blocks' levels (on against off, no neighbours) is at the drift's mercy
    levels = [lv for g in gens(2.0) if g["real"]
              for lv in flip_steps.block_levels(g["steps_us"], [x["after"] for x in g["switches"]], g["start_on"])]
    naive = statistics.median(x for on, x, _ in levels if on) / statistics.median(x for on, x, _ in levels if not on)
    assert abs((naive - 1) * 100 - 2.0) > abs(s["flip"]["cost_pct"] - 2.0)


def test_no_cost_reads_zero_and_the_settle_steps_matter():
    s = flip_steps.summarize(gens(0.0))
    assert abs(s["flip"]["cost_pct"]) < 0.5
    # without leaving the catch-up steps out, the fast steps after each switch reach the blocks' levels
    # only through the median: the estimate stays put, which is why a median and not a mean per block
    s0 = flip_steps.summarize(gens(0.0), settle=0)
    assert abs(s0["flip"]["cost_pct"]) < 1.0


def test_block_levels_states_and_first_block_dropped():
    steps = [100] * 10 + [200] * 10 + [300] * 10
    lv = flip_steps.block_levels(steps, [10, 20], start_on=True, settle=2)
    assert lv == [(False, 200, 8), (True, 300, 8)]                 # block 0 (prefill) left out
    assert flip_steps.block_levels(steps, [10, 27], True, settle=2)[1] == (True, None, 1)


def test_centred_cost_signs():
    # off 100 | on 110 | off 100: +10 %; on 110 | off 100 | on 110: +10 % too
    assert [round(c, 6) for c in flip_steps.window_costs([(False, 100, 9), (True, 110, 9), (False, 100, 9)], 2)] == [10.0]
    assert [round(c, 6) for c in flip_steps.window_costs([(True, 110, 9), (False, 100, 9), (True, 110, 9)], 2)] == [10.0]
    # a linear drift cancels: 100, 102, 104 with the middle one "on" and no cost
    assert [round(c, 6) for c in flip_steps.window_costs([(False, 100, 9), (True, 102, 9), (False, 104.04, 9)], 2)] == [0.0]


class _Engine:
    """An object with a ``step`` method, as the Flipper needs (its own mechanics, no vLLM)."""

    def __init__(self):
        self.n = 0

    def step(self):
        self.n += 1
        return self.n


def test_flipper_switches_every_n_steps_and_aa_always_resumes():
    calls = []
    eng = _Engine()
    f = flip_steps.Flipper(eng, lambda on: calls.append(on) or {"on": on})
    t0 = f.begin(3, real=True, on=True)
    for _ in range(7):
        eng.step()
    g = f.end(t0)
    assert calls == [False, True] and [s["after"] for s in g["switches"]] == [3, 6]
    assert [s["on"] for s in g["switches"]] == [False, True] and len(g["steps_us"]) == 7
    eng.step()                                          # after end(): timed, never switched
    assert calls == [False, True]
    calls.clear()
    t0 = f.begin(2, real=False, on=True)
    for _ in range(6):
        eng.step()
    g = f.end(t0)
    assert calls == [True, True, True] and [s["on"] for s in g["switches"]] == [False, True, False]


class _Outputs:
    def __init__(self, timestamp):
        self.timestamp = timestamp


class _Core:
    """An EngineCore client whose outputs were made ``lag_s`` before they are taken."""

    def __init__(self, lag_s):
        self.lag_s = lag_s

    def get_output(self):
        import time
        return _Outputs(time.monotonic() - self.lag_s)


class _OfflineEngine:
    def __init__(self, lag_s):
        self.engine_core = _Core(lag_s)

    def step(self):
        return self.engine_core.get_output()


def test_flipper_reads_the_engine_clock_and_the_front_lag():
    eng = _OfflineEngine(lag_s=0.005)
    f = flip_steps.Flipper(eng, lambda on: {"on": on})
    t0 = f.begin(4, real=True, on=True)
    for _ in range(9):
        eng.step()
    g = f.end(t0)
    assert len(g["engine_steps_us"]) == len(g["front_lag_us"]) == len(g["steps_us"]) == 9
    assert all(4900 <= x < 50_000 for x in g["front_lag_us"])          # the planted 5 ms, on one clock
    assert all(x >= 0 for x in g["engine_steps_us"][1:])
    plain = _Engine()
    bare = flip_steps.Flipper(plain, lambda on: {"on": on})          # no engine_core: the front clock alone
    t0 = bare.begin(0, real=True, on=True)
    plain.step()
    plain.step()
    g = bare.end(t0)
    assert len(g["steps_us"]) == 2 and "engine_steps_us" not in g and "front_lag_us" not in g


def test_a_cost_on_the_engine_clock_alone_is_told_from_the_front_clock():
    """The EngineCore slowed in "on" blocks while the front end's returns are not (planted on separate clocks):
    the engine clock reads the cost, the front clock zero; the lag's growth is read from a planted ramp."""
    out = []
    for g in range(8):
        front = planted(0.0, real=g % 2 == 0, start_on=(g // 2) % 2 == 0, seed=g)
        engine = planted(2.0, real=g % 2 == 0, start_on=(g // 2) % 2 == 0, seed=100 + g)
        n = len(front["steps_us"])
        out.append(dict(front, engine_steps_us=engine["steps_us"], front_lag_us=[100 + i for i in range(n)]))
    front_clock, engine_clock = flip_steps.summarize(out), flip_steps.summarize(out, clock="engine")
    assert abs(front_clock["flip"]["cost_pct"]) < 0.5
    assert abs(engine_clock["flip"]["cost_pct"] - 2.0) < 0.5 and abs(engine_clock["aa"]["cost_pct"]) < 0.5
    lag = engine_clock["flip"]["front_lag_us"]
    assert lag["growth"] == 2700 and 400 < lag["median"] < 3100       # 3000 steps: first tenth ~150, last ~2850
    assert flip_steps.summarize([{k: v for k, v in g.items() if k != "engine_steps_us"} for g in out],
                                clock="engine") == {}


def _scoped(scope: str, cost_pct: float, seed0: int, n: int = 8) -> list:
    out = []
    for g in range(n):
        gen = planted(cost_pct, real=g % 2 == 0, start_on=(g // 2) % 2 == 0, seed=seed0 + g)
        out.append(dict(gen, workload="flip1", scope=scope))
    return out


def test_scope_gap_reads_a_cost_that_either_side_brings_alone():
    # planted: the front end's own 0.3 %, the engine's own 0.2 %, and 0.8 % that comes as soon as either side is
    # on. Switched alone, each side reads only its own (the other side keeps the shared 0.8 on); every process
    # switched reads all of it: 1.3 %.
    by_scope = {"all": _scoped("all", 1.3, 0), "front": _scoped("front", 0.3, 100), "engine": _scoped("engine", 0.2, 200)}
    g = flip_steps.scope_gap(by_scope)
    lo, hi = g["gap_90pct"]
    assert abs(g["gap_pct"] - 0.8) < 0.5 and lo < 0.8 < hi and g["clock"] == "front"
    # additive costs: the gap reads zero
    by_scope["all"] = _scoped("all", 0.5, 0)
    g = flip_steps.scope_gap(by_scope)
    lo, hi = g["gap_90pct"]
    assert abs(g["gap_pct"]) < 0.5 and lo < 0 < hi
    # without one of the three scopes, or without the clock's record: nothing
    assert flip_steps.scope_gap({"all": by_scope["all"], "front": by_scope["front"]}) == {}
    assert flip_steps.scope_gap(by_scope, clock="engine") == {}


def test_scope_groups_split_a_rotating_run_only():
    one = _scoped("front", 0.0, 0, n=2)
    assert list(flip_steps.scope_groups(one)) == ["flip1"]
    legacy = [{k: v for k, v in g.items() if k != "scope"} for g in one]          # from before scopes were kept
    assert list(flip_steps.scope_groups(legacy)) == ["flip1"]
    rot = _scoped("all", 0.0, 0, n=2) + one + _scoped("engine", 0.0, 0, n=2)
    groups = flip_steps.scope_groups(rot)
    assert list(groups) == ["flip1@all", "flip1@front", "flip1@engine"]
    assert all(len(v) == 2 for v in groups.values())
    gaps = flip_steps.scope_gaps(groups)
    assert list(gaps) == ["flip1@gap"] and gaps["flip1@gap"]["engine"] == {}


def _with_bursts(g: dict, every: int, extra_us: int) -> dict:
    """``g`` with one step in every ``every`` made ``extra_us`` longer wherever the plugin runs (an export thread
    that holds the GIL once per interval): in a real flip's "on" blocks, in every block of an A/A one."""
    bounds = [0, *[s["after"] for s in g["switches"]], len(g["steps_us"])]
    steps = list(g["steps_us"])
    for k in range(len(bounds) - 1):
        if g["real"] and not flip_steps.block_on(k, g["start_on"]):
            continue
        for i in range(bounds[k], bounds[k + 1]):
            if i % every == every // 2:
                steps[i] += extra_us
    return dict(g, steps_us=steps)


def test_a_cost_on_few_steps_is_missed_by_the_median_and_read_by_the_tails():
    # planted: no per-step cost, but one step in 125 takes 1.2 ms longer while the plugin is on: 9.6 µs per step,
    # ~0.5 % of these ~2 ms steps. The blocks' medians do not see it; their tails do, and the A/A's tails read zero.
    # A host that drifts and wanders but has no slow spells (those are the tails' noise: read between generates)
    bursty = [_with_bursts(g, 125, 1200) for g in gens(0.0, n=12, spell_rate=0.0)]
    s = flip_steps.summarize(bursty)
    assert abs(s["flip"]["cost_pct"]) < 0.3
    tail = s["flip"]["tail_us"]
    assert abs(tail["diff"] - 9.6) < 2.5 and len(tail["per_generate"]) == 6     # (6 generates' noise: ~1.6 µs each)
    assert tail["on"] > tail["off"] > 0
    assert abs(s["aa"]["tail_us"]["diff"]) < 2.5
    # without the bursts the tails read no difference either way
    quiet = flip_steps.summarize(gens(0.0, n=12, spell_rate=0.0))
    assert abs(quiet["flip"]["tail_us"]["diff"]) < 2.5


def test_block_tails_of_known_steps():
    steps = [100] * 10 + [100] * 8 + [150, 400] + [100] * 10
    tails = flip_steps.block_tails(steps, [10, 20], start_on=True, settle=2, cap=3.0)
    assert tails == [(False, 50, 7), (True, 0, 8)]       # block 1: 150 above its median by 50, 400 (> 3x) left out
    assert flip_steps.tail_diff_us(tails) == (0.0, 50 / 7, -50 / 7)
    assert flip_steps.tail_diff_us([(True, 5, 4)]) is None
