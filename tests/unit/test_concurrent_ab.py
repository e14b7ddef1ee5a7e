"""The side-by-side A/B's arithmetic (benchmarks/gpu/concurrent_ab.py) on planted runs: two engines whose
steps slow down together with the host, one of them by a planted cost."""
import random

from gpu_scripts import load

concurrent_ab = load("concurrent_ab")


def run(cost: float, seed: int, t0: float = 1000.0, seconds: float = 60.0) -> dict:
    """A toggle_ab-shaped record: iterations of a prefill step and 127 decode steps whose time follows the
    host's speed at that moment (1.0, or 1.5 in slow spells of 2-6 s), times 1 + cost, +-2 % jitter."""
    rng = random.Random(seed)
    slow = random.Random(99)                          # the host: the same spells for both engines
    spells, t = [], t0
    while t < t0 + seconds:
        t += slow.uniform(2, 8)
        spells.append((t, t + slow.uniform(2, 6)))
        t = spells[-1][1]

    def speed(at):
        return 1.5 if any(a <= at < b for a, b in spells) else 1.0

    measures, t = [], t0 + rng.uniform(0, 0.3)
    while t < t0 + seconds:
        starts, steps = [], []
        for _ in range(2):
            starts.append(t)
            it = [9000]
            t += 0.009
            for _ in range(127):
                us = round(2200 * speed(t) * (1 + cost) * rng.uniform(0.98, 1.02))
                it.append(us)
                t += us / 1e6
            steps.append(it)
            t += 0.002
        measures.append({"workload": "lat1", "unit": "s", "on": True, "starts": starts, "steps_us": steps})
    return {"measures": measures}


def test_planted_cost_is_read_through_the_hosts_slow_spells():
    a, b = concurrent_ab.step_times(run(0.0, 1)), concurrent_ab.step_times(run(0.02, 2))
    s = concurrent_ab.windowed_cost(a, b, window_s=1.0)
    lo, hi = s["cost_90pct"]
    assert abs(s["cost_pct"] - 2.0) < 0.3 and lo < 2.0 < hi and hi - lo < 1.0, s
    assert s["a_window_medians_spread_pct"] > 40          # the host's spells are in the data
    assert s["windows"] >= 55 and s["window_median_correlation"] > 0.9    # slowed down together


def test_two_like_engines_read_no_cost():
    s = concurrent_ab.windowed_cost(concurrent_ab.step_times(run(0.0, 3)), concurrent_ab.step_times(run(0.0, 4)))
    lo, hi = s["cost_90pct"]
    assert abs(s["cost_pct"]) < 0.3 and lo < 0 < hi


def test_step_times_leave_out_the_prefill_and_follow_the_clock():
    doc = {"measures": [{"starts": [10.0], "steps_us": [[5000, 2000, 3000]]}]}
    got = concurrent_ab.step_times(doc)
    assert [us for _, us in got] == [2000, 3000] and [round(t, 6) for t, _ in got] == [10.007, 10.01]


def test_runs_that_never_overlap_have_no_windows():
    assert concurrent_ab.windowed_cost([(1.0, 2000)], [(5.0, 2000)]) == {"windows": 0}
