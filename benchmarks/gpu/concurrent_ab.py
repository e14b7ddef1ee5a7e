"""Two engines side by side on one GPU, measured over the same seconds: the plugin's cost with the host's
drift taken out (issue #19).

    OUT=DIR PAIRS="stock:plugin stock:stock" MODEL=l4 bash benchmarks/gpu/concurrent_ab.sh
    python3 benchmarks/gpu/concurrent_ab.py A.json B.json [--window 1.0]     # the summary of one pair

Why: on the H200 host the speed of vLLM's own CPU work drifts by 20-50 % over seconds (the engine's decode
step at batch 1, ~2.0-2.8 ms for the 4-layer model, is CPU-bound: its length follows that drift), in
runs and within one engine alike (``results/h200/noise``, and the in-engine toggles' paused blocks). Runs one
after the other, or states switched block by block, see different hosts. Two engines that run at the same
time see the same host, if its slow spells are the host's and not one vCPU's: ``stock:stock`` tells which
(its cost must read 0 within its interval). Each engine is a ``toggle_ab.py --arm stock|plugin`` run (the
same harness: ``LLM``, batch 1, 512 in / 128 out, its decode steps timed at the front end's
``LLMEngine.step()``), started together, each with a share of the GPU's memory, measuring from one moment
(``--start-at``) to one deadline. Their GPU work interleaves on the one device; at batch 1 it is a small
part of each step, and the two arms share it alike.

The summary splits the common seconds into windows, takes each arm's median decode step in each window,
and reads the cost from the median over windows of B's median / A's median - 1 (positive: B slower), with a
90 % interval from resampling windows."""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toggle_ab import BOOTSTRAP, interval_90  # same folder: the block toggle's bootstrap


def step_times(doc: dict) -> list[tuple[float, int]]:
    """(wall clock s at the step's end, µs) of every decode step of a run's latency measures: each
    iteration's start (``starts``) plus its step intervals, the first (admission + prefill) left out."""
    out = []
    for m in doc.get("measures", []):
        for start, steps in zip(m.get("starts") or (), m.get("steps_us") or ()):
            t = start
            for i, us in enumerate(steps):
                t += us / 1e6
                if i:
                    out.append((t, us))
    return out


def windowed_cost(a: list[tuple[float, int]], b: list[tuple[float, int]], window_s: float = 1.0,
                  min_steps: int = 20, seed: int = 0) -> dict:
    """B against A over the seconds both ran: per window the ratio of their median steps; the median ratio
    as a cost in % with a 90 % interval from resampling windows. Windows where either arm has fewer than
    ``min_steps`` steps are left out (engine start, the ends)."""
    if not a or not b:
        return {}
    t0 = max(a[0][0], b[0][0])
    t1 = min(a[-1][0], b[-1][0])
    if t1 <= t0:
        return {"windows": 0}

    def bins(steps):
        out: dict[int, list[int]] = {}
        for t, us in steps:
            if t0 <= t < t1:
                out.setdefault(int((t - t0) // window_s), []).append(us)
        return out

    ba, bb = bins(a), bins(b)
    common = [w for w in sorted(ba) if w in bb and len(ba[w]) >= min_steps and len(bb[w]) >= min_steps]
    if not common:
        return {"windows": 0}
    ma, mb = [statistics.median(ba[w]) for w in common], [statistics.median(bb[w]) for w in common]
    ratios = [y / x for x, y in zip(ma, mb)]
    rng = random.Random(seed)
    boot = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(BOOTSTRAP))
    a_med = statistics.median(us for w in ba for us in ba[w])
    a_windows = [statistics.median(v) for v in ba.values()]
    return {"windows": len(ratios), "window_s": window_s, "common_s": round(t1 - t0, 1),
            "cost_pct": (statistics.median(ratios) - 1) * 100,
            "cost_90pct": [(r - 1) * 100 for r in interval_90(boot)],
            "a_median_step_us": a_med, "a_window_medians_spread_pct": (max(a_windows) / min(a_windows) - 1) * 100,
            "ratio_quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3,
            # do the two engines slow down together? (near 1: the host's spells are shared and cancel)
            "window_median_correlation": statistics.correlation(ma, mb) if len(ratios) > 2 else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path, help="the reference run (toggle_ab.py --arm ... JSON)")
    ap.add_argument("b", type=Path, help="the run compared with it")
    ap.add_argument("--window", type=float, default=1.0, help="seconds per window")
    ap.add_argument("--out", type=Path, help="write the summary JSON here too")
    x = ap.parse_args(argv)
    da, db = json.loads(x.a.read_text()), json.loads(x.b.read_text())
    s = {"a": da.get("run"), "b": db.get("run"), "a_arm": da.get("arm"), "b_arm": db.get("arm"),
         **windowed_cost(step_times(da), step_times(db), x.window)}
    if x.out:
        x.out.write_text(json.dumps(s, indent=1))
    print(f"[concurrent_ab] {s['b']} vs {s['a']}: " + json.dumps({k: v for k, v in s.items() if k not in ('a', 'b')}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
