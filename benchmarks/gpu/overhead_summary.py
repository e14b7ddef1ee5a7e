"""Summary of the overhead A/B (``benchmarks/gpu/overhead_models.sh``): ``summary.json`` + ``summary.md``.

    python3 benchmarks/gpu/overhead_summary.py INPUT... --out DIR [--collect]

INPUT: runs folders (holding ``runs/``, ``env/``, ...) or the tarballs the device calls return
(``overhead-*.tar.gz``), in any number (several calls). A run that appears more than once counts once:
its ``ok`` record, the latest by finish time. ``--collect`` also copies every input's files (runs/, raw/,
logs/, metrics/, specs/, env/) into DIR, so the raw output sits next to the summary.

``summary.json``: a list of ``{"model", "layers", "workload", "stock": [...], "plugin": [...]}``, values in
pair order (seconds for latency, total tok/s for throughput), only pairs with both values.
``summary.md``: per model and workload the values per pair, the median cost (latency: plugin slower;
throughput: plugin fewer tok/s; %), the stock spread ((max - min) / median of stock), the limit (1 %;
0.5 % for the 32-layer 8B) and the plugin's own cost per engine step from its metrics (hook self time on
vLLM's threads, export CPU), plus the machine (env capture). Imports neither vLLM nor torch.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tarfile
import tempfile
from pathlib import Path

MODEL_ORDER = ("l4", "1b", "8b", "tiny", "tiny-l1")
WORKLOAD_ORDER = ("latency", "throughput")
SUBDIRS = ("runs", "raw", "logs", "metrics", "specs", "env")


# ---- reading ------------------------------------------------------------------------------------
def _roots(inputs: list[Path], tmp: Path) -> list[Path]:
    """Every folder that holds a ``runs/`` folder, tarballs unpacked into ``tmp`` first."""
    roots = []
    for k, p in enumerate(inputs):
        if p.is_file() and p.name.endswith((".tar.gz", ".tgz", ".tar")):
            dest = tmp / f"in{k}"
            with tarfile.open(p) as tf:
                members = [m for m in tf.getmembers() if m.isfile() and ".." not in Path(m.name).parts
                           and not m.name.startswith("/")]
                tf.extractall(dest, members=members)
            p = dest
        if not p.is_dir():
            raise SystemExit(f"overhead_summary: {p}: not a folder or tarball")
        roots += sorted({r.parent for r in p.rglob("runs") if r.is_dir()} | ({p} if (p / "env").is_dir() else set()))
    return roots


def load(roots: list[Path]) -> tuple[list[dict], list[dict]]:
    """(records, env captures) from runs folders; one record per run name (ok first, then latest)."""
    best: dict[str, dict] = {}
    envs: list[dict] = []
    for r in roots:
        for f in sorted((r / "runs").glob("*.json")):
            rec = json.loads(f.read_text())
            old = best.get(rec["run"])
            if old is None or _rank(rec) > _rank(old):
                best[rec["run"]] = rec
        for f in sorted((r / "env").glob("*.json")) if (r / "env").is_dir() else []:
            e = json.loads(f.read_text())
            if e not in envs:
                envs.append(e)
    return list(best.values()), envs


def _rank(rec: dict) -> tuple:
    return (rec.get("status") == "ok", rec.get("finished") or 0)


def collect(roots: list[Path], out: Path) -> None:
    for r in roots:
        for sub in SUBDIRS:
            if (r / sub).is_dir():
                shutil.copytree(r / sub, out / sub, dirs_exist_ok=True)


# ---- numbers ------------------------------------------------------------------------------------
def _model_key(rec: dict) -> tuple:
    k = rec.get("model_key", rec["model"])
    return (MODEL_ORDER.index(k) if k in MODEL_ORDER else len(MODEL_ORDER), str(k))


def groups(records: list[dict]) -> list[dict]:
    """Per (model key, workload): the complete pairs, in pair order, with their records."""
    by: dict[tuple, dict] = {}
    for rec in records:
        for kind, res in (rec.get("results") or {}).items():
            g = by.setdefault((_model_key(rec), WORKLOAD_ORDER.index(kind) if kind in WORKLOAD_ORDER else 9,
                               res["workload"]), {"model": rec["model"], "layers": rec["layers"], "kind": kind,
                                                  "workload": res["workload"], "arms": {}})
            g["arms"].setdefault(rec["pair"], {})[rec["arm"]] = (res["value"], rec)
    out = []
    for key in sorted(by):
        g = by[key]
        pairs = sorted(p for p, arms in g["arms"].items() if "stock" in arms and "plugin" in arms)
        g["pairs"] = pairs
        g["incomplete"] = sorted(p for p in g["arms"] if p not in pairs)
        g["stock"] = [g["arms"][p]["stock"][0] for p in pairs]
        g["plugin"] = [g["arms"][p]["plugin"][0] for p in pairs]
        g["plugin_records"] = [g["arms"][p]["plugin"][1] for p in pairs]
        out.append(g)
    return out


def summary(records: list[dict]) -> list[dict]:
    """The committed format: ``{"model", "layers", "workload", "stock", "plugin"}`` per model/workload."""
    out = []
    for g in groups(records):
        if g["pairs"]:
            row = {"model": g["model"], "layers": g["layers"], "workload": g["workload"], "stock": g["stock"],
                   "plugin": g["plugin"]}
            sample = plugin_sample(g["plugin_records"])
            if sample > 1:                   # the plugin arm recorded 2 steps in every N (VLLM_W2EXT_SAMPLE)
                row["plugin_sample"] = sample
            budget = plugin_budget(g["plugin_records"])
            if budget is not None:           # VLLM_W2EXT_COST_BUDGET (percent; 0: off)
                row["plugin_cost_budget"] = budget
            out.append(row)
    return out


def plugin_budget(plugin_records: list[dict]) -> str | None:
    """VLLM_W2EXT_COST_BUDGET of the plugin runs as their records say (None: records from before it was written
    out, when the default was 0: off)."""
    vals = {(r.get("plugin_env") or {}).get("VLLM_W2EXT_COST_BUDGET") for r in plugin_records} - {None}
    return ", ".join(sorted(vals)) if vals else None


def budget_on(budget: str | None) -> bool:
    return budget is not None and any(float(b) > 0 for b in budget.split(", "))


PROCESS_SERIES = (("hooks", "vllm_w2ext_hook_self_seconds_total"),
                  ("export thread", "vllm_w2ext_export_thread_cpu_seconds_total"))


def by_process(plugin_records: list[dict], part: str) -> dict:
    """Issue #19's target 1 in the real layout: per executed engine step (µs, median over the runs), the plugin's
    hooks (sampled wall time) and its export thread's CPU in each process (role: ``engine_core``, the EngineCore with
    the worker inside it at TP=1, and ``frontend``); and the N each run ended on (``vllm_w2ext_sample_every``)."""
    vals: dict[tuple, list[float]] = {}
    every = []
    for rec, seg, n in _runs(plugin_records, part):
        for label, name in PROCESS_SERIES:
            for role, v in (seg["series"].get(name) or {}).items():
                vals.setdefault((role, label), []).append(1e6 * v / n)
        last = rec["self_cost"].get("final") or {}
        if last.get("sample_every") is not None:
            every.append(int(last["sample_every"]))
    return {"us_per_step": {k: statistics.median(v) for k, v in sorted(vals.items())}, "sample_every": every}


def plugin_sample(plugin_records: list[dict]) -> int:
    """VLLM_W2EXT_SAMPLE of the plugin runs (1: every step recorded)."""
    return max((int((r.get("plugin_env") or {}).get("VLLM_W2EXT_SAMPLE", 1)) for r in plugin_records), default=1)


def cost_pct(kind: str, stock: float, plugin: float) -> float:
    """What the plugin costs, in % of stock: latency grows, throughput shrinks (positive = slower)."""
    return 100.0 * ((plugin - stock) / stock if kind == "latency" else (stock - plugin) / stock)


def limit_pct(model: str, layers: int) -> float:
    """Issue #19: 1 % everywhere, 0.5 % for the 8B (the 32-layer Llama-3.1-8B shape)."""
    return 0.5 if "8B" in model and layers == 32 else 1.0


def stats(g: dict) -> dict:
    s, p = g["stock"], g["plugin"]
    if not s:
        return {}
    per_pair = [cost_pct(g["kind"], a, b) for a, b in zip(s, p)]
    ms, mp = statistics.median(s), statistics.median(p)
    return {"cost_pct_per_pair": per_pair, "median_cost_pct": statistics.median(per_pair),
            "cost_of_medians_pct": cost_pct(g["kind"], ms, mp), "stock_median": ms, "plugin_median": mp,
            "stock_spread_pct": 100.0 * (max(s) - min(s)) / ms, "plugin_spread_pct": 100.0 * (max(p) - min(p)) / mp,
            "limit_pct": limit_pct(g["model"], g["layers"])}


def _segment(sc: dict, kind: str) -> dict | None:
    """One workload's part of a plugin run's self-cost: latency = the snapshot at the latency task's end,
    throughput = final minus that snapshot."""
    fin, mid = sc.get("final"), sc.get("at_latency_done")
    if kind == "run":
        return fin
    if not mid or not _steps(mid):       # no engine snapshot had been written before the latency task ended
        return None
    if kind == "latency":
        return mid
    if kind == "throughput" and fin and mid:
        return reading_delta(fin, mid)
    return None


def reading_delta(later: dict, earlier: dict) -> dict:
    """What happened between two self-cost readings (``overhead_run.self_cost``): each series and the executed
    engine steps, per role, later minus earlier."""
    return {"series": {n: {r: v - earlier["series"].get(n, {}).get(r, 0.0) for r, v in roles.items()}
                       for n, roles in later["series"].items()},
            "engine_steps": {r: v - earlier["engine_steps"].get(r, 0.0) for r, v in later["engine_steps"].items()}}


def _steps(seg: dict) -> float:
    """The executed engine steps of a reading: the EngineCore's count (any role's where it has none)."""
    st = seg.get("engine_steps") or {}
    return st.get("engine_core") or max(st.values(), default=0.0)


def _runs(plugin_records: list[dict], part: str):
    """(record, its reading of ``part``, executed engine steps) of each plugin run that stepped in that part."""
    for rec in plugin_records:
        seg = _segment(rec.get("self_cost") or {}, part)
        n = _steps(seg) if seg else 0
        if n:
            yield rec, seg, n


def per_step(plugin_records: list[dict], part: str) -> dict:
    """Median over the plugin runs of each self/cpu series (summed over roles) per executed engine step,
    in microseconds, for one part of the run (``latency``, ``throughput`` or the whole ``run``); plus the
    steps per run."""
    vals: dict[str, list[float]] = {}
    steps = []
    for _, seg, n in _runs(plugin_records, part):
        steps.append(n)
        for name, roles in seg["series"].items():
            vals.setdefault(name, []).append(1e6 * sum(roles.values()) / n)
    return {"us_per_step": {k: statistics.median(v) for k, v in sorted(vals.items())},
            "steps": statistics.median(steps) if steps else None, "runs": len(steps)}


def machine(envs: list[dict]) -> list[str]:
    out = []
    for e in envs:
        gpu = e.get("gpu") or {}
        names = sorted({d.get("name") for d in gpu.get("devices") or []} - {None})
        where = ", ".join(names) + f" (driver {gpu.get('driver')})" if names else f"CPU {e.get('cpu', {}).get('model')}"
        line = (f"{where}; vLLM {e.get('vllm')}, torch {e.get('torch')}, Python {e.get('python')}, "
                f"commit {e.get('git_commit')}")
        fi = (e.get("vllm_env") or {}).get("VLLM_USE_FLASHINFER_SAMPLER")
        if fi is not None:
            line += f"; VLLM_USE_FLASHINFER_SAMPLER={fi}"
        if line not in out:
            out.append(line)
    return out


# ---- writing ------------------------------------------------------------------------------------
def _fmt(kind: str, v: float) -> str:
    return f"{v:.4f}" if kind == "latency" else f"{v:,.0f}"


def markdown(records: list[dict], envs: list[dict]) -> str:
    gs = groups(records)
    L = ["# Plugin overhead, every exporter on (issue #19)", ""]
    L += [f"- Machine: {m}" for m in machine(envs)] or ["- Machine: (no env capture found)"]
    L += ["- Each run: one engine (`LLM`, vLLM's defaults otherwise: CUDA graphs + torch.compile on the GPU), "
          "latency first then throughput, through vLLM's bench code (`vllm_w2ext.lab.engine_driver`). Plugin: "
          "OTLP/gRPC to a loopback receiver, metrics endpoint scraped every 1 s, `VLLM_W2EXT_TRACE_DIR`, NVTX on.",
          *[f"- Engine of {k}: `{json.dumps(kw)}`" for k, kw in _engines(records).items()],
          "- Pairs interleaved: stock first in odd pairs, plugin first in even ones. Cost: latency "
          "(plugin - stock) / stock, throughput (stock - plugin) / stock; positive = the plugin is slower.",
          "- Latency: `avg_latency` (s) of batch 1; throughput: total tok/s of `bench throughput`.",
          *[f"- Plugin runs of {g['model']} ({g['layers']} layers) with `VLLM_W2EXT_SAMPLE={n}` (2 steps in every "
            f"{n} recorded)" for g in gs if g["kind"] == WORKLOAD_ORDER[0]
            for n in [plugin_sample(g["plugin_records"])] if n > 1],
          *[f"- Plugin runs of {g['model']} ({g['layers']} layers) with `VLLM_W2EXT_COST_BUDGET={b}`"
            for g in gs if g["kind"] == WORKLOAD_ORDER[0] for b in [plugin_budget(g["plugin_records"])]
            if budget_on(b)], "",
          "| model | layers | workload | pairs | stock | plugin | cost per pair % | median cost % | stock spread % "
          "| limit % | within |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for g in gs:
        st = stats(g)
        if not st:
            continue
        ok = "yes" if st["median_cost_pct"] <= st["limit_pct"] else "no"
        if st["stock_spread_pct"] > st["limit_pct"]:
            ok += " (stock spread > limit: noise-bound)"
        L.append(f"| {g['model']} | {g['layers']} | {g['workload']} | {len(g['pairs'])} | "
                 f"{' / '.join(_fmt(g['kind'], v) for v in g['stock'])} | "
                 f"{' / '.join(_fmt(g['kind'], v) for v in g['plugin'])} | "
                 f"{' / '.join(f'{c:+.2f}' for c in st['cost_pct_per_pair'])} | {st['median_cost_pct']:+.2f} | "
                 f"{st['stock_spread_pct']:.2f} | {st['limit_pct']:g} | {ok} |")
    inc = [f"{g['model']} {g['layers']}L {g['workload']}: pair(s) {g['incomplete']}" for g in gs if g["incomplete"]]
    if inc:
        L += ["", "Incomplete pairs (left out above): " + "; ".join(inc)]
    rows = []
    whole: dict[tuple, list[dict]] = {}
    for g in gs:
        whole.setdefault((g["model"], g["layers"]), []).extend(
            r for r in g["plugin_records"] if r not in whole.get((g["model"], g["layers"]), []))
    parts = [(g, g["kind"], g["workload"], g["plugin_records"]) for g in gs]
    parts += [({"model": m, "layers": n}, "run", "whole run (both)", recs) for (m, n), recs in whole.items()]
    for g, part, label, recs in parts:
        ps = per_step(recs, part)
        if not ps["runs"]:
            continue
        series = "; ".join(f"{k.removeprefix('vllm_w2ext_')} {v:.1f}" for k, v in ps["us_per_step"].items())
        share = ""
        hook = [v for k, v in ps["us_per_step"].items() if "hook_self" in k]
        st = stats(g) if part == "latency" else {}
        if hook and st and ps["steps"]:
            # the latency part's steps per generate: (warm-up + iterations) generates in the part
            its = _lat_iters(recs[0])
            if its:
                step_s = st["stock_median"] / (ps["steps"] / its)
                share = f"{100 * hook[0] * 1e-6 / step_s:.2f}"
        rows.append(f"| {g['model']} | {g['layers']} | {label} | {ps['runs']} | {ps['steps']:.0f} | "
                    f"{series} | {share or '-'} |")
    if rows:
        L += ["", "Plugin self-cost per executed engine step (µs, median over plugin runs; from the metrics "
              "endpoint's last scrape; the latency part is the last scrape before the latency task ended, so it "
              "lags by up to ~2 s (metric snapshots and scrapes every second); series summed over roles; hook "
              "self time is on vLLM's threads, export CPU runs off them)", "",
              "| model | layers | workload | runs | engine steps | µs per step | hook self % of a stock step |",
              "|---|---|---|---|---|---|---|", *rows]
    rows = []
    for g, part, label, recs in parts:
        bp = by_process(recs, part)
        if not bp["us_per_step"]:
            continue
        u = bp["us_per_step"]

        def cell(role: str, what: str) -> str:
            v = u.get((role, what))
            return "-" if v is None else f"{v:.1f}"
        core = [u.get(("engine_core", w)) for w, _ in PROCESS_SERIES]
        total = f"{sum(core):.1f}" if None not in core else "-"
        rows.append(f"| {g['model']} | {g['layers']} | {label} | {cell('engine_core', 'hooks')} | "
                    f"{cell('engine_core', 'export thread')} | **{total}** | {cell('frontend', 'hooks')} | "
                    f"{cell('frontend', 'export thread')} | {' / '.join(map(str, bp['sample_every'])) or '-'} |")
    if rows:
        L += ["", "By process, per executed engine step (µs, median over plugin runs, same scrapes as above): the "
              "EngineCore process (TP=1: the worker runs inside it) and the front end apart; hooks = their sampled "
              "wall time on vLLM's threads, export thread = its CPU (issue #19's target 1 counts both); N = "
              "`vllm_w2ext_sample_every` at each run's last scrape", "",
              "| model | layers | workload | EngineCore hooks | EngineCore export thread | EngineCore total | "
              "front-end hooks | front-end export thread | N per run |", "|---|---|---|---|---|---|---|---|---|",
              *rows]
    L += ["", "Runs", "", "| run | position | status | wall s | latency s | throughput tok/s | spans | trace MB |",
          "|---|---|---|---|---|---|---|---|"]
    for rec in sorted(records, key=lambda r: (_model_key(r), r["pair"], r.get("position", 0))):
        res = rec.get("results") or {}
        lat = res.get("latency", {}).get("value")
        thr = res.get("throughput", {}).get("value")
        tf = rec.get("trace_files")
        lat_s = "-" if lat is None else f"{lat:.4f}"
        thr_s = "-" if thr is None else f"{thr:,.0f}"
        tf_s = f"{tf['bytes'] / 1e6:.1f}" if tf else "-"
        L.append(f"| {rec['run']} | {rec.get('position', '')} | {rec.get('status')} | {rec.get('wall_s')} | "
                 f"{lat_s} | {thr_s} | {(rec.get('spans') or {}).get('total', '-')} | {tf_s} |")
    return "\n".join(L) + "\n"


def _engines(records: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for rec in sorted(records, key=_model_key):
        kw = {k: v for k, v in (rec.get("engine") or {}).items() if k != "model"}
        out.setdefault(f"{rec['model']} ({rec['layers']} layers)", kw)
    return out


def _lat_iters(rec: dict) -> int | None:
    for t in rec.get("tasks") or []:
        if t.get("kind") == "latency":
            return int(t.get("warmup", 0)) + int(t.get("iters", 0))
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--collect", action="store_true", help="copy every input's raw files into --out")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        roots = _roots(a.inputs, Path(tmp))
        if a.collect:
            collect([r for r in roots if r.resolve() != a.out.resolve()], a.out)
        records, envs = load(roots)
    if not records:
        print("overhead_summary: no run records found", file=sys.stderr)
        return 1
    (a.out / "summary.json").write_text(json.dumps(summary(records), indent=1) + "\n")
    md = markdown(records, envs)
    (a.out / "summary.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
