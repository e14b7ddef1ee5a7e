"""The plugin's self-cost counter against the direct timing, from pairs of ``hook_cost_engine.py`` runs.

    python benchmarks/selfcost_shares.py DIR        # DIR/timed_N.json and DIR/counter_N.json (N = 1, 2, ...)

A timed run times every hook's ``pre``/``post`` itself (the direct figure) and its wrapper sits inside the counter's
timed sections; a ``--counter-only`` run reads the counter with nothing of the script's inside. The host's state
moves every figure between runs, so each is read as a share of its own run's step (hooks µs per step over the
mean step). Prints one table row per pair and the medians (``results/cpu/selfcost_vs_direct``).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _batch(path: Path) -> dict:
    return json.loads(path.read_text())["per_batch"][0]


def pair_row(timed: dict, counter: dict) -> dict:
    """One pair's figures: µs per step, step ms and shares of the step (%)."""
    t_step, c_step = timed["step_ms"] * 1e3, counter["step_ms"] * 1e3
    t_counter, c_counter = timed["selfcost_sampled"], counter["selfcost_sampled"]
    return {"direct_us": timed["us_per_step"], "timed_counter_us": t_counter["hook_wall_us_per_step"],
            "timed_step_ms": timed["step_ms"], "counter_us": c_counter["hook_wall_us_per_step"],
            "counter_cpu_us": c_counter["hook_cpu_us_per_step"], "counter_step_ms": counter["step_ms"],
            "direct_pct": 100 * timed["us_per_step"] / t_step,
            "timed_counter_pct": 100 * t_counter["hook_wall_us_per_step"] / t_step,
            "counter_pct": 100 * c_counter["hook_wall_us_per_step"] / c_step}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    a = ap.parse_args(argv)
    rows = []
    n = 1
    while (a.dir / f"timed_{n}.json").exists() and (a.dir / f"counter_{n}.json").exists():
        rows.append(pair_row(_batch(a.dir / f"timed_{n}.json"), _batch(a.dir / f"counter_{n}.json")))
        n += 1
    if not rows:
        ap.error(f"no timed_1.json and counter_1.json in {a.dir}")
    print("| pair | timed run: direct µs/step | its counter, wall | step ms | counter-only run: counter, wall | CPU "
          "| step ms | direct % of step | timed counter % | counter-only % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['direct_us']:.1f} | {r['timed_counter_us']:.1f} | {r['timed_step_ms']:.2f} | "
              f"{r['counter_us']:.1f} | {r['counter_cpu_us']:.1f} | {r['counter_step_ms']:.2f} | "
              f"{r['direct_pct']:.2f} | {r['timed_counter_pct']:.2f} | {r['counter_pct']:.2f} |")
    med = {k: statistics.median(r[k] for r in rows) for k in ("direct_pct", "timed_counter_pct", "counter_pct")}
    print(f"\nmedians over {len(rows)} pairs: direct {med['direct_pct']:.2f} %, timed run's counter "
          f"{med['timed_counter_pct']:.2f} %, counter-only {med['counter_pct']:.2f} % of the step; counter-only / "
          f"direct {med['counter_pct'] / med['direct_pct']:.2f}x, timed counter / direct "
          f"{med['timed_counter_pct'] / med['direct_pct']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
