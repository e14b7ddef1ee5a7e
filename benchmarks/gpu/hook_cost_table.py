"""A Markdown table of `hook_cost_ab.sh` runs (the `benchmarks/hook_cost_engine.py` JSON files of one or more
result folders): per run, the steady decode's hook time per engine step by role (over all steps for a ``--churn``
run, whose steady window still has requests joining and finishing), the EngineCore + worker sum (target 1 of issue
#19), of which the fronts (where every front was timed: ``hook_cost_engine.py`` from a9ee581; before, only the
bounds hooks' were, and the E+W figure has the others' fronts left out) and one null front's call (the timing
wrappers' own cost in place: an upper bound on how much of a front's figure is theirs), the export thread's CPU,
the step's wall time and the hooks' share of it.

The host's speed drifts between runs (the same arm reads 20-40 % apart), and the hooks' cost moves with it; the
share of the step (EngineCore + worker µs per ms of step) is the figure that compares arms across host states.

    python3 benchmarks/gpu/hook_cost_table.py [--parts] benchmarks/results/h200/<folder>/<sub> ...

``--counter-ratio FOLDER...``: the plugin's sampled hook counter (``selfcost_sampled``) over the direct timing of the
hooks (``us_per_step``) in every batch of every ``hook_cost_engine.py`` JSON under the folders: how far the counter the
metrics export reads from the hooks' own times, in the same process. The script's timing wrapper runs inside the
counter's timed sections, so this ratio reads the wrapper too; ``benchmarks/selfcost_shares.py`` compares the counter
of ``--counter-only`` runs instead (``results/cpu/selfcost_vs_direct``: ~1.2x against ~1.8x).

``--parts``: a second table per phase of each run, for runs that report them (``hook_cost_engine.py`` from 95c9add):
the export thread's CPU, its GIL hold (``Pipeline.export_hold_s``; "-" for runs from before it was measured) and
its CPU by part (µs per engine step; the send also by its own parts where the run has them: take, encode, deliver,
``Pipeline.export_cpu_parts``), the device poller's CPU per poll (the phase's wall time over
``--interval-ms``, the export interval, 200 by default), Python's collections on vLLM's thread, and EngineCore +
worker + export thread per step (target 1 counts the export thread), by its CPU and by its GIL hold. Beside the
EngineCore + worker figure: how much of it the worker's ``sample_tokens`` post spent freeing the step-end events vLLM
made (``hook_cost_engine.py``'s ``event_free``, on CUDA with a borrowed event; "-" where not measured): vLLM frees
one per step without the plugin too.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def by_role(d: dict, b: dict) -> dict:
    """A batch's hook µs per engine step by role: the steady decode window's, or all steps' for a churn run."""
    return b["us_per_step_by_role"] if d.get("churn") else b["steady_decode"]["by_role"]


def fronts(d: dict, b: dict) -> tuple[float | None, float | None]:
    """The EngineCore and worker hooks' fronts (µs per step; in the E+W figure) and one null front's call, for runs
    that time every front (``hook_cost_engine.py`` from a9ee581; None before: only the bounds hooks' were timed)."""
    if not (d.get("fronts") or {}).get("wrapped"):
        return None, None
    steps = b["engine_steps"] if d.get("churn") else b["steady_decode"]["steps"]
    hooks = b["hooks"] if d.get("churn") else b["steady_decode"]["hooks"]
    if not steps:
        return None, None
    own = sum(v["us_per_step"] for k, v in hooks.items()
              if k.endswith(".front") and k.split(".")[0] in ("engine", "worker"))
    null = hooks.get("null.front")
    return own, (None if null is None else null["us_per_step"] * steps / max(null["calls"], 1))


def rows(folder: Path):
    for f in sorted(folder.glob("*.json"), key=lambda p: (p.stem.split("_")[-1], p.stem)):
        d = json.loads(f.read_text())
        for b in d["per_batch"]:
            role = by_role(d, b)
            ew = role.get("engine", 0.0) + role.get("worker", 0.0)
            own, null = fronts(d, b)
            yield {"folder": folder.name, "run": f.stem, "arm": f.stem.rsplit("_", 1)[0], "batch": b["batch"],
                   "sample": d["sample"], "engine": role.get("engine", 0.0), "worker": role.get("worker", 0.0),
                   "front": role.get("front", 0.0), "ew": ew, "export_cpu": b["export_thread_us_per_step"]["cpu"],
                   "step_ms": b["step_ms"], "share": ew / (b["step_ms"] * 1000) * 100, "fronts": own, "null": null}


def part_rows(folder: Path, interval_ms: float):
    for f in sorted(folder.glob("*.json")):
        d = json.loads(f.read_text())
        for i, b in enumerate(d["per_batch"]):
            e = b["export_thread_us_per_step"]
            parts = e.get("parts")
            if parts is None:
                continue
            role, steps = by_role(d, b), b["engine_steps"]
            polls = b["wall_s"] * 1000 / interval_ms
            ew = role.get("engine", 0.0) + role.get("worker", 0.0)
            gc = b.get("gc_by_thread", {}).get("MainThread", {})
            hold = e.get("gil_hold")                 # runs from before the GIL hold was measured: none
            free = (b.get("event_free") or {}).get("us_per_step" if d.get("churn") else "steady_us_per_step")
            send = e.get("send", parts.get("send", 0.0))      # (runs from before the send was split: "send" alone)
            split = " / ".join(f"{k} {parts[k]:.2f}" for k in e.get("send_parts", ()) if k != "send") or "-"
            yield (f"| {folder.name} | {f.stem} | {i + 1} | {b['batch']} | {b['recorded_executions']} of {steps} "
                   f"| {e['cpu']:.2f} | {'-' if hold is None else f'{hold:.2f}'} | {send:.2f} | {split} "
                   f"| {parts.get('device', 0):.2f} "
                   f"| {parts.get('cost_budget', 0):.2f} | {parts.get('stats', 0):.2f} "
                   f"| {parts.get('device', 0) * steps / polls:.0f} | {gc.get('us_per_step', 0) or 0:.2f} "
                   f"| {ew:.2f} | {'-' if free is None else f'{free:.2f}'} | {ew + e['cpu']:.2f} "
                   f"| {'-' if hold is None else f'{ew + hold:.2f}'} "
                   f"| {b['step_ms']:.3f} |")


def counter_ratios(folders: list[str]) -> list[float]:
    """Sampled hook wall time over the directly timed hook time, per engine step, one per batch of each run."""
    out = []
    for folder in folders:
        for f in sorted(Path(folder).rglob("*.json")):
            try:
                d = json.loads(f.read_text())
            except (ValueError, UnicodeDecodeError):
                continue
            for b in (d.get("per_batch") or []) if isinstance(d, dict) else []:
                sampled = (b.get("selfcost_sampled") or {}).get("hook_wall_us_per_step")
                if sampled and b.get("us_per_step"):
                    out.append(sampled / b["us_per_step"])
    return sorted(out)


def _f(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def main(args: list[str]) -> None:
    if args[:1] == ["--counter-ratio"]:
        r = counter_ratios(args[1:])
        q = statistics.quantiles(r, n=10)
        print(f"{len(r)} batches: sampled counter / direct timing min {r[0]:.2f}, p10 {q[0]:.2f}, median "
              f"{statistics.median(r):.2f}, p90 {q[-1]:.2f}, max {r[-1]:.2f}")
        return
    if "--parts" in args:
        args = [a for a in args if a != "--parts"]
        interval = 200.0
        if "--interval-ms" in args:
            i = args.index("--interval-ms")
            interval = float(args[i + 1])
            del args[i:i + 2]
        print("| folder | run | phase | batch | executions recorded | export thread CPU | its GIL hold | send "
              "| the send's parts "
              "| device poller "
              "| cost budget poller | own counters | device poller µs per poll | Python collections on vLLM's thread "
              "| EngineCore + worker (steady; churn: all steps) | of which freeing vLLM's end events "
              "| E + W + export thread | E + W + its GIL hold | step ms |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for f in args:
            for line in part_rows(Path(f), interval):
                print(line)
        return
    folders = args
    all_rows = [r for f in folders for r in rows(Path(f))]
    print("| folder | run | batch | SAMPLE | EngineCore | worker | front end | EngineCore + worker | of which fronts "
          "| null front µs per call | export thread CPU | step ms | E+W share of the step % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in all_rows:
        print(f"| {r['folder']} | {r['run']} | {r['batch']} | {r['sample']} | {r['engine']:.2f} | {r['worker']:.2f} "
              f"| {r['front']:.2f} | {r['ew']:.2f} | {_f(r['fronts'])} | {_f(r['null'])} | {r['export_cpu']:.2f} "
              f"| {r['step_ms']:.3f} | {r['share']:.2f} |")
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
