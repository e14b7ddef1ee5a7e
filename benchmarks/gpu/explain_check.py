"""Run ``vllm-w2ext explain`` on the planted-cause runs of ``explain_planted.py`` and check each answer
against what was planted (the same checks as tests/test_explain_planted.py makes on the CPU).

    python benchmarks/gpu/explain_check.py RUN_DIR... --out benchmarks/results/h200/explain

RUN_DIR holds run.json and traces/ (as explain_planted.py writes them). For each run, OUT/<case>/ gets
explain.txt, explain.json, run.json and the trace files (xz); OUT/checks.json and OUT/checks.md say what was
expected, what explain answered, and whether it matches:
- ``schedule`` (a known sleep in every ``Scheduler.schedule``, async scheduling off): the first finding is
  ``schedule`` and its share of the wall time is within 25 % of sleep x schedule calls / wall time;
- ``prepare`` (a known sleep in the worker's input preparation before every forward, async scheduling off):
  the first finding is ``prepare_inputs`` and its share is within 25 % of sleep x model executions / wall time;
  with both slowed cases in one call, each is also read net of the other's time in its cause (the same engine
  configuration without that plant): ``net_of_twin_s`` against the planted seconds (reported, not a pass test);
- ``prefill`` (long prompts added while short requests decode): the first finding is
  ``prefill_interference`` with at least as many mixed steps as long prompts were added;
- ``default`` (batch-1 decode, nothing planted): no finding above 5 % of the wall time, and the
  ``unattributed`` device idle under 10 % of the idle time.
"""
from __future__ import annotations

import argparse
import json
import lzma
import shutil
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from vllm_w2ext import cli
from vllm_w2ext.analysis.readers.pftrace import read_span_file
from vllm_w2ext.vocab import TRACE_FILE_GLOB, Span

TOLERANCE = 0.25
# The cases that slow one of vLLM's calls by a known sleep: the cause explain must name first, the span counting
# the slowed calls, run.json's sleep per call, and where the sleep sat (for checks.md)
SLOWED = {"schedule": ("schedule", Span.SCHEDULE, "sleep_s_per_schedule", "in each of {} schedule calls"),
          "prepare": ("prepare_inputs", Span.WORKER_EXECUTE, "sleep_s_per_call", "before each of {} forwards")}


def check(run: dict, result: dict, slices: list) -> dict:
    findings = result.get("findings") or []
    top = findings[0] if findings else {}
    case = run["case"]
    wall = result["wall"]["seconds"]
    out = {"case": case, "first_finding": top.get("id"), "first_cause": top.get("cause"),
           "first_share": round(top.get("share", 0.0), 4), "wall_s": round(wall, 4)}
    if case in SLOWED:
        cause, span, sleep_key, where = SLOWED[case]
        lo, hi = result["wall"]["start_ns"], result["wall"]["end_ns"]
        counts = Counter(s.name for s in slices if lo <= s.start_ns and s.end_ns <= hi)   # spans inside the wall
        calls, execs = counts[span], counts[Span.WORKER_EXECUTE]
        expected = run[sleep_key] * calls / wall
        out.update(planted_s=round(run[sleep_key] * calls, 4), executions=execs,
                   idle_s={k: v["seconds"] for k, v in (result.get("device_idle_by_cause") or {}).items()})
        out.update(planted=f"{run[sleep_key] * 1e3:.1f} ms sleep {where.format(calls)}",
                   expected=f"first cause {cause}, share {expected:.3f} +- {TOLERANCE:.0%}",
                   ok=top.get("cause") == cause and abs(top.get("share", 0) - expected) <= TOLERANCE * expected)
    elif case == "prefill":
        mixed = (top.get("evidence") or {}).get("mixed_steps", 0)
        out.update(planted=f"{run['long_prompts']} prompts of {run['long_len']} tokens added while "
                           f"{run['decoding_requests']} requests decode",
                   expected="first finding prefill_interference",
                   ok=top.get("id") == "prefill_interference" and mixed >= run["long_prompts"], mixed_steps=mixed)
    else:
        idle = result.get("device_idle_by_cause") or {}
        total = sum(v["seconds"] for v in idle.values())
        un = idle.get("unattributed", {}).get("seconds", 0.0)
        big = [f["id"] for f in findings if f.get("share", 0) > 0.05]
        out.update(planted="nothing (batch-1 decode)", expected="no finding above 5 % of the wall time",
                   findings_above_5pct=big, unattributed_share_of_idle=round(un / total, 4) if total else None,
                   ok=not big and (not total or un / total < 0.10))
    return out


def net_of_twins(checks: list[dict]) -> list[str]:
    """Each slowed-call case's cause net of vLLM's own time in it: the other slowed case ran the same engine
    configuration without this plant, so its time in this cause per model execution is the baseline (the share
    check above leaves it in). Adds ``net_of_twin_s`` and ``net_error_pct`` (against the planted seconds) to the
    check; table lines for checks.md."""
    slowed = {c["case"]: c for c in checks if c["case"] in SLOWED and c.get("executions")}
    lines = []
    for case, c in slowed.items():
        twin = next((t for k, t in slowed.items() if k != case), None)
        if twin is None:
            continue
        cause = SLOWED[case][0]
        base = twin["idle_s"].get(cause, 0.0) / twin["executions"] * c["executions"]
        c["net_of_twin_s"] = round(c["idle_s"].get(cause, 0.0) - base, 4)
        c["net_error_pct"] = round((c["net_of_twin_s"] - c["planted_s"]) / c["planted_s"] * 100, 2)
        lines.append(f"| {case} | {cause} | {c['idle_s'].get(cause, 0.0) * 1e3:.1f} | {twin['case']}: "
                     f"{base * 1e3:.1f} | {c['net_of_twin_s'] * 1e3:.1f} | {c['planted_s'] * 1e3:.1f} | "
                     f"{c['net_error_pct']:+.1f} |")
    if lines:
        lines = ["", "Net of the twin run (the other slowed case, same engine configuration, without this plant):", "",
                 "| case | cause | explain ms | twin's own ms (per execution x executions) | net ms | planted ms | "
                 "net - planted % |", "|---|---|---|---|---|---|---|"] + lines
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    checks = []
    for rd in a.runs:
        run = json.loads((rd / "run.json").read_text())
        d = a.out / run["case"]
        d.mkdir(parents=True, exist_ok=True)
        traces = rd / "traces"
        cli.main(["explain", str(traces), "--format", "json", "--out", str(d / "explain.json")])
        cli.main(["explain", str(traces), "--out", str(d / "explain.txt")])
        for p in (d / "explain.txt", d / "explain.json"):   # the local folder the traces were read from
            p.write_text(p.read_text().replace(str(traces.resolve()), "traces").replace(str(traces), "traces"))
        shutil.copy(rd / "run.json", d / "run.json")
        (d / "traces").mkdir(exist_ok=True)
        for f in sorted(traces.glob(TRACE_FILE_GLOB)):
            with open(f, "rb") as fi, lzma.open(d / "traces" / (f.name + ".xz"), "wb") as fo:
                shutil.copyfileobj(fi, fo)
        slices = [s for f in sorted(traces.glob(TRACE_FILE_GLOB)) for s in read_span_file(str(f)).slices]
        checks.append(check(run, json.loads((d / "explain.json").read_text()), slices))
    lines = ["| case | planted | expected | explain's first finding | share of wall | ok |", "|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(f"| {c['case']} | {c['planted']} | {c['expected']} | {c['first_finding']} ({c['first_cause']}) | "
                     f"{c['first_share']:.1%} | {'yes' if c['ok'] else 'NO'} |")
    lines += net_of_twins(checks)
    (a.out / "checks.json").write_text(json.dumps(checks, indent=1))
    (a.out / "checks.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
