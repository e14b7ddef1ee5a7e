"""How finely the switched decode can read a cost, from runs already made (issue #19, target 2).

    python3 benchmarks/gpu/flip_power.py RUN.json ... [--every 12,24,48] [--settle 8] [--plant 1.0] [--half 0.5]

Each run's A/A generates (the same switch calls, every one to "on": ``flip_steps.py``) are the H200 host's own noise
with nothing to find. This cuts them again into blocks of each length in ``--every`` (a divisor of the length they
ran with, so every real switch call stays at a block boundary and its catch-up in the ``settle`` steps left out;
the blocks start at the first switch, as the real ones do), labels the blocks on and off in turn, and reads them
with ``flip_steps``'s own estimate (block levels, windows of five, trimmed mean, block bootstrap), once as they are
and once with a cost planted (each "on" block's steps ``--plant`` % longer). Per block length:

- ``aa_mean`` / ``aa_sd``: the runs' A/A estimates, their mean and SD between runs (the spread a pooled estimate
  divides by the square root of the runs);
- ``halfwidth``: the median over runs of a run's own 90 % half-width;
- ``planted``: the planted cost as read (each run's planted estimate less its plain one, averaged): 1.0 for a
  planted 1 % if the method is unbiased at that block length;
- ``runs_for_half``: runs whose mean has a 90 % half-width of ``--half`` at that SD (normal approximation,
  ``ceil((1.645 SD / half)^2)``; Student's t for few runs asks for one or two more).

What this does not see: a run made at the new length switches at every boundary, where the re-cut blocks carry a
real switch at one boundary in (the run's length / the new length); and the part of an "on" block's records whose
export lands in the next block's settle steps (left out of both states; about ``I / 2L`` of them for an export
interval I under a block of length L). Both grow as the blocks shorten.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flip_steps  # noqa: E402  (same folder: the switched-in-flight A/B's arithmetic)

Z90 = 1.645


def recut(g: dict, every: int) -> list[int]:
    """The switch points of generate ``g`` cut into blocks of ``every`` steps from its first switch on; ``every``
    must divide the block length it ran with (``g["every"]``), so each real switch is one of them."""
    own = g.get("every") or (g["switches"][0]["after"] if g["switches"] else 0)
    if not own or every <= 0 or own % every:
        raise ValueError(f"--every {every}: must divide the generate's own block length ({own} steps)")
    if not g["switches"]:                       # stopped before its first switch: no block to read
        return []
    first = g["switches"][0]["after"]
    return list(range(first, len(g["steps_us"]), every))


def planted_steps(steps: list[int], after: list[int], start_on: bool, pct: float) -> list[float]:
    """``steps`` with each "on" block's steps (``flip_steps.block_levels``'s labels) ``pct`` % longer."""
    out = list(steps)
    bounds = [0, *after, len(steps)]
    for k in range(1, len(bounds) - 1):
        if flip_steps.block_on(k, start_on):
            for i in range(bounds[k], bounds[k + 1]):
                out[i] = steps[i] * (1 + pct / 100)
    return out


def aa_estimate(gens: list[dict], every: int, settle: int, pct: float = 0.0, clock: str = "front") -> dict:
    """``flip_steps.estimate`` of a run's A/A generates cut into blocks of ``every`` steps, ``pct`` % planted."""
    per = []
    for g in gens:
        if g["real"]:
            continue
        after = recut(g, every)
        steps = planted_steps(g[flip_steps.CLOCKS[clock]], after, g["start_on"], pct)
        per.append(flip_steps.window_costs(flip_steps.block_levels(steps, after, g["start_on"], settle)))
    return flip_steps.estimate(per)


def power(runs: dict[str, list[dict]], every: int, settle: int, plant: float, half: float) -> dict:
    """The figures of the module docstring for one block length over ``runs`` (name -> its flip generates)."""
    per_run = {}
    for name, gens in runs.items():
        plain = aa_estimate(gens, every, settle)
        if "cost_pct" not in plain:
            continue
        with_cost = aa_estimate(gens, every, settle, plant)
        lo, hi = plain["cost_90pct"]
        per_run[name] = {"aa_pct": plain["cost_pct"], "halfwidth": (hi - lo) / 2, "windows": plain["windows"],
                         "planted_read": with_cost["cost_pct"] - plain["cost_pct"]}
    ests = [r["aa_pct"] for r in per_run.values()]
    out = {"every": every, "settle": settle, "runs": len(ests), "per_run": per_run}
    if len(ests) >= 2:
        sd = statistics.stdev(ests)
        out.update(aa_mean=statistics.fmean(ests), aa_sd=sd,
                   halfwidth=statistics.median(r["halfwidth"] for r in per_run.values()),
                   planted=statistics.fmean(r["planted_read"] for r in per_run.values()) / plant if plant else None,
                   runs_for_half=math.ceil((Z90 * sd / half) ** 2))
    return out


def load_runs(paths: list[str], workload: str | None) -> dict[str, list[dict]]:
    """Each run's flip generates (of ``workload`` where given; a run with several workloads needs one)."""
    runs = {}
    for p in paths:
        gens = json.loads(Path(p).read_text()).get("flips") or []
        keys = sorted({g["workload"] for g in gens})
        if workload is None and len(keys) > 1:
            raise SystemExit(f"{p} holds workloads {keys}: name one with --workload")
        gens = [g for g in gens if workload is None or g["workload"] == workload]
        if gens:
            runs[Path(p).stem] = gens
    return runs


def table(results: list[dict], plant: float, half: float) -> str:
    lines = [f"| block (steps) | settle | runs | A/A mean % | A/A SD between runs | a run's 90 % half-width (median) "
             f"| planted {plant:g} % read as | runs for a ±{half:g} % mean |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "aa_sd" not in r:
            continue
        lines.append(f"| {r['every']} | {r['settle']} | {r['runs']} | {r['aa_mean']:+.2f} | {r['aa_sd']:.2f} "
                     f"| {r['halfwidth']:.2f} | {r['planted'] * plant:.3f} | {r['runs_for_half']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="toggle_ab.py JSON files with flip generates")
    ap.add_argument("--every", default="", help="block lengths to read, comma-separated (default: the runs' own, "
                                                "its half and its quarter)")
    ap.add_argument("--settle", type=int, default=flip_steps.SETTLE)
    ap.add_argument("--plant", type=float, default=1.0, help="cost planted on the 'on' blocks, %% (default 1)")
    ap.add_argument("--half", type=float, default=0.5, help="90 %% half-width wanted of the runs' mean, %%")
    ap.add_argument("--workload")
    ap.add_argument("--out", help="write the figures as JSON here too")
    a = ap.parse_args(argv)
    runs = load_runs(a.runs, a.workload)
    if not runs:
        raise SystemExit("no flip generates in these files")
    own = {g.get("every") for gens in runs.values() for g in gens}
    if a.every:
        try:
            lengths = [int(x) for x in a.every.split(",")]
        except ValueError:
            raise SystemExit(f"--every {a.every!r}: want whole numbers of steps, comma-separated")
    elif len(own) == 1 and None not in own:
        e = own.pop()
        lengths = [x for x in (e // 4, e // 2, e) if x and e % x == 0]
    else:
        raise SystemExit(f"the runs ran with block lengths {sorted(own, key=str)}: name the lengths with --every")
    try:
        results = [power(runs, e, a.settle, a.plant, a.half) for e in lengths]
    except ValueError as e:
        raise SystemExit(str(e))
    print(table(results, a.plant, a.half))
    if a.out:
        Path(a.out).write_text(json.dumps({"runs": sorted(runs), "plant_pct": a.plant, "half_pct": a.half,
                                           "lengths": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
