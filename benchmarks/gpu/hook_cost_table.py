"""A Markdown table of `hook_cost_ab.sh` runs (the `benchmarks/hook_cost_engine.py` JSON files of one or more
result folders): per run, the steady decode's hook time per engine step by role, the EngineCore + worker sum
(target 1 of issue #19), the export thread's CPU, the step's wall time and the hooks' share of it.

The host's speed drifts between runs (the same arm reads 20-40 % apart), and the hooks' cost moves with it; the
share of the step (EngineCore + worker µs per ms of step) is the figure that compares arms across host states.

    python3 benchmarks/gpu/hook_cost_table.py benchmarks/results/h200/<folder>/<sub> ...
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def rows(folder: Path):
    for f in sorted(folder.glob("*.json"), key=lambda p: (p.stem.split("_")[-1], p.stem)):
        d = json.loads(f.read_text())
        for b in d["per_batch"]:
            role = b["steady_decode"]["by_role"]
            ew = role.get("engine", 0.0) + role.get("worker", 0.0)
            yield {"folder": folder.name, "run": f.stem, "arm": f.stem.rsplit("_", 1)[0], "batch": b["batch"],
                   "sample": d["sample"], "engine": role.get("engine", 0.0), "worker": role.get("worker", 0.0),
                   "front": role.get("front", 0.0), "ew": ew, "export_cpu": b["export_thread_us_per_step"]["cpu"],
                   "step_ms": b["step_ms"], "share": ew / (b["step_ms"] * 1000) * 100}


def main(folders: list[str]) -> None:
    all_rows = [r for f in folders for r in rows(Path(f))]
    print("| folder | run | batch | SAMPLE | EngineCore | worker | front end | EngineCore + worker | export thread CPU "
          "| step ms | E+W share of the step % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in all_rows:
        print(f"| {r['folder']} | {r['run']} | {r['batch']} | {r['sample']} | {r['engine']:.2f} | {r['worker']:.2f} "
              f"| {r['front']:.2f} | {r['ew']:.2f} | {r['export_cpu']:.2f} | {r['step_ms']:.3f} | {r['share']:.2f} |")
    groups: dict = {}
    for r in all_rows:
        groups.setdefault((r["arm"], r["batch"], r["sample"]), []).append(r)
    print("\n| arm | batch | SAMPLE | runs | EngineCore + worker µs per step: min / median / max | share % median |")
    print("|---|---|---|---|---|---|")
    for (arm, batch, sample), rs in sorted(groups.items()):
        ew = [r["ew"] for r in rs]
        print(f"| {arm} | {batch} | {sample} | {len(rs)} | {min(ew):.2f} / {statistics.median(ew):.2f} / "
              f"{max(ew):.2f} | {statistics.median(r['share'] for r in rs):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
