"""Summary of in-engine toggle runs (``toggle_ab.py``): per model and workload, the paired blocks, the cost
per block, its median and mean, the spread of the paused blocks, the switch check, and the plugin's
self-cost per executed engine step from the run's last metrics scrape.

    python benchmarks/gpu/toggle_summary.py RUN.json... --out DIR

Copies each run's record and log to DIR, keeps the LAST scrape of each run (DIR/<run>.last.prom.gz; the
full scrape series stays out of git) and writes DIR/summary.json and DIR/summary.md.
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead_run as orun  # same folder: scrape parsing
import toggle_ab


STEP_KEYS = ("step_p25_cost_pct", "step_p25_cost_90pct", "step_p50_cost_pct", "step_p50_cost_90pct", "steps_on",
             "steps_off")


def _interval(v: dict, key: str) -> str:
    """``+c [lo, hi]`` of a cost read by toggle_ab.quantile_cost under ``key``; ``-`` where absent."""
    if f"{key}_cost_pct" not in v:
        return "-"
    lo, hi = v[f"{key}_cost_90pct"]
    return f"{v[f'{key}_cost_pct']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def self_cost_per_step(prom: Path) -> dict:
    """The plugin's self-cost counters per engine step, from the run's last full scrape (``orun.last_full``)."""
    got = orun.scrape_self_cost(prom, None)
    if got is None:
        return {}
    c = got["final"]
    steps = sum(c["engine_steps"].values())
    out = {"engine_steps": steps}
    for name, by_role in c["series"].items():
        short = name.removeprefix("vllm_w2ext_").removesuffix("_seconds_total")
        out[short + "_us_per_step"] = {r: round(v / steps * 1e6, 1) for r, v in by_role.items()} if steps else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows, lines = [], [("| run | model | layers | workload | blocks | paused | resumed | cost per block % | median % | "
                       "mean % | paused spread % | p25 cost % [90 %] | switches ok |"), "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    cost_lines = ["| run | engine steps | hook self µs/step | export thread CPU µs/step | export process CPU µs/step |",
                  "|---|---|---|---|---|"]
    step_lines = ["| run | workload | decode steps paused / resumed | p25 µs paused / resumed | p25 cost % [90 %] | "
                  "p50 µs paused / resumed | p50 cost % [90 %] |", "|---|---|---|---|---|---|---|"]
    for i, p in enumerate(a.runs):
        doc = json.loads(p.read_text())
        name = f"{p.stem}_{i + 1}" if sum(q.stem == p.stem for q in a.runs) > 1 else p.stem
        s = toggle_ab.summarize(doc)
        prom = p.with_suffix(".prom.gz")
        cost = self_cost_per_step(prom) if prom.exists() else {}
        if prom.exists():
            last = orun.read_scrapes(prom)[-1:]
            with gzip.open(a.out / f"{name}.last.prom.gz", "wt") as f:
                f.writelines(f"# SCRAPE {t}\n{body}" for t, body in last)
        shutil.copy(p, a.out / f"{name}.json")
        if p.with_suffix(".log.gz").exists():
            shutil.copy(p.with_suffix(".log.gz"), a.out / f"{name}.log.gz")
        for key, v in s.items():
            if key == "switches_checked":
                continue
            f = (lambda x: f"{x:.4f}") if v["unit"] == "s" else (lambda x: f"{x:,.0f}")
            rows.append({"run": name, "model": doc.get("model"), "layers": doc.get("layers"), "workload": key,
                         "unit": v["unit"], "paused": v["off"], "resumed": v["on"], "cost_pct": v["cost_pct"],
                         "median_cost_pct": v["median_cost_pct"], "mean_cost_pct": v["mean_cost_pct"],
                         "paused_spread_pct": v["off_spread_pct"], "quantile": v.get("quantile"),
                         "quantile_cost_pct": v.get("quantile_cost_pct"),
                         "quantile_cost_90pct": v.get("quantile_cost_90pct"),
                         **{k: v[k] for k in STEP_KEYS if k in v},
                         "switches_ok": s["switches_checked"]["ok"]})
            qc = _interval(v, "quantile")
            if "step_p25_cost_pct" in v:
                step_lines.append(f"| {name} | {key} | {v['steps_off']['decode_steps']} / {v['steps_on']['decode_steps']} | "
                                  f"{v['steps_off']['step_p25_us']:.0f} / {v['steps_on']['step_p25_us']:.0f} | "
                                  f"{_interval(v, 'step_p25')} | {v['steps_off']['step_p50_us']:.0f} / "
                                  f"{v['steps_on']['step_p50_us']:.0f} | {_interval(v, 'step_p50')} |")
            lines.append(f"| {name} | {doc.get('model')} | {doc.get('layers')} | {key} ({v['unit']}) | {v['pairs']} | "
                         f"{' / '.join(map(f, v['off']))} | {' / '.join(map(f, v['on']))} | "
                         f"{' / '.join(f'{c:+.2f}' for c in v['cost_pct'])} | {v['median_cost_pct']:+.2f} | "
                         f"{v['mean_cost_pct']:+.2f} | {v['off_spread_pct']:.2f} | {qc} | {s['switches_checked']['ok']} |")
        if cost:
            def g(k, cost=cost):
                return ", ".join(f"{r} {u}" for r, u in (cost.get(k) or {}).items())
            cost_lines.append(f"| {name} | {cost['engine_steps']:.0f} | {g('hook_self_us_per_step')} | "
                              f"{g('export_thread_cpu_us_per_step')} | {g('export_process_cpu_us_per_step')} |")
            rows.append({"run": name, "self_cost_per_step": cost})
    (a.out / "summary.json").write_text(json.dumps(rows, indent=1))
    text = "\n".join(lines) + "\n\n" + ("\n".join(step_lines) + "\n\n" if len(step_lines) > 2 else "") + "\n".join(cost_lines)
    (a.out / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
