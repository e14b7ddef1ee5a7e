"""The table of ``budget_settled.sh``'s runs (the JSON lines ``cost_budget_engine.py`` prints): per round, the
plugin's cost per executed engine step in the EngineCore process (hooks' sampled wall time + export thread CPU, the
worker's included: TP=1) and in the front end, and the N the budget had reached. Where the runs read the direct
counter (the C fronts' every call timed: ``hook_direct_seconds_total``), its columns too, and issue #19's target-1
figure from it: the direct hooks + the export thread's CPU, in the EngineCore and in vLLM's processes (+ front end).

    python3 benchmarks/gpu/budget_settled_table.py benchmarks/results/h200/budget_settled/*.jsonl
"""
import json
import sys
from pathlib import Path

HOOKS, EXPORT, DIRECT = "hook_self_seconds_total", "export_thread_cpu_seconds_total", "hook_direct_seconds_total"
ENGINE_CORE = ("engine_core", "worker")        # the EngineCore's process: its role, and the worker's inside it


def row(d: dict) -> list:
    def total(series: str, roles) -> float:
        return sum(d.get(f"{series}:{r}") or 0.0 for r in roles)
    hooks, export = total(HOOKS, ENGINE_CORE), total(EXPORT, ENGINE_CORE)
    cells = [d["round"], d["wall_s"], int(d["steps"]), int(d["sample_every"] or 0), f"{hooks:.1f}", f"{export:.1f}",
             f"**{hooks + export:.1f}**", f"{total(HOOKS, ('frontend',)):.1f}", f"{total(EXPORT, ('frontend',)):.1f}"]
    if not any(k.startswith(DIRECT) for k in d):
        return cells + ["-"] * 4
    direct, front_direct = total(DIRECT, ENGINE_CORE), total(DIRECT, ("frontend",))
    front = front_direct + total(EXPORT, ("frontend",))
    return cells + [f"{direct:.1f}", f"{front_direct:.1f}", f"**{direct + export:.1f}**",
                    f"**{direct + export + front:.1f}**"]


def main(paths: list[str]) -> None:
    print("| run | round | wall s | engine steps | N at the end | EngineCore hooks (sampled) | EngineCore export "
          "thread | EngineCore total (sampled) | front-end hooks (sampled) | front-end export thread | EngineCore "
          "hooks (direct) | front-end hooks (direct) | EngineCore: direct + export | vLLM's processes: direct + "
          "export |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in paths:
        for ln in Path(p).read_text().splitlines():
            d = json.loads(ln)
            if "round" in d:
                print("| " + " | ".join(map(str, [d["name"], *row(d)])) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
