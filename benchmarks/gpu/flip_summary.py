"""Summary of the flip runs of ``toggle_ab.py`` (workloads ``flip1`` / ``flip256``): one row per run and workload,
and pooled estimates over several runs of one setting (their generates read together by ``flip_steps.summarize``,
the same trimmed mean and moving-block bootstrap as one run's).

    python benchmarks/gpu/flip_summary.py RUN.json... --out DIR [--pool NAME=RUN,RUN ...] [--what TEXT]

RUN is a ``toggle_*.json`` of toggle_ab.py; a run's name is its folder and file stem (``flip/toggle_l4_i50``),
so runs of one name in two folders stay apart. Writes DIR/summary.json: each row's cost and A/A cost per decode
step (% and 90 % interval) on the front clock and, where the runs have it, the engine clock (``engine_``,
with the front end's lag: flip_steps.py), the tails the blocks' medians leave out (``tail_*``: flip_steps.py), windows,
generates, the decode steps' medians, the switch round trip, the switch check
and the plugin's settings (SAMPLE, cost budget, exporters, export interval, which processes were switched); with
``--pool``, NAME's pooled estimate of the runs listed (by name) and, beside it, the runs' own estimates taken as
a sample (``between_runs_*``: mean, SD, Student-t 90 % interval), which also counts the spread between runs.

``--issue-format PATH``: also the list issue #19's target 2 asks for (``{"model", "layers", "workload", "stock":
[...], "plugin": [...]}``, in pair order; ``issue_rows``), one entry per model and flip workload, the runs' real
flips (every process switched) taken in the order given. A pair is two neighbouring blocks of one generate, the
plugin switched off (its hooks paused: vLLM's own methods run) in one and on in the other; each block's level is
its steps' median (the first ``SETTLE`` after a switch left out). Seconds per decode step at batch 1, output tokens
per second (batch / step) above it. The pairs are raw: the entry's ``cost_pct`` is ``flip_steps``' estimate of
the same generates (neighbouring blocks' drift cancelled, slow spells trimmed), not a mean of the pairs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flip_steps  # same folder
import toggle_ab


def _r(x, nd: int = 2):
    return None if x is None else round(x, nd)


def _cost(est: dict, prefix: str = "") -> dict:
    if "cost_pct" not in est:
        return {prefix + "windows": est.get("windows", 0)}
    return {prefix + "cost_pct": _r(est["cost_pct"]), prefix + "cost_90pct": [_r(v) for v in est["cost_90pct"]],
            prefix + "windows": est["windows"], prefix + "trimmed": est["trimmed"]}


def flips_of(doc: dict) -> list[dict]:
    """A run's flip generates, each with its scope (runs from before generates recorded it: the run's one)."""
    scope = doc.get("spec", {}).get("flip_scope", "all")
    return [g if "scope" in g else {**g, "scope": scope} for g in doc.get("flips", [])]


def _gaps(groups: dict[str, list[dict]]) -> dict:
    """``flip_steps.scope_gaps``, rounded."""
    return {key: {c: {k: (_r(v) if k == "gap_pct" else [_r(x) for x in v] if k == "gap_90pct" else v)
                      for k, v in g.items()} for c, g in gap.items()}
            for key, gap in flip_steps.scope_gaps(groups).items()}


def rows_of(name: str, doc: dict) -> list[dict]:
    """One row per flip workload of a run, and per scope where the run rotated several (``flip1@front``; then
    also a ``flip1@gap`` row: whether the shares add up, ``flip_steps.scope_gap``)."""
    spec = doc.get("spec", {})
    out = []
    groups = flip_steps.scope_groups(flips_of(doc))
    for key, gens in groups.items():
        s = flip_steps.summarize(gens)
        flip, aa = s.get("flip", {}), s.get("aa", {})
        e = flip_steps.summarize(gens, clock="engine")
        eng = {**_cost(e.get("flip", {}), "engine_"), **_cost(e.get("aa", {}), "engine_aa_"),
               "front_lag_us": e.get("flip", {}).get("front_lag_us")} if e else {}
        out.append({"run": name, "model": doc.get("model"), "layers": doc.get("layers"), "workload": key,
                    "batch": gens[0].get("batch"), "every_steps": gens[0].get("every"), "out_tokens": gens[0].get("out"),
                    "sample": spec.get("sample", 1), "cost_budget": spec.get("cost_budget", 0.0),
                    "exporters": spec.get("exporters"), "flip_scope": gens[0]["scope"],
                    "export_interval_ms": spec.get("export_interval_ms"),
                    **_cost(flip), **_cost(aa, "aa_"), **_tail(flip, flip.get("step_us_off")),
                    **_tail(aa, flip.get("step_us_off"), "aa_"), **eng, "generates": flip.get("generates"),
                    "step_us_on": flip.get("step_us_on"), "step_us_off": flip.get("step_us_off"),
                    "switch_ms": _r(flip.get("switch_ms")),
                    "switches_ok": toggle_ab.check_flip_switches(gens)["ok"], "spans": (doc.get("spans") or {}).get("total")})
    out += [{"run": name, "workload": key, **gap} for key, gap in _gaps(groups).items()]
    return out


# Student's t, 95th percentile (a two-sided 90 % interval), by degrees of freedom: the standard library has no t
# distribution and scipy is neither in the unit tier's venv nor on the GPU machine's image
_T95 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812,
        11: 1.796, 12: 1.782, 13: 1.771, 14: 1.761, 15: 1.753, 16: 1.746, 17: 1.740, 18: 1.734, 19: 1.729,
        20: 1.725, 25: 1.708, 30: 1.697, 40: 1.684, 60: 1.671, 120: 1.658}


def t95(df: int) -> float:
    """Student's t 95th percentile for ``df`` degrees of freedom (the table's next lower entry past 20; the
    normal 1.645 past 120)."""
    if df < 1:
        raise ValueError(f"t95: df must be >= 1, got {df}")
    return _T95[max(k for k in _T95 if k <= df)] if df <= 120 else 1.645


def mean_interval(xs: list[float]) -> tuple[float, float, list[float]] | None:
    """A sample's mean, SD and Student-t 90 % interval of the mean; None below two values."""
    n = len(xs)
    if n < 2:
        return None
    mean, sd = statistics.fmean(xs), statistics.stdev(xs)
    half = t95(n - 1) * sd / n ** 0.5
    return mean, sd, [mean - half, mean + half]


def between_runs(costs: list[float]) -> dict:
    """The runs' own point estimates as a sample: their mean, SD and a Student-t 90 % interval of the mean. The
    pooled estimate resamples windows, so it counts only the spread inside runs; this one counts the spread
    between runs too (machines, host state), which a pooled interval narrower than it has left out."""
    m = mean_interval(costs)
    if m is None:
        return {"n": len(costs)}
    mean, sd, (lo, hi) = m
    return {"n": len(costs), "mean_pct": _r(mean), "sd_pct": _r(sd), "mean_90pct": [_r(lo), _r(hi)]}


def _tail(est: dict, step_us: float | None, prefix: str = "") -> dict:
    """What the blocks' medians leave out (``flip_steps`` "tails"): the excess per step on less off (µs), its 90 %
    interval between generates, and the same as % of the off blocks' median step (it adds to ``cost_pct``)."""
    t = est.get("tail_us")
    if not t:
        return {}
    m = mean_interval(t["per_generate"])
    out = {prefix + "tail_diff_us": _r(t["diff"]), prefix + "tail_on_us": _r(t["on"]), prefix + "tail_off_us": _r(t["off"]),
           prefix + "tail_diff_90us": None if m is None else [_r(v) for v in m[2]]}
    if step_us:
        out[prefix + "tail_cost_pct"] = _r(t["diff"] / step_us * 100)
    return out


def pooled(docs: dict[str, dict], names: list[str]) -> dict:
    """Every flip workload of the named runs, their generates read together by ``flip_steps.summarize``, and
    the same runs' point estimates taken as a sample (``between_runs``; ``runs`` are the rows of ``rows_of``)."""
    out = {"runs": names}
    groups = flip_steps.scope_groups([g for n in names for g in flips_of(docs[n])])
    rows = [r for n in names for r in rows_of(n, docs[n])]
    for key, wg in groups.items():
        s, e = flip_steps.summarize(wg), flip_steps.summarize(wg, clock="engine")
        step = s.get("flip", {}).get("step_us_off")
        out[key] = {**_cost(s.get("flip", {})), **_cost(s.get("aa", {}), "aa_"),
                    **_cost(e.get("flip", {}), "engine_"), **_cost(e.get("aa", {}), "engine_aa_"),
                    **_tail(s.get("flip", {}), step), **_tail(s.get("aa", {}), step, "aa_"),
                    **_tail(e.get("flip", {}), e.get("flip", {}).get("step_us_off"), "engine_")}
        for field in ("cost_pct", "aa_cost_pct", "engine_cost_pct", "engine_aa_cost_pct"):
            costs = [r[field] for r in rows if r["workload"] == key and r.get(field) is not None]
            out[key]["between_runs_" + field.removesuffix("_pct")] = between_runs(costs)
    for key, gap in _gaps(groups).items():
        gaps = [r["front"]["gap_pct"] for r in rows if r["workload"] == key and r.get("front")]
        out[key] = {**gap, "between_runs_front_gap": between_runs(gaps)}
    return out


def issue_rows(docs: dict[str, dict]) -> list[dict]:
    """Issue #19's summary format from flip runs (module docstring, ``--issue-format``): per model and workload,
    the off / on block levels of every real flip with every process switched, pair by pair, and the pooled
    estimate of those generates."""
    groups: dict[tuple, dict] = {}
    for name, doc in docs.items():
        for g in flips_of(doc):
            if not g["real"] or g.get("scope", "all") != "all":
                continue
            key = (doc.get("model"), doc.get("layers"), g["workload"])
            e = groups.setdefault(key, {"batch": g.get("batch"), "runs": [], "gens": [], "stock": [], "plugin": []})
            if name not in e["runs"]:
                e["runs"].append(name)
            e["gens"].append(g)
            batch = g.get("batch") or 1
            levels = flip_steps.generate_levels(g)
            for a, b in zip(levels[0::2], levels[1::2]):
                if a[1] is None or b[1] is None:
                    continue
                on, off = (a, b) if a[0] else (b, a)
                for side, level in (("stock", off[1]), ("plugin", on[1])):
                    e[side].append(round(level / 1e6, 7) if batch == 1 else round(batch * 1e6 / level, 1))
    out = []
    for (model, layers, workload), e in groups.items():
        est = flip_steps.summarize(e["gens"]).get("flip", {})
        out.append({"model": model, "layers": layers, "workload": workload, "batch": e["batch"],
                    "unit": "s per decode step" if e["batch"] == 1 else "output tok/s", "runs": e["runs"],
                    "pairs": len(e["stock"]), "stock": e["stock"], "plugin": e["plugin"],
                    **_cost(est)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--pool", action="append", default=[], help="NAME=RUN,RUN: a pooled estimate of those runs")
    ap.add_argument("--issue-format", type=Path, help="also write issue #19's list of stock/plugin pairs here")
    ap.add_argument("--what", default="the plugin's cost per decode step, switched every few steps inside one "
                                      "running decode (toggle_ab.py flip workloads, flip_steps.py)")
    a = ap.parse_args()
    docs = {f"{p.parent.name}/{p.stem}": json.loads(p.read_text()) for p in a.runs}
    summary = {"what": a.what, "runs": [r for n, d in docs.items() for r in rows_of(n, d)]}
    for item in a.pool:
        name, _, runs = item.partition("=")
        missing = [n for n in runs.split(",") if n not in docs]
        if not name or missing:
            ap.error(f"--pool {item!r}: want NAME=RUN,RUN of the runs given (unknown: {missing})")
        summary["pooled_" + name] = pooled(docs, runs.split(","))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if a.issue_format:
        a.issue_format.parent.mkdir(parents=True, exist_ok=True)
        a.issue_format.write_text(json.dumps(issue_rows(docs), indent=1) + "\n")
    for r in summary["runs"]:
        if r["workload"].endswith("@gap"):
            print(f"{r['run']} {r['workload']}: all - front - engine {json.dumps({c: g.get('gap_pct') for c, g in r.items() if isinstance(g, dict)})}")
            continue
        print(f"{r['run']} {r['workload']}: cost {r.get('cost_pct')} {r.get('cost_90pct')}, A/A {r.get('aa_cost_pct')} "
              f"{r.get('aa_cost_90pct')}, steps on/off {r['step_us_on']} / {r['step_us_off']} µs, tails on - off "
              f"{r.get('tail_diff_us')} µs per step {r.get('tail_diff_90us')} (A/A {r.get('aa_tail_diff_us')})")
    for k, v in summary.items():
        if k.startswith("pooled_"):
            print(k, json.dumps(v))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
