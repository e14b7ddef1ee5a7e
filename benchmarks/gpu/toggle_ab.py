"""The plugin's cost measured inside ONE engine: its hooks paused and resumed block by block (issue #19).

    python3 benchmarks/gpu/toggle_ab.py --model l4 --out DIR [--blocks 8] [--workloads lat1,thr] [--timeout 400]
    python3 benchmarks/gpu/toggle_ab.py --arm stock|plugin --pair 1 --tp 2 --model 8b --out DIR ...

``--arm stock`` / ``--arm plugin`` run the same workloads in one engine without switching (no plugin at all /
the plugin with every exporter on): the separate-run pairs of issue #15 (TP=2), same code path as the toggle.

Why: on the H200 host, separate engine runs of the same configuration spread 8-38 % (engine start,
core placement), so stock-vs-plugin pairs of separate runs cannot resolve a 1 % cost
(benchmarks/results/h200/overhead). Here one engine (every exporter on: OTLP/gRPC spans and metrics (5 s interval, exemplars) to a loopback receiver,
the metrics endpoint scraped every second, ``VLLM_W2EXT_TRACE_DIR``, NVTX) runs the same workloads with
the hooks on and paused (``Instrumentor.set_active``: a paused hook calls vLLM's method straight through),
in blocks ordered on/off, off/on, ... so drift cancels. Pausing reaches every process of the engine
(``vllm_w2ext.hooks.control.set_everywhere``: the front end here, the EngineCore through a utility call, the
workers through ``collective_rpc``), at any TP. Each switch returns every process's hook-call count, so the
record proves the paused blocks ran no hook and the resumed ones did. (The H200 runs of 2026-11-30 used an
earlier version that reached the EngineCore through ``collective_rpc`` with a pickled callable: TP=1 only.)

What "paused" still has: the plugin's idle threads and export processes, and one attribute test per
hooked call. What it measures: hooks, recording, the export thread's and export process's work, i.e.
the per-step cost the issue is about. The separate-run A/B (overhead_models.sh) covers the rest. Until
the thirty-first session's change (``Pipeline.set_running``) a paused process's export thread still woke every
interval, and a wake has a fixed cost with nothing to send (``results/cpu/export_interval``): runs before it
(``results/h200/t2``, ``t2b`` and earlier) read that part in both states, so their estimates leave it out.
``--exporters none``: the plugin with no exporter configured (no OTLP endpoint, span files or metrics
endpoint): hooks, recording and the export thread, without the export processes' work; beside a run with
every exporter on, it splits the cost between vLLM's processes and the export side's load on the host.

Workloads (vLLM's bench semantics, ``ignore_eos``, prefix caching off): ``lat1`` / ``lat32`` batch 1 / 32,
512 in, 128 out, LAT_ITERS iterations (mean s); ``thr`` random 256 in / 256 out x THR_PROMPTS (total tok/s);
``flip1`` / ``flip256``: one long decode of batch 1 / 256 per generate with the plugin switched every few steps
while it runs (``flip_steps.py``: a real flip and an A/A one in turn, ``--flip-gens`` generates), run after the
blocks of the others and summarized from the steps alone.
``--flip-scope engine`` / ``front`` switches one side only (the other stays on), to tell the EngineCore's share of
the cost from the front end's; ``all,front,engine`` rotates the three through one run's generates (pair by pair;
``--flip-gens 12`` gives each scope both starting states), so that the shares and the whole are read on one host
in one engine, and whether they add up (``flip1@gap``: ``flip_steps.scope_gap``).
Writes DIR/toggle_<model>.json (rewritten after every block, so a call cut short keeps what finished),
DIR/toggle_<model>.log.gz, DIR/toggle_<model>.prom.gz (the scrapes) and DIR/toggle_<model>.final.prom.gz (each
process's last metric snapshot, as one scrape: ``overhead_run.pack_final_snapshots``). Models: overhead_run.MODELS.
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))

import flip_steps  # same folder: the switched-in-flight A/B (workloads of kind "flip")
import overhead_run as orun  # same folder: models, plumbing, scrape parsing

WORKLOADS = {
    "lat1": {"kind": "latency", "batch": 1, "in": 512, "out": 128},
    "lat32": {"kind": "latency", "batch": 32, "in": 512, "out": 128},
    "thr": {"kind": "throughput", "in": 256, "out": 256},
    # flip_steps.py: the plugin switched every ``every`` steps inside one long decode, FLIP_GENS generates
    # alternating a real flip and an A/A one (FLIP_OUT overrides ``out``, FLIP_EVERY ``every``). flip256's blocks
    # were 48 steps (~0.3 s) until the thirty-third session: the runs of results/h200/t2 and t2b, re-cut into blocks
    # of 24 (``flip_power.py``, results/h200/flip_power), spread about half as much between runs
    "flip1": {"kind": "flip", "batch": 1, "in": 512, "out": 3000, "every": 64},
    "flip256": {"kind": "flip", "batch": 256, "in": 256, "out": 1536, "every": 24},
}


# ---- inside the engine process ----------------------------------------------------------------------
def inner(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    import numpy as np
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from vllm_w2ext.hooks import control

    out = Path(spec["out"])
    llm = LLM(**spec["engine"])
    rng = np.random.default_rng(0)
    lat_iters, thr_n = spec["lat_iters"], spec["thr_prompts"]

    def prompts(n, length):
        return [TokensPrompt(prompt_token_ids=rng.integers(10, 10000, size=length).tolist()) for _ in range(n)]

    scopes = spec.get("flip_scope", "all").split(",")
    scope = [scopes[0]]                        # the current generate's (flips rotate through ``scopes``)

    def set_state(on: bool) -> dict:
        return control.set_everywhere(llm, on, front=scope[0] != "engine", engine=scope[0] != "front")

    flipper = flip_steps.Flipper(llm.llm_engine, set_state)

    def flip(key: str, real: bool, on: bool, which: str) -> dict:
        """One long generate of a flip workload, the plugin switched every ``every`` steps (A/A: the same
        calls, all to "on"), starting in ``on``, the processes of scope ``which`` switched."""
        scope[0] = which
        w = {**WORKLOADS[key], **spec.get("flip", {})}
        sp = SamplingParams(n=1, temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=w["out"], detokenize=False)
        ps = prompts(w["batch"], w["in"])
        set_state(on if real else True)
        t0 = flipper.begin(w["every"], real, on)
        llm.generate(ps, sp, use_tqdm=False)
        gen = flipper.end(t0)
        set_state(True)
        return dict(gen, workload=key, real=real, start_on=on, every=w["every"], batch=w["batch"], out=w["out"],
                    scope=which, t=time.time())

    def measure(key: str) -> dict:
        w = WORKLOADS[key]
        sp = SamplingParams(n=1, temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=w["out"], detokenize=False)
        if w["kind"] == "flip":                # warm-up only: a short generate of its shape, no switch
            llm.generate(prompts(w["batch"], w["in"]), SamplingParams(max_tokens=32, ignore_eos=True), use_tqdm=False)
            return {"value": 0.0, "unit": "-"}
        if w["kind"] == "latency":
            ps = prompts(w["batch"], w["in"])
            times, steps, starts = [], [], []
            for _ in range(lat_iters):
                starts.append(time.time())
                t0 = flipper.begin(0, True, True)          # timed, never switched
                llm.generate(ps, sp, use_tqdm=False)
                times.append((time.perf_counter_ns() - t0) / 1e9)
                steps.append(flipper.end(t0)["steps_us"])
            return {"value": statistics.fmean(times), "unit": "s", "iters": times, "steps_us": steps, "starts": starts}
        ps = prompts(thr_n, w["in"])
        t0 = time.perf_counter()
        outs = llm.generate(ps, sp, use_tqdm=False)
        dt = time.perf_counter() - t0
        toks = sum(len(o.prompt_token_ids) + len(o.outputs[0].token_ids) for o in outs)
        return {"value": toks / dt, "unit": "tok/s", "elapsed_s": dt, "tokens": toks}

    doc = {"spec": {k: v for k, v in spec.items() if k != "out"}, "switches": [], "measures": [], "warmup": [],
           "flips": []}

    def save():
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, out)

    toggle = spec["arm"] == "toggle"
    arm_on = spec["arm"] == "plugin"
    for on in ((True, False) if toggle else (arm_on,)):   # warm-up: each workload once per state, discarded
        if toggle:
            doc["switches"].append({"block": -1, "on": on, "counts": set_state(on), "t": time.time()})
        for key in spec["workloads"]:
            doc["warmup"].append(dict(measure(key), workload=key, on=on))
    save()
    if spec.get("start_at"):                   # runs side by side (concurrent_ab.sh): measure from the same moment
        time.sleep(max(0.0, spec["start_at"] - time.time()))
    blocked = [k for k in spec["workloads"] if WORKLOADS[k]["kind"] != "flip"]
    flipped = [k for k in spec["workloads"] if WORKLOADS[k]["kind"] == "flip"] if toggle else []
    for b in range(spec["blocks"] if blocked else 0):
        for on in (((True, False) if b % 2 == 0 else (False, True)) if toggle else (arm_on,)):
            if toggle:
                doc["switches"].append({"block": b, "on": on, "counts": set_state(on), "t": time.time()})
            for key in blocked:
                doc["measures"].append(dict(measure(key), workload=key, on=on, block=b, t=time.time()))
        save()
        if time.time() > spec["deadline"]:
            doc["stopped_after_block"] = b
            break
    if flipped:                                # the switch chain: between here and "end" the flips ran hooks
        scope[0] = "all"                       # the chain's own switches list every process
        doc["switches"].append({"block": "flips", "on": True, "counts": set_state(True), "t": time.time()})
    for key in flipped:                        # real, A/A, real, ...; the starting state alternates by pair,
        for g in range(spec.get("flip_gens", 4)):      # and the scope by pair where there are several
            if time.time() > spec["deadline"]:
                doc["flips_stopped"] = f"{key} after {g} generates"
                break
            doc["flips"].append(flip(key, real=g % 2 == 0, on=(g // 2) % 2 == 0, which=scopes[(g // 2) % len(scopes)]))
            save()
    if toggle:
        scope[0] = "all"
        doc["switches"].append({"block": "end", "on": True, "counts": set_state(True), "t": time.time()})
    doc["done"] = True
    save()
    print(f"[toggle_ab] {len(doc['measures'])} measures written", flush=True)
    return 0


# ---- the summary (pure; the collect step and the tests use it) --------------------------------------
def summarize(doc: dict) -> dict:
    """Per workload: paired blocks (on vs off in the same block), cost per block in %, the median, the
    spread of the paused blocks, and whether the switches did what they claim (paused blocks ran no hook,
    resumed ones did, in every process)."""
    out = {}
    ms = doc.get("measures", [])
    for key in dict.fromkeys(m["workload"] for m in ms):
        wms = [m for m in ms if m["workload"] == key]
        by_block: dict = {}
        for m in wms:
            by_block.setdefault(m["block"], {})[m["on"]] = m["value"]
        pairs = [(b, v[True], v[False]) for b, v in sorted(by_block.items()) if True in v and False in v]
        if not pairs:
            continue
        unit = wms[0]["unit"]
        # positive = the hooks make it slower
        cost = [((on - off) / off if unit == "s" else (off - on) / off) * 100 for _, on, off in pairs]
        offs = [off for _, _, off in pairs]
        out[key] = {"unit": unit, "pairs": len(pairs), "on": [p[1] for p in pairs], "off": offs,
                    "cost_pct": cost, "median_cost_pct": statistics.median(cost),
                    "mean_cost_pct": statistics.fmean(cost),
                    "off_spread_pct": (max(offs) - min(offs)) / statistics.median(offs) * 100,
                    **quantile_cost(wms), **step_cost(wms)}
    groups = flip_steps.scope_groups(doc.get("flips", []))
    for key, gens in groups.items():
        out[key] = flip_steps.summarize(gens)
        out[key]["engine_clock"] = flip_steps.summarize(gens, clock="engine")
        out[key]["switches_checked"] = check_flip_switches(gens)
    out.update(flip_steps.scope_gaps(groups))
    out["switches_checked"] = check_switches(doc.get("switches", []))
    return out


def check_flip_switches(gens: list[dict]) -> dict:
    """``check_switches`` over each real flip's switches (its generate started in ``start_on``); an A/A
    flip's switches all resume, so every interval must show hooks running."""
    n, bad = 0, []
    for g in gens:
        sw = [{"block": i, "on": s["on"] if g["real"] else True, "counts": s["counts"]}
              for i, s in enumerate(g["switches"])]
        c = check_switches(sw)
        n += c["intervals"]
        bad += c["bad"]
    return {"intervals": n, "ok": not bad, "bad": bad[:10]}


QUANTILE = 0.25          # of per-iteration times (latency) or per-measure times per token (throughput)
BOOTSTRAP = 2000


def interval_90(boot: list[float]) -> list[float]:
    """The 90 % interval of a sorted list of bootstrap estimates: its 5th and 95th percentiles."""
    return [boot[int(0.05 * (len(boot) - 1))], boot[int(0.95 * (len(boot) - 1))]]


def _times(m: dict) -> list[float]:
    """A measure as times: its latency iterations, or seconds per token of a throughput run."""
    return list(m["iters"]) if m.get("iters") else [1.0 / m["value"]] if m["unit"] == "tok/s" else [m["value"]]


def _quantile(v: list[float], q: float) -> float:
    return statistics.quantiles(v, n=100, method="inclusive")[round(q * 100) - 1] if len(v) > 1 else v[0]


def _decode_steps(m: dict) -> list[int]:
    """A latency measure's engine steps after the first of each iteration (admission + prefill): µs each."""
    return [t for it in m.get("steps_us") or () for t in it[1:]]


def quantile_cost(ms: list[dict], q: float = QUANTILE, seed: int = 0, times=_times, key: str = "quantile") -> dict:
    """The cost read from a low quantile of every timed unit, resumed against paused, with a 90 % interval
    from resampling whole blocks (the unit of interleaving). Why a low quantile: the H200 host's slow
    episodes (the vCPU runs ~1.5x slower for 0.1-1 s; benchmarks/results/h200/noise) only ever add time,
    and one such episode in a block of 5 iterations moves that block's mean by 10-40 %; the fast quarter
    of the iterations is what both states run at when the host leaves them alone."""
    blocks = sorted({m["block"] for m in ms if isinstance(m["block"], int)})
    by = {b: ([t for m in ms if m["block"] == b and m["on"] for t in times(m)],
              [t for m in ms if m["block"] == b and not m["on"] for t in times(m)]) for b in blocks}
    blocks = [b for b in blocks if by[b][0] and by[b][1]]
    if not blocks:
        return {}

    def cost(bs):
        on = [t for b in bs for t in by[b][0]]
        off = [t for b in bs for t in by[b][1]]
        return (_quantile(on, q) / _quantile(off, q) - 1) * 100

    rng = random.Random(seed)
    boot = sorted(cost([rng.choice(blocks) for _ in blocks]) for _ in range(BOOTSTRAP))
    return {key: q, ("units" if key == "quantile" else f"{key}_units"): sum(len(by[b][0]) + len(by[b][1]) for b in blocks),
            f"{key}_cost_pct": cost(blocks),
            f"{key}_cost_90pct": interval_90(boot)}


def step_levels(ms: list[dict]) -> dict:
    """The decode steps' lower quartile and median (µs) over the given measures; {} without step times."""
    steps = [t for m in ms for t in _decode_steps(m)]
    if len(steps) < 2:
        return {}
    return {"decode_steps": len(steps), "step_p25_us": _quantile(steps, 0.25), "step_p50_us": _quantile(steps, 0.5)}


def run_levels(doc: dict) -> dict:
    """A stock or plugin run (no toggle): per workload, its decode steps' levels (``step_levels``)."""
    ms = doc.get("measures", [])
    return {key: step_levels([m for m in ms if m["workload"] == key]) for key in dict.fromkeys(m["workload"] for m in ms)}


def step_cost(ms: list[dict], seed: int = 0) -> dict:
    """The cost read from the engine's decode steps themselves (``flip_steps.Flipper``, not flipping): their lower quartile
    and median, resumed against paused, each with a 90 % interval from resampling whole blocks. A step at
    batch 1 lasts a few ms, the host's slow episodes 0.1-1 s: they slow runs of consecutive steps, which
    land above the fast steps' quartile and median as long as they cover less than a quarter (half) of the
    time, so thousands of steps per state read the fast steps' own time closely. Empty when the measures
    carry no step times (throughput, or records from before they were taken)."""
    if not any(_decode_steps(m) for m in ms):
        return {}
    return {**quantile_cost(ms, 0.25, seed, _decode_steps, "step_p25"),
            **quantile_cost(ms, 0.5, seed, _decode_steps, "step_p50"),
            "steps_on": step_levels([m for m in ms if m["on"]]), "steps_off": step_levels([m for m in ms if not m["on"]])}


def _first_per_pid(counts: dict) -> list:
    """Each process once, with the count it gave when it was switched. At TP=1 on the GPU the worker runs
    inside the EngineCore, so that pid answers twice: first to the EngineCore's utility call (the moment
    the process switched), then to collective_rpc, by which time a resumed process has already run hooks."""
    seen, out = set(), []
    for p in [*([counts["front"]] if "front" in counts else []), *counts["engine"]]:
        if p["pid"] not in seen:
            seen.add(p["pid"])
            out.append(p)
    return out


PAUSED_WAKES = 2     # export-thread wakes a paused interval may hold: the pause's own flush, a timer wake racing it


def check_switches(switches: list) -> dict:
    """Between one switch and the next, each process's hook calls must stay put if paused and grow if on, and
    its export thread must not wake more than ``PAUSED_WAKES`` times while paused (answers that carry
    ``export_wakes``: plugin code from 7e1d092 on, whose paused export thread sleeps)."""
    bad, n = [], 0
    for a, b in itertools.pairwise(switches):
        later = {p["pid"]: p for p in _first_per_pid(b["counts"])}
        for pa in _first_per_pid(a["counts"]):         # each process against itself (a scope lists fewer)
            pb = later.get(pa["pid"])
            if pb is None:
                continue
            n += 1
            grew = pb["calls"] > pa["calls"]
            wakes = [pa.get("export_wakes"), pb.get("export_wakes")]
            woke = None if None in wakes else wakes[1] - wakes[0]
            if grew != a["on"] or (not a["on"] and woke is not None and woke > PAUSED_WAKES):
                bad.append({"from_block": a["block"], "on": a["on"], "pid": pa["pid"],
                            "calls": [pa["calls"], pb["calls"]], "export_wakes": wakes})
    return {"intervals": n, "ok": not bad, "bad": bad}


def flip_scopes(text: str) -> str:
    """``--flip-scope``: one of ``flip_steps.SCOPES``, or several comma-separated (no repeats) that the flip
    generates rotate through pair by pair (a real flip and its A/A one per scope in turn)."""
    parts = text.split(",")
    bad = [x for x in parts if x not in flip_steps.SCOPES]
    if bad or len(set(parts)) != len(parts):
        raise argparse.ArgumentTypeError(
            f"--flip-scope {text!r}: want one or more of {', '.join(flip_steps.SCOPES)}, comma-separated, no repeats")
    return text


# ---- outside: plugin environment, receiver, scraper ---------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inner", help=argparse.SUPPRESS)
    ap.add_argument("--model", choices=sorted(orun.MODELS))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--arm", choices=("toggle", "stock", "plugin"), default="toggle")
    ap.add_argument("--pair", type=int, default=0, help="pair number of a stock/plugin run (names the files)")
    ap.add_argument("--tp", type=int, default=1, help="tensor_parallel_size")
    ap.add_argument("--keep-traces", action="store_true", help="the plugin's trace files as DIR/<run>.traces.tar.xz")
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--sample", type=int, default=1, help="VLLM_W2EXT_SAMPLE of the plugin (1: every step)")
    ap.add_argument("--cost-budget", type=float, default=0.0,
                    help="VLLM_W2EXT_COST_BUDGET of the plugin (percent; 0: off, every step recorded)")
    ap.add_argument("--workloads", default="lat1,thr")
    ap.add_argument("--exporters", choices=("all", "none"), default="all",
                    help="plugin arms: every exporter on (default), or none (hooks, recording and the export "
                         "thread only: no OTLP, span files or metrics endpoint, so no export process)")
    ap.add_argument("--flip-gens", type=int, default=int(os.environ.get("FLIP_GENS", "4")),
                    help="generates per flip workload, alternating a real flip and an A/A one")
    ap.add_argument("--flip-every", type=int, default=int(os.environ.get("FLIP_EVERY", "0")),
                    help="steps per block of the flip workloads (0: each workload's own)")
    ap.add_argument("--flip-out", type=int, default=int(os.environ.get("FLIP_OUT", "0")),
                    help="output tokens of a flip workload's generate (0: its own)")
    ap.add_argument("--flip-scope", type=flip_scopes, default="all",
                    help="which processes the flips switch: all (default), the engine's alone (EngineCore and "
                         "workers; the front end stays on) or the front end alone (the engine's stay on); several, "
                         "comma-separated (all,front,engine): rotated pair by pair through one run's generates")
    ap.add_argument("--export-interval-ms", type=lambda v: v if v == "auto" else int(v), default=0,
                    help="VLLM_W2EXT_EXPORT_INTERVAL_MS of the plugin (0: its default, auto since the fifty-fourth "
                         "session; 200 ms before); flip workloads read the blocks' steps from the engine's records")
    ap.add_argument("--tag", default="", help="appended to the file names (runs of one model in one folder)")
    ap.add_argument("--lat-iters", type=int, default=int(os.environ.get("LAT_ITERS", "5")))
    ap.add_argument("--thr-prompts", type=int, default=int(os.environ.get("THR_PROMPTS", "500")))
    ap.add_argument("--timeout", type=float, default=400.0, help="seconds for the engine process")
    ap.add_argument("--start-at", type=float, default=0.0,
                    help="epoch seconds: after the warm-up, wait until then to measure (runs side by side)")
    ap.add_argument("--models-dir", type=Path, default=Path(os.environ.get("OVERHEAD_MODELS_DIR", "/tmp/w2ext-models")))
    ap.add_argument("--engine-json", default="{}", help="extra LLM kwargs (JSON), e.g. the CPU smoke check's")
    a = ap.parse_args(argv)
    if a.inner:
        return inner(a.inner)
    if not a.model or not a.out:
        ap.error("--model and --out are required")
    for key in a.workloads.split(","):
        if key not in WORKLOADS:
            ap.error(f"--workloads: unknown {key!r} (known: {', '.join(WORKLOADS)})")
    d = a.out.resolve()
    d.mkdir(parents=True, exist_ok=True)
    tp = f"_tp{a.tp}" if a.tp > 1 else ""
    tp += f"_s{a.sample}" if a.sample > 1 else ""
    tp += f"_b{a.cost_budget:g}" if a.cost_budget > 0 else ""
    tp += "" if a.flip_scope == "all" else f"_{a.flip_scope}only" if "," not in a.flip_scope else \
        "_scopes_" + a.flip_scope.replace(",", "_")
    tp += "_noexp" if a.exporters == "none" else ""
    tp += f"_{a.tag}" if a.tag else ""
    name = f"toggle_{a.model}{tp}" if a.arm == "toggle" else f"{a.model}{tp}_p{a.pair}_{a.arm}"
    folder, layers = orun.model_folder(a.model, a.models_dir.resolve())
    kw = orun.engine_kwargs(a.model, folder, None)
    if a.tp > 1:
        kw["tensor_parallel_size"] = a.tp
    kw.update(json.loads(a.engine_json))
    trace_dir = Path("/tmp/w2ext-toggle-traces") / name
    shutil.rmtree(trace_dir, ignore_errors=True)
    trace_dir.mkdir(parents=True)
    t_start = time.time()
    spec = {"arm": a.arm, "engine": kw, "workloads": a.workloads.split(","), "blocks": a.blocks, "lat_iters": a.lat_iters,
            "thr_prompts": a.thr_prompts, "flip_gens": a.flip_gens,
            "flip": {k: v for k, v in (("every", a.flip_every), ("out", a.flip_out)) if v},
            "sample": a.sample, "cost_budget": a.cost_budget, "flip_scope": a.flip_scope, "export_interval_ms": a.export_interval_ms, "start_at": a.start_at, "exporters": a.exporters, "deadline": t_start + a.timeout - 60, "out": str(d / f"{name}.json")}
    spec_path = d / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_W2EXT", "OTEL_"))}
    env.update({"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
    if orun.MODELS[a.model].get("cpu"):
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    scrape_path = d / f"{name}.prom"
    metrics_dir = d / f"{name}.metrics"         # each process's last snapshot, kept: DIR/<name>.final.prom.gz
    rx = scr = None
    if a.arm != "stock":
        env["VLLM_W2EXT"] = "1"
        if a.sample > 1:
            env["VLLM_W2EXT_SAMPLE"] = str(a.sample)
        if a.cost_budget > 0:
            env["VLLM_W2EXT_COST_BUDGET"] = f"{a.cost_budget:g}"
        if a.export_interval_ms:
            env["VLLM_W2EXT_EXPORT_INTERVAL_MS"] = str(a.export_interval_ms)
    if a.arm != "stock" and a.exporters == "all":
        from vllm_w2ext.receiver import OTLPReceiver
        rx = OTLPReceiver().start()
        port = orun.free_port()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env.update({"VLLM_W2EXT_METRICS_PORT": str(port), "VLLM_W2EXT_METRICS_DIR": str(metrics_dir),
                    "VLLM_W2EXT_TRACE_DIR": str(trace_dir), "OTEL_SERVICE_NAME": f"w2ext-{name}", **rx.env("grpc"),
                    **rx.metrics_env("grpc", interval_ms=5000)})
        scr = subprocess.Popen([sys.executable, "-m", "vllm_w2ext.lab.scrape", f"http://127.0.0.1:{port}/metrics",
                                str(scrape_path), "--interval", "1"], cwd=ROOT)
    log = d / f"{name}.log"
    gpu_before = orun.gpu_state()
    try:
        rc, timed_out = orun.run_engine([sys.executable, str(Path(__file__).resolve()), "--inner", str(spec_path)],
                                        env, log, a.timeout)
    finally:
        spans = None
        if scr is not None:
            time.sleep(1.0)
            scr.send_signal(signal.SIGTERM)
            try:
                scr.wait(15)
            except subprocess.TimeoutExpired:
                scr.kill()
            spans = orun.count_spans(rx)
            points = rx.metrics()
            spans["otlp_metric_points"] = len(points)
            spans["otlp_metric_names"] = len({p["name"] for p in points})
            spans["otlp_exemplars"] = sum(len(p.get("exemplars") or ()) for p in points)
            rx.stop()
    named = [(str(d), "<out>"), (str(trace_dir), "<traces>"), (str(folder), f"<models>/{folder.name}"),
             (str(a.models_dir.resolve()), "<models>"), (os.environ.get("W2EXT_SITE", ""), "<site>")]
    text = orun.scrub(log.read_text(errors="replace"), named)
    with gzip.open(str(log) + ".gz", "wt", compresslevel=9) as f:
        f.write(text)
    log.unlink()
    if scrape_path.exists():
        with open(scrape_path, "rb") as fi, gzip.open(str(scrape_path) + ".gz", "wb", compresslevel=9) as fo:
            shutil.copyfileobj(fi, fo)
        scrape_path.unlink()
    orun.pack_final_snapshots(metrics_dir, d / f"{name}.final.prom.gz")
    rp = d / f"{name}.json"
    doc = json.loads(rp.read_text()) if rp.exists() else {}
    if a.keep_traces and a.arm != "stock":
        subprocess.run(["tar", "-C", str(trace_dir.parent), "-cJf", str(d / f"{name}.traces.tar.xz"), trace_dir.name],
                       check=False)
    doc.update(run=name, arm=a.arm, pair=a.pair, tp=a.tp, model=orun.MODELS[a.model]["model"], model_key=a.model,
               layers=layers, rc=rc, timed_out=timed_out,
               wall_s=round(time.time() - t_start, 1), spans=spans, gpu_before=gpu_before, gpu_after=orun.gpu_state(),
               hook_faults=[ln for ln in text.splitlines() if "is now disabled" in ln][:5],
               trace_bytes=sum(f.stat().st_size for f in trace_dir.rglob("*") if f.is_file()))
    doc["summary"] = summarize(doc) if a.arm == "toggle" else run_levels(doc)
    orun._atomic_json(rp, json.loads(orun.scrub(json.dumps(doc, default=str), named)))
    spec_path.write_text(orun.scrub(spec_path.read_text(), named))
    shutil.rmtree(trace_dir, ignore_errors=True)
    s = doc["summary"]
    for key, v in s.items():
        if "step_p25_cost_pct" in v:
            print(f"[toggle_ab] {a.model} {key}: decode steps p25 cost {v['step_p25_cost_pct']:+.2f} % "
                  f"[{v['step_p25_cost_90pct'][0]:+.2f}, {v['step_p25_cost_90pct'][1]:+.2f}], p50 cost "
                  f"{v['step_p50_cost_pct']:+.2f} % [{v['step_p50_cost_90pct'][0]:+.2f}, "
                  f"{v['step_p50_cost_90pct'][1]:+.2f}]; on {v['steps_on']}, off {v['steps_off']}")
        if a.arm != "toggle":
            print(f"[toggle_ab] {name} {key}: {v}")
        elif key.endswith("@gap"):
            for clock, g in v.items():
                if g:
                    print(f"[toggle_ab] {a.model} {key} ({clock} clock): all - front - engine {g['gap_pct']:+.2f} % "
                          f"[{g['gap_90pct'][0]:+.2f}, {g['gap_90pct'][1]:+.2f}]")
        elif "flip" in v or "aa" in v:
            for clock, kind, f in [("", k, v.get(k, {})) for k in ("flip", "aa")] + \
                    [(" engine clock", k, v.get("engine_clock", {}).get(k, {})) for k in ("flip", "aa")]:
                if "cost_pct" in f:
                    lag = f"; front lag {f['front_lag_us']}" if "front_lag_us" in f else ""
                    tail = f"; tails on - off {f['tail_us']['diff']:+.1f} µs per step" if "tail_us" in f else ""
                    print(f"[toggle_ab] {a.model} {key} {kind}{clock}: cost {f['cost_pct']:+.2f} % [{f['cost_90pct'][0]:+.2f}, "
                          f"{f['cost_90pct'][1]:+.2f}] over {f['windows']} windows of {f['generates']} generates ({f['trimmed']} trimmed); "
                          f"steps on/off {f.get('step_us_on')} / {f.get('step_us_off')} µs, switch {f['switch_ms']:.2f} ms{lag}{tail}")
            print(f"[toggle_ab] {a.model} {key}: switches ok {v['switches_checked']['ok']}")
        elif key != "switches_checked":
            print(f"[toggle_ab] {a.model} {key}: {v['pairs']} blocks, median cost {v['median_cost_pct']:+.2f} % "
                  f"(per block {', '.join(f'{c:+.2f}' for c in v['cost_pct'])}), paused spread {v['off_spread_pct']:.2f} %, "
                  f"p25 cost {v['quantile_cost_pct']:+.2f} % (90 %: {v['quantile_cost_90pct'][0]:+.2f} .. "
                  f"{v['quantile_cost_90pct'][1]:+.2f})")
    vals = {}
    for m in doc.get("measures", []):
        vals.setdefault(m["workload"], []).append(round(m["value"], 4))
    print(f"[toggle_ab] {name}: rc={rc} wall {doc['wall_s']} s, spans {spans and spans['total']}, switches ok "
          f"{s.get('switches_checked', {}).get('ok')}, hook faults {len(doc['hook_faults'])}, values {vals}", flush=True)
    if rc != 0:
        print("\n".join(text.splitlines()[-25:]), flush=True)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
