"""Summary of the flip runs of ``toggle_ab.py`` (workloads ``flip1`` / ``flip256``): one row per run and workload,
and pooled estimates over several runs of one setting (their generates read together by ``flip_steps.summarize``,
the same trimmed mean and moving-block bootstrap as one run's).

    python benchmarks/gpu/flip_summary.py RUN.json... --out DIR [--pool NAME=RUN,RUN ...] [--what TEXT]

RUN is a ``toggle_*.json`` of toggle_ab.py; a run's name is its folder and file stem (``flip/toggle_l4_i50``),
so runs of one name in two folders stay apart. Writes DIR/summary.json: each row's cost and A/A cost per decode
step (% and 90 % interval) on the front clock and, where the runs have it, the engine clock (``engine_``,
with the front end's lag: flip_steps.py), windows, generates, the decode steps' medians, the switch round trip, the switch check
and the plugin's settings (SAMPLE, cost budget, exporters, export interval, which processes were switched); with
``--pool``, NAME's pooled estimate of the runs listed (by name).
"""
from __future__ import annotations

import argparse
import json
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


def rows_of(name: str, doc: dict) -> list[dict]:
    """One row per flip workload of a run."""
    spec = doc.get("spec", {})
    out = []
    for key in dict.fromkeys(g["workload"] for g in doc.get("flips", [])):
        gens = [g for g in doc["flips"] if g["workload"] == key]
        s = flip_steps.summarize(gens)
        flip, aa = s.get("flip", {}), s.get("aa", {})
        e = flip_steps.summarize(gens, clock="engine")
        eng = {**_cost(e.get("flip", {}), "engine_"), **_cost(e.get("aa", {}), "engine_aa_"),
               "front_lag_us": e.get("flip", {}).get("front_lag_us")} if e else {}
        out.append({"run": name, "model": doc.get("model"), "layers": doc.get("layers"), "workload": key,
                    "batch": gens[0].get("batch"), "every_steps": gens[0].get("every"), "out_tokens": gens[0].get("out"),
                    "sample": spec.get("sample", 1), "cost_budget": spec.get("cost_budget", 0.0),
                    "exporters": spec.get("exporters"), "flip_scope": spec.get("flip_scope", "all"),
                    "export_interval_ms": spec.get("export_interval_ms"),
                    **_cost(flip), **_cost(aa, "aa_"), **eng, "generates": flip.get("generates"),
                    "step_us_on": flip.get("step_us_on"), "step_us_off": flip.get("step_us_off"),
                    "switch_ms": _r(flip.get("switch_ms")),
                    "switches_ok": toggle_ab.check_flip_switches(gens)["ok"], "spans": (doc.get("spans") or {}).get("total")})
    return out


def pooled(docs: dict[str, dict], names: list[str]) -> dict:
    """Every flip workload of the named runs, their generates read together by ``flip_steps.summarize``."""
    out = {"runs": names}
    gens = [g for n in names for g in docs[n].get("flips", [])]
    for key in dict.fromkeys(g["workload"] for g in gens):
        wg = [g for g in gens if g["workload"] == key]
        s, e = flip_steps.summarize(wg), flip_steps.summarize(wg, clock="engine")
        out[key] = {**_cost(s.get("flip", {})), **_cost(s.get("aa", {}), "aa_"),
                    **_cost(e.get("flip", {}), "engine_"), **_cost(e.get("aa", {}), "engine_aa_")}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--pool", action="append", default=[], help="NAME=RUN,RUN: a pooled estimate of those runs")
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
    for r in summary["runs"]:
        print(f"{r['run']} {r['workload']}: cost {r.get('cost_pct')} {r.get('cost_90pct')}, A/A {r.get('aa_cost_pct')} "
              f"{r.get('aa_cost_90pct')}, steps on/off {r['step_us_on']} / {r['step_us_off']} µs")
    for k, v in summary.items():
        if k.startswith("pooled_"):
            print(k, json.dumps(v))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
