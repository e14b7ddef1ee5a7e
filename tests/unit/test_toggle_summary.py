"""The in-engine A/B's arithmetic (benchmarks/gpu/toggle_ab.py) on planted records: the cost per block, its
sign for latency and throughput, and the switch check that proves the paused blocks ran no hook."""
import pytest

from gpu_scripts import load

toggle_ab = load("toggle_ab")


def counts(front: int, engine: int) -> dict:
    return {"front": {"pid": 1, "calls": front}, "engine": [{"pid": 2, "calls": engine}]}


def doc(engine_calls_while_paused: int = 0) -> dict:
    ms = []
    for b, (lat_on, lat_off, thr_on, thr_off) in enumerate([(1.02, 1.00, 98.0, 100.0), (1.04, 1.00, 99.0, 100.0)]):
        ms += [{"workload": "lat1", "unit": "s", "block": b, "on": True, "value": lat_on},
               {"workload": "lat1", "unit": "s", "block": b, "on": False, "value": lat_off},
               {"workload": "thr", "unit": "tok/s", "block": b, "on": True, "value": thr_on},
               {"workload": "thr", "unit": "tok/s", "block": b, "on": False, "value": thr_off}]
    sw = [{"block": 0, "on": True, "counts": counts(0, 0)},
          {"block": 0, "on": False, "counts": counts(10, 20)},
          {"block": 1, "on": False, "counts": counts(10, 20 + engine_calls_while_paused)},
          {"block": 1, "on": True, "counts": counts(10, 20 + engine_calls_while_paused)},
          {"block": "end", "on": True, "counts": counts(30, 50)}]
    return {"measures": ms, "switches": sw}


def test_cost_per_block_and_sign():
    s = toggle_ab.summarize(doc())
    assert [round(c, 6) for c in s["lat1"]["cost_pct"]] == [2.0, 4.0]      # slower latency = positive cost
    assert [round(c, 6) for c in s["thr"]["cost_pct"]] == [2.0, 1.0]       # fewer tok/s = positive cost
    assert round(s["lat1"]["median_cost_pct"], 6) == 3.0 and s["lat1"]["pairs"] == 2
    assert s["lat1"]["off_spread_pct"] == 0.0
    assert s["switches_checked"] == {"intervals": 8, "ok": True, "bad": []}


def test_a_hook_running_while_paused_is_caught():
    s = toggle_ab.summarize(doc(engine_calls_while_paused=3))
    bad = s["switches_checked"]["bad"]
    assert not s["switches_checked"]["ok"] and len(bad) == 1
    assert bad[0]["on"] is False and bad[0]["pid"] == 2 and bad[0]["calls"] == [20, 23]


def test_one_process_answering_twice_is_checked_at_its_switch():
    """TP=1 on the GPU: the EngineCore and its in-process worker share a pid and both answer; the second
    answer (collective_rpc) comes after the EngineCore already resumed and ran a few hooks. The check uses
    each process's first answer, taken when it switched (the H200 4-layer toggle of 2026-11-30)."""
    def c(front, first, second):
        return {"front": {"pid": 1, "calls": front}, "engine": [{"pid": 2, "calls": first}, {"pid": 2, "calls": second}]}
    sw = [{"block": 0, "on": True, "counts": c(1, 10, 10)},
          {"block": 0, "on": False, "counts": c(781, 2342, 2342)},
          {"block": 1, "on": True, "counts": c(781, 2342, 2344)},
          {"block": "end", "on": True, "counts": c(1561, 4675, 4675)}]
    assert toggle_ab.check_switches(sw)["ok"]
    sw[2]["counts"] = c(781, 2343, 2344)                          # a hook ran while paused: still caught
    assert not toggle_ab.check_switches(sw)["ok"]


def test_quantile_cost_sees_through_a_slow_episode():
    """Planted: resumed iterations take 2 % longer than paused ones; in one block the host's slow episode
    (benchmarks/results/h200/noise) makes every paused iteration 40 % slower. The per-block median cost
    swings with it; the low-quantile cost stays at the planted 2 %, inside its bootstrap interval."""
    ms = []
    for b in range(8):
        base = [0.180, 0.182, 0.184, 0.186, 0.188]
        off = [t * (1.4 if b == 3 else 1.0) for t in base]
        ms += [{"workload": "lat1", "unit": "s", "block": b, "on": True, "value": sum(base) * 1.02 / 5,
                "iters": [t * 1.02 for t in base]},
               {"workload": "lat1", "unit": "s", "block": b, "on": False, "value": sum(off) / 5, "iters": off}]
    s = toggle_ab.summarize({"measures": ms, "switches": []})["lat1"]
    assert round(s["quantile_cost_pct"], 6) == 2.0
    lo, hi = s["quantile_cost_90pct"]
    assert lo <= 2.0 + 1e-9 and hi >= 2.0 - 1e-9 and hi - lo < 1.0
    assert s["units"] == 80 and min(s["cost_pct"]) < -25          # the block mean saw the episode


def test_quantile_cost_of_throughput_is_read_as_time_per_token():
    ms = [{"workload": "thr", "unit": "tok/s", "block": b, "on": on, "value": 98.0 if on else 100.0}
          for b in range(4) for on in (True, False)]
    s = toggle_ab.summarize({"measures": ms, "switches": []})["thr"]
    assert round(s["quantile_cost_pct"], 6) == round((100 / 98 - 1) * 100, 6)    # fewer tok/s = positive cost


def _iteration_steps(rng, factor: float, slow_runs: int) -> list[int]:
    """One latency iteration's step intervals (µs): a prefill step, then 127 decode steps of ~2,200 µs with
    +-2 % jitter, times ``factor``; ``slow_runs`` host episodes each make 40 consecutive steps 1.5x slower."""
    steps = [2200 * factor * rng.uniform(0.98, 1.02) for _ in range(127)]
    for _ in range(slow_runs):
        at = rng.randrange(0, 127 - 40)
        steps[at:at + 40] = [t * 1.5 for t in steps[at:at + 40]]
    return [9000] + [round(t) for t in steps]


def test_step_cost_reads_the_planted_cost_through_slow_episodes():
    """Planted: resumed steps take 1.5 % longer; slow host episodes (1.5x for 40 steps) land at random, 0 or 1 per
    iteration in either state (a sixth of the steps on average). Whole iterations swing with the episodes (a block's cost goes negative); the decode
    steps' quartile and median stay at the planted 1.5 % within their intervals, and each state's levels come out."""
    import random
    rng = random.Random(7)
    ms = []
    for b in range(16):
        for on in (True, False):
            its = [_iteration_steps(rng, 1.015 if on else 1.0, rng.randrange(0, 2)) for _ in range(2)]
            lat = [sum(it) / 1e6 for it in its]
            ms.append({"workload": "lat1", "unit": "s", "block": b, "on": on, "value": sum(lat) / 2, "iters": lat,
                       "steps_us": its})
    s = toggle_ab.summarize({"measures": ms, "switches": []})["lat1"]
    for key in ("step_p25", "step_p50"):
        lo, hi = s[f"{key}_cost_90pct"]
        assert abs(s[f"{key}_cost_pct"] - 1.5) < 0.3 and lo < 1.5 < hi and hi - lo < 1.0, (key, s[f"{key}_cost_pct"], lo, hi)
    assert min(s["cost_pct"]) < -5                               # a block's mean saw the episodes
    assert s["steps_on"]["decode_steps"] == s["steps_off"]["decode_steps"] == 16 * 2 * 127
    assert 2150 < s["steps_off"]["step_p25_us"] < s["steps_on"]["step_p25_us"] < 2300


def test_a_stock_or_plugin_run_reports_its_step_levels():
    its = [[9000] + [2000 + i for i in range(100)]]
    doc = {"measures": [{"workload": "lat1", "unit": "s", "block": 0, "on": True, "value": 0.2, "iters": [0.2],
                         "steps_us": its}]}
    lv = toggle_ab.run_levels(doc)["lat1"]
    assert lv["decode_steps"] == 100 and lv["step_p50_us"] == 2049.5 and lv["step_p25_us"] < lv["step_p50_us"]


def test_flip_switches_are_checked_per_generate():
    """A real flip's paused blocks must run no hook; an A/A flip's switches all resume, so its hooks grow."""
    def gen(real, calls):
        return {"real": real, "switches": [{"after": 64 * (i + 1), "on": i % 2 == 1, "counts": counts(c, c)}
                                           for i, c in enumerate(calls)]}
    assert toggle_ab.check_flip_switches([gen(True, [10, 10, 20, 20]), gen(False, [30, 40, 50])])["ok"]
    bad = toggle_ab.check_flip_switches([gen(True, [10, 12, 20])])       # hooks ran while paused (10 -> 12)
    assert not bad["ok"] and bad["bad"][0]["on"] is False and bad["bad"][0]["calls"] == [10, 12]
    assert not toggle_ab.check_flip_switches([gen(False, [30, 30])])["ok"]   # an A/A block ran no hook


def test_flip_scope_setting_names_itself_on_bad_input():
    import argparse
    assert toggle_ab.flip_scopes("all,front,engine") == "all,front,engine"
    assert toggle_ab.flip_scopes("front") == "front"
    for bad in ("al", "all,all", "front,,engine"):
        with pytest.raises(argparse.ArgumentTypeError, match="--flip-scope"):
            toggle_ab.flip_scopes(bad)


def test_switch_check_compares_each_process_with_itself_when_a_scope_lists_fewer():
    # every process listed, then only the engine's (a rotating run's switch of scope "engine"): the EngineCore
    # (pid 2) did not grow while on, which the check must catch; pairing by position would have compared the
    # front end's 10 with the EngineCore's 20 and called it grown
    every = {"front": {"pid": 1, "calls": 10}, "engine": [{"pid": 2, "calls": 20}]}
    engine_only = {"engine": [{"pid": 2, "calls": 20}]}
    c = toggle_ab.check_switches([{"block": 0, "on": True, "counts": every},
                                  {"block": 1, "on": True, "counts": engine_only}])
    assert c["intervals"] == 1 and not c["ok"] and c["bad"][0]["pid"] == 2
    grown = {"engine": [{"pid": 2, "calls": 25}]}
    c = toggle_ab.check_switches([{"block": 0, "on": True, "counts": every}, {"block": 1, "on": True, "counts": grown}])
    assert c == {"intervals": 1, "ok": True, "bad": []}


def test_an_export_thread_waking_while_paused_is_caught():
    """Answers with ``export_wakes`` (7e1d092 on): a paused interval may hold the pause's own flush and one timer
    wake racing it, not the export thread's every interval; answers without the field (older runs) are not judged
    on it."""
    def c(calls, wakes):
        return {"front": {"pid": 1, "calls": calls, "export_wakes": wakes}, "engine": []}
    def sw(paused_wakes):
        return [{"block": 0, "on": True, "counts": c(0, 0)}, {"block": 1, "on": False, "counts": c(10, 5)},
                {"block": 2, "on": True, "counts": c(10, 5 + paused_wakes)}, {"block": "end", "on": True, "counts": c(20, 30)}]
    assert toggle_ab.check_switches(sw(2))["ok"]
    bad = toggle_ab.check_switches(sw(6))["bad"]
    assert len(bad) == 1 and bad[0]["from_block"] == 1 and bad[0]["export_wakes"] == [5, 11]
    old = sw(6)
    for x in old:
        del x["counts"]["front"]["export_wakes"]
    assert toggle_ab.check_switches(old)["ok"]

