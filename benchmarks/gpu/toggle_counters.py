"""The plugin's own self-cost counters in ``toggle_ab.py`` runs (issue #19, target 1 where users run it: the EngineCore
in a process of its own): from each run's last full scrape of the metrics endpoint (``RUN.prom.gz``), µs per
executed engine step of the hooks' sampled wall time (``hook_self_seconds``) and the export thread's CPU, in the
EngineCore's process (role ``engine_core``, the worker inside it at TP=1) and in the front end. The scrape read is
the last one with the most executed EngineCore steps (``last_full_scrape``).

    python3 benchmarks/gpu/toggle_counters.py results/h200/t2b/t2_*/toggle_*_[0-9].prom.gz

Runs from the thirty-third session on also keep ``RUN.final.prom.gz``: every process's last metric snapshot, written
at its shutdown, as one scrape (``overhead_run.pack_final_snapshots``). Given beside the scrapes (``*.prom.gz``) it
gets a row of its own, ``RUN.final``: the whole run's counters, whether or not the endpoint answered late in the run
(on the 2-core CPU machine it answers seconds late under load, ``results/cpu/endpoint_starved``).

What the figures are: the hooks' counter is the hook runner's sampled timing (``telemetry/selfcost.py``), which
reads ~1.2x ``hook_cost_engine.py``'s direct timing (``results/cpu/selfcost_vs_direct``, ``results/h200/t2b/ratio``);
the export thread's is its thread clock, read per interval. In a flip run the plugin is paused for half of the
real generates' blocks: paused steps are not counted, and neither is their hook time, but the export thread keeps
its interval, so its figure per counted step is high by up to the paused share of the run.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead_run  # same folder

SERIES = (("hooks", "vllm_w2ext_hook_self_seconds_total"),
          ("export thread", "vllm_w2ext_export_thread_cpu_seconds_total"),
          ("export thread GIL hold", "vllm_w2ext_export_thread_gil_hold_seconds_total"))   # runs from 2026-12-05 on
ROLES = ("engine_core", "worker", "frontend")     # a worker has a role of its own where it has a process (TP > 1)


def per_step_us(final: dict) -> dict[str, float]:
    """``{"engine_core hooks": µs, ...}`` per executed EngineCore step, for each role that one scrape's
    ``overhead_run.self_cost`` holds."""
    steps = final["engine_steps"].get("engine_core") or 0.0
    roles = {r for roles in final["series"].values() for r in roles}
    if not steps:
        return {}
    return {f"{role} {label}": 1e6 * final["series"][name].get(role, 0.0) / steps
            for role in ROLES if role in roles for label, name in SERIES if name in final["series"]}


def last_full_scrape(path: Path) -> dict:
    """``overhead_run.self_cost`` of the run's last full scrape (``overhead_run.last_full``, the rule
    ``overhead_run.scrape_self_cost`` reads its runs by)."""
    got = overhead_run.scrape_self_cost(path, None)
    return got["final"] if got else {"engine_steps": {}, "series": {}}


def rows(paths: list[str]) -> list[tuple[str, int, dict[str, float]]]:
    """(run, executed EngineCore steps, ``per_step_us``) of each run's ``last_full_scrape`` (no scrape: 0, {})."""
    out = []
    for p in paths:
        final = last_full_scrape(Path(p))
        out.append((Path(p).name.removesuffix(".prom.gz"), int(final["engine_steps"].get("engine_core", 0)),
                    per_step_us(final)))
    return out


def main(paths: list[str]) -> int:
    got = rows(paths)
    cols = [f"{r} {label}" for r in ROLES for label, _ in SERIES if any(f"{r} {label}" in us for *_, us in got)]
    print("| run | executed engine steps | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for name, steps, us in got:
        print(f"| {name} | {steps} | " + " | ".join(f"{us[c]:.1f}" if c in us else "-" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
