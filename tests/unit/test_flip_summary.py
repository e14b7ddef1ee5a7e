"""Pooling switched-decode runs (benchmarks/gpu/flip_summary.py): beside the windows read together, the runs'
own estimates taken as a sample, whose interval must count the spread between runs that differ (planted: four
runs on hosts where the plugin truly costs 0, 1, 2 and 3 %)."""
import pytest

from gpu_scripts import load
from test_flip_steps import _scoped, gens

flip_summary = load("flip_summary")
flip_steps = load("flip_steps")
toggle_ab = load("toggle_ab")


def test_t95_table_and_its_edges():
    assert flip_summary.t95(1) == 6.314 and flip_summary.t95(2) == 2.920
    assert flip_summary.t95(22) == flip_summary.t95(20) == 1.725      # the next lower entry past 20
    assert flip_summary.t95(500) == 1.645
    with pytest.raises(ValueError, match="df must be >= 1"):
        flip_summary.t95(0)


def test_between_runs_of_known_numbers():
    b = flip_summary.between_runs([1.0, 2.0, 3.0])
    # mean 2, SD 1, half width t95(2) * 1 / sqrt(3) = 2.920 / 1.732 = 1.686
    assert b == {"n": 3, "mean_pct": 2.0, "sd_pct": 1.0, "mean_90pct": [0.31, 3.69]}
    assert flip_summary.between_runs([1.5]) == {"n": 1}


def _counted(runs: list) -> list:
    """Switch records as each switch returns them: one process whose hook calls grow while on (an A/A flip's
    switches all resume)."""
    for g in runs:
        g.setdefault("workload", "flip1")
        calls = 0
        for sw in g["switches"]:
            sw["counts"] = {"front": {"pid": 1, "calls": calls}, "engine": []}
            calls += 10 if sw["on"] or not g["real"] else 0
    return runs


def test_a_rotating_run_gets_a_row_per_scope_and_the_gap():
    flips = _counted(_scoped("all", 1.3, 0, n=4) + _scoped("front", 0.3, 100, n=4) + _scoped("engine", 0.2, 200, n=4))
    doc = {"spec": {"sample": 32, "flip_scope": "all,front,engine"}, "flips": flips}
    rows = flip_summary.rows_of("planted/rot", doc)
    assert [r["workload"] for r in rows] == ["flip1@all", "flip1@front", "flip1@engine", "flip1@gap"]
    assert [r["flip_scope"] for r in rows[:3]] == ["all", "front", "engine"] and all(r["switches_ok"] for r in rows[:3])
    assert abs(rows[3]["front"]["gap_pct"] - 0.8) < 0.7 and rows[3]["engine"] == {}
    # toggle_ab's own summary of the same run: the same groups and gap
    s = toggle_ab.summarize(doc)
    assert {"flip1@all", "flip1@front", "flip1@engine", "flip1@gap"} <= set(s)
    assert s["flip1@gap"]["front"]["gap_pct"] == pytest.approx(rows[3]["front"]["gap_pct"], abs=0.01)
    # a pool of such runs reads each run's gap as a sample too
    p = flip_summary.pooled({"planted/rot": doc, "planted/rot2": doc}, ["planted/rot", "planted/rot2"])
    assert p["flip1@gap"]["between_runs_front_gap"]["n"] == 2


def test_pooled_runs_that_differ_get_the_wider_between_run_interval():
    docs = {}
    for i, cost in enumerate((0.0, 1.0, 2.0, 3.0)):
        runs = gens(cost, n=4)
        _counted(runs)
        docs[f"planted/run{i}"] = {"spec": {"sample": 32}, "flips": runs}
    p = flip_summary.pooled(docs, list(docs))["flip1"]
    b = p["between_runs_cost"]
    assert b["n"] == 4 and abs(b["mean_pct"] - 1.5) < 0.5 and 0.8 < b["sd_pct"] < 1.8
    lo, hi = b["mean_90pct"]
    assert lo < 1.5 < hi
    # the windows read together give about the same point, with an interval that leaves the runs' spread out
    plo, phi = p["cost_90pct"]
    assert abs(p["cost_pct"] - 1.5) < 0.5 and phi - plo < hi - lo
    assert p["between_runs_aa_cost"]["n"] == 4 and abs(p["between_runs_aa_cost"]["mean_pct"]) < 0.5


def test_issue_format_pairs_each_on_block_with_its_off_neighbour():
    """Issue #19's list (``issue_rows``): planted runs where the plugin costs 2 % per step. Every real flip's blocks
    become (off, on) pairs in order, each side in its unit (seconds per step at batch 1, tok/s at 256); the A/A
    flips and the runs that switched only one side stay out; the entry's cost is flip_steps' estimate of the same
    generates."""
    import statistics
    b1 = gens(2.0, n=4)
    b256 = gens(2.0, n=4)
    for g in b256:
        g.update(workload="flip256", batch=256)
    front = _scoped("front", 2.0, 300, n=2)
    for g in b1 + front:
        g.update(workload="flip1", batch=1)
    docs = {"r/one": {"model": "M", "layers": 4, "flips": b1 + front}, "r/two": {"model": "M", "layers": 4,
                                                                             "flips": b256}}
    rows = {r["workload"]: r for r in flip_summary.issue_rows(docs)}
    assert set(rows) == {"flip1", "flip256"}
    one, two = rows["flip1"], rows["flip256"]
    assert one["runs"] == ["r/one"] and one["unit"] == "s per decode step" and two["unit"] == "output tok/s"
    real = [g for g in b1 if g["real"]]
    pairs = sum(len(flip_steps.generate_levels(g)) // 2 for g in real)     # every block has a level here
    assert one["pairs"] == len(one["stock"]) == len(one["plugin"]) == pairs > 40
    ratio = statistics.median(p / s for s, p in zip(one["stock"], one["plugin"]))
    assert 1.01 < ratio < 1.03                         # on is the slower side, pair by pair
    assert all(0.001 < x < 0.005 for x in one["stock"])     # ~2 ms steps, in seconds
    tok = statistics.median(s / p for s, p in zip(two["stock"], two["plugin"]))
    assert 1.01 < tok < 1.03 and all(50_000 < x < 250_000 for x in two["stock"])   # 256 per ~2 ms step, in tok/s
    est = flip_steps.summarize(real)["flip"]
    assert one["cost_pct"] == round(est["cost_pct"], 2) and abs(one["cost_pct"] - 2.0) < 0.5
