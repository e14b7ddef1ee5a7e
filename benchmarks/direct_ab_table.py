"""Pair-by-pair table of the direct hook counter from interleaved ``hook_cost_engine.py --counter-only`` runs.

    python benchmarks/direct_ab_table.py RESULT_DIR [--arms base,new] [--hooks engine.schedule,engine.step] [--export]

RESULT_DIR holds ``<arm>_<pair>.json`` (``benchmarks/gpu/hook_cost_ab.sh`` with ``COUNTER_ONLY=1``, which names an
arm by its folder less ``ab_``). For each batch size: each pair's µs per engine step of the EngineCore's hooks
(role ``engine``), of every hook, and of the hooks asked for, arm by arm; the second arm against the first per pair
(the ratio) and the median of those ratios. Pairs run in one session on one machine, so a pair's ratio holds the
machine's drift out; the spread of the first arm's figures says how far single runs wander."""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def load(folder: Path) -> dict:
    """{arm: {pair: per_batch rows by batch}} of the folder's runs."""
    runs: dict = {}
    for f in sorted(folder.glob("*_*.json")):
        m = re.fullmatch(r"(.+)_(\d+)", f.stem)
        if not m:
            continue
        doc = json.loads(f.read_text())
        rows = {r["batch"]: r for r in doc.get("per_batch", []) if r.get("direct")}
        if rows:
            runs.setdefault(m.group(1), {})[int(m.group(2))] = rows
    return runs


def figure(row: dict, what: str) -> float:
    if what.startswith("export:"):              # the export thread: "export:cpu" or "export:<part of its send>"
        e = row.get("export_thread_us_per_step") or {}
        return e.get("cpu", 0.0) if what == "export:cpu" else e.get("parts", {}).get(what[7:], 0.0)
    d = row["direct"]
    if what == "all":
        return d["us_per_step"]
    if what.startswith("role:"):
        return d["by_role"].get(what[5:], 0.0)
    return d["hooks"].get(what, {}).get("us_per_step", 0.0)


def table(runs: dict, arms: list[str], columns: list[str]) -> str:
    a, b = arms
    pairs = sorted(set(runs[a]) & set(runs[b]))
    batches = sorted(set.intersection(*(set(runs[x][p]) for x in arms for p in pairs)))
    out = []
    for batch in batches:
        out.append(f"\nbatch {batch}: µs per engine step, {a} -> {b} (ratio), pair by pair")
        out.append("| pair | " + " | ".join(columns) + " |")
        out.append("|---" * (len(columns) + 1) + "|")
        ratios: dict = {c: [] for c in columns}
        firsts: dict = {c: [] for c in columns}
        for p in pairs:
            cells = []
            for c in columns:
                x, y = figure(runs[a][p][batch], c), figure(runs[b][p][batch], c)
                firsts[c].append(x)
                if x:
                    ratios[c].append(y / x)
                cells.append(f"{x:.2f} -> {y:.2f} ({y / x:.2f})" if x else f"{x:.2f} -> {y:.2f}")
            out.append(f"| {p} | " + " | ".join(cells) + " |")
        out.append("| median ratio | " + " | ".join(
            f"{statistics.median(ratios[c]):.3f}" if ratios[c] else "-" for c in columns) + " |")
        out.append(f"| {a}: spread (max/min) | " + " | ".join(
            f"{max(firsts[c]) / min(firsts[c]):.2f}" if min(firsts[c]) else "-" for c in columns) + " |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--arms", default="", help="two arm names, the reference first (default: the two found, sorted)")
    ap.add_argument("--hooks", default="engine.schedule,engine.step,engine.step_with_batch_queue",
                    help="hooks to show beside the EngineCore's and every hook's totals")
    ap.add_argument("--export", action="store_true", help="the export thread's CPU and its send's parts too")
    a = ap.parse_args()
    runs = load(a.folder)
    arms = a.arms.split(",") if a.arms else sorted(runs)
    if len(arms) != 2 or any(x not in runs for x in arms):
        ap.error(f"two arms needed; found {sorted(runs)}")
    hooks = [h for h in a.hooks.split(",") if h and any(
        h in row["direct"]["hooks"] for pr in runs[arms[0]].values() for row in pr.values())]
    export = ["export:cpu", "export:take", "export:encode", "export:deliver"] if a.export else []
    print(table(runs, arms, ["role:engine", "all"] + hooks + export))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
