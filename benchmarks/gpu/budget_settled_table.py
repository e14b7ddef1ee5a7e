"""The table of ``budget_settled.sh``'s runs (the JSON lines ``cost_budget_engine.py`` prints): per round, the
plugin's cost per executed engine step in the EngineCore process (hooks' sampled wall time + export thread CPU, the
worker's included: TP=1) and in the front end, and the N the budget had reached. Where the runs read the direct
counter (the C fronts' every call timed: ``hook_direct_seconds_total``), its columns too, and issue #19's target-1
figure from it: the direct hooks + the export thread's CPU, in the EngineCore and in vLLM's processes (+ front end);
and where the runs read it, the time of Python's collections in each process (``python_gc_seconds_total``: any
thread's, vLLM's own with the plugin's; not in the target's sums).

    python3 benchmarks/gpu/budget_settled_table.py benchmarks/results/h200/budget_settled/*.jsonl
    python3 benchmarks/gpu/budget_settled_table.py --by-hook RUN.jsonl...

``--by-hook``: the direct counter split by hook (``vllm_w2ext_hook_direct_by_hook_seconds_total``, where the runs'
plugin has it), µs per executed engine step, round by round, the largest first.
"""
import json
import sys
from pathlib import Path

HOOKS, EXPORT, DIRECT = "hook_self_seconds_total", "export_thread_cpu_seconds_total", "hook_direct_seconds_total"
GC = "python_gc_seconds_total"                  # Python's collections in the process, any thread (not the plugin's)
BY_HOOK = "hook_direct_by_hook_seconds_total:"
ENGINE_CORE = ("engine_core", "worker")        # the EngineCore's process: its role, and the worker's inside it


def row(d: dict) -> list:
    def total(series: str, roles) -> float:
        return sum(d.get(f"{series}:{r}") or 0.0 for r in roles)
    hooks, export = total(HOOKS, ENGINE_CORE), total(EXPORT, ENGINE_CORE)
    cells = [d["round"], d["wall_s"], int(d["steps"]), int(d["sample_every"] or 0), f"{hooks:.1f}", f"{export:.1f}",
             f"**{hooks + export:.1f}**", f"{total(HOOKS, ('frontend',)):.1f}", f"{total(EXPORT, ('frontend',)):.1f}"]
    gc = [f"{total(GC, roles):.1f}" if any(k.startswith(GC) for k in d) else "-"
          for roles in (ENGINE_CORE, ("frontend",))]
    if not any(k.startswith(DIRECT) for k in d):
        return cells + ["-"] * 4 + gc
    direct, front_direct = total(DIRECT, ENGINE_CORE), total(DIRECT, ("frontend",))
    front = front_direct + total(EXPORT, ("frontend",))
    return cells + [f"{direct:.1f}", f"{front_direct:.1f}", f"**{direct + export:.1f}**",
                    f"**{direct + export + front:.1f}**"] + gc


def by_hook(paths: list[str]) -> None:
    """Per run: each (process role, hook)'s direct µs per executed step in each round, the largest first."""
    for p in paths:
        rounds = [d for d in map(json.loads, Path(p).read_text().splitlines()) if "round" in d]
        keys = {k for d in rounds for k in d if k.startswith(BY_HOOK)}
        if not keys:
            continue
        print(f"\n{rounds[0]['name']}: direct µs per executed engine step, by process role and hook, rounds "
              f"{', '.join(str(d['round']) for d in rounds)}\n")
        print("| role / hook | " + " | ".join(f"round {d['round']}" for d in rounds) + " |")
        print("|---|" + "---|" * len(rounds))
        for k in sorted(keys, key=lambda k: -sum(d.get(k) or 0.0 for d in rounds)):
            print(f"| {k[len(BY_HOOK):]} | " + " | ".join(f"{d.get(k) or 0.0:.2f}" for d in rounds) + " |")


def main(paths: list[str]) -> None:
    if paths[:1] == ["--by-hook"]:
        by_hook(paths[1:])
        return
    print("| run | round | wall s | engine steps | N at the end | EngineCore hooks (sampled) | EngineCore export "
          "thread | EngineCore total (sampled) | front-end hooks (sampled) | front-end export thread | EngineCore "
          "hooks (direct) | front-end hooks (direct) | EngineCore: direct + export | vLLM's processes: direct + "
          "export | collections, EngineCore | collections, front end |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in paths:
        for ln in Path(p).read_text().splitlines():
            d = json.loads(ln)
            if "round" in d:
                print("| " + " | ".join(map(str, [d["name"], *row(d)])) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
