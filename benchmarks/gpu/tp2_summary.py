"""Summary of the TP=2 separate-run pairs (issue #15, ``benchmarks/gpu/h200x2_round.sh tp2|tp2b``), with the
TP=1 in-engine toggle of the same machine session next to it: ``summary.json``, ``tp1_vs_tp2.json`` and
``summary.md``.

    python3 benchmarks/gpu/tp2_summary.py RUN_JSON... --tp1 TOGGLE_JSON --env ENV_TXT --out DIR [--collect]

RUN_JSON: the ``<model>_tp2_p<N>_{stock,plugin}.json`` records of ``toggle_ab.py --arm stock|plugin --pair N
--tp 2`` (``measures``: lat1 / lat32 = mean seconds of one ``bench latency`` iteration at batch 1 / 32, 512 in,
128 out; thr = total tok/s of random 256/256 x 500 prompts). ``--tp1``: ``toggle_ab.py --model 8b`` at TP=1
(one engine, the plugin's hooks paused and resumed block by block): its paused and resumed values. The
``.log.gz`` next to each record is searched for vLLM's line that the FlashInfer sampler is off.

``summary.json``: a list of ``{"model", "layers", "tp", "workload", "unit", "pairs", "stock": [...],
"plugin": [...]}``, values in pair order. ``summary.md``: per workload and pair the two values, the order
and the time between the two runs, the cost ((plugin - stock) / stock for latency, (stock - plugin) / stock
for throughput: positive = the plugin is slower), the median cost and the spread of stock over its runs
((max - min) / median), then TP=1 vs TP=2. ``--collect`` copies the records, their specs and logs and the env
captures into DIR/runs, with the absolute paths of the machines scrubbed (``<data>``, ``<cache>``, ``<home>``).
Imports neither vLLM nor torch.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
from pathlib import Path

WORKLOADS = {"lat1": ("latency, batch 1, 512 in / 128 out", "s"),
             "lat32": ("latency, batch 32, 512 in / 128 out", "s"),
             "thr": ("throughput, random 256 in / 256 out x 500", "tok/s")}
SCRUB = ((re.compile(r"/root/\.cache\b"), "<cache>"), (re.compile(r"(?<![\w.])/(?:tmp|work)/"), "<data>/"),
         (re.compile(r"(?<![\w.])/(?:root|home/[\w.-]+)(?=/)"), "<home>"))
SAMPLER_OFF = "FlashInfer top-p/top-k sampling disabled via VLLM_USE_FLASHINFER_SAMPLER=0"


def scrub(text: str) -> str:
    """A log or record without the absolute paths of the machine that wrote it."""
    for rx, repl in SCRUB:
        text = rx.sub(repl, text)
    return text


def collect(files: list[Path], dest: Path) -> None:
    """Copy ``files`` (.json, .txt, .log.gz) into ``dest``, scrubbed; .gz stays gzip (mtime 0)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.name.endswith(".gz"):
            with gzip.open(f, "rt", errors="replace") as fh:
                (dest / f.name).write_bytes(gzip.compress(scrub(fh.read()).encode(), 9, mtime=0))
        else:
            (dest / f.name).write_text(scrub(f.read_text()))


def cost_pct(workload: str, stock: float, plugin: float) -> float:
    """What the plugin costs in % of stock (positive = slower), as benchmarks/gpu/overhead_summary.py."""
    return 100.0 * ((stock - plugin) / stock if workload == "thr" else (plugin - stock) / stock)


def spread_pct(xs: list[float]) -> float:
    return 100.0 * (max(xs) - min(xs)) / statistics.median(xs)


def _measure(rec: dict, workload: str) -> dict | None:
    return next((m for m in rec.get("measures", []) if m["workload"] == workload), None)


def _sampler_off(json_path: Path) -> bool | None:
    log = json_path.with_name(json_path.name.replace(".json", ".log.gz"))
    if not log.exists():
        return None
    with gzip.open(log, "rt", errors="replace") as f:
        return SAMPLER_OFF in f.read()


def pairs(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """(summary.json rows, per-pair detail rows) from the run records."""
    runs: dict = {}
    for p in paths:
        rec = json.loads(p.read_text())
        if not rec.get("done") or rec.get("rc") != 0:
            print(f"tp2_summary: {p.name}: not a finished run (done={rec.get('done')}, rc={rec.get('rc')}), left out",
                  file=sys.stderr)
            continue
        rec["_sampler_off"] = _sampler_off(p)
        runs[(rec["model"], rec["layers"], rec["tp"], rec["pair"], rec["arm"])] = rec
    keys = sorted({k[:4] for k in runs})
    summary: dict = {}
    detail = []
    for model, layers, tp, pair in keys:
        s, p = runs.get((model, layers, tp, pair, "stock")), runs.get((model, layers, tp, pair, "plugin"))
        if s is None or p is None:
            print(f"tp2_summary: pair {pair} of {model} TP={tp} has no {'stock' if s is None else 'plugin'} run, "
                  "left out", file=sys.stderr)
            continue
        for w in WORKLOADS:
            ms, mp = _measure(s, w), _measure(p, w)
            if ms is None or mp is None:
                continue
            row = summary.setdefault((model, layers, tp, w), {"model": model, "layers": layers, "tp": tp, "workload": w,
                                                              "unit": WORKLOADS[w][1], "pairs": [], "stock": [],
                                                              "plugin": []})
            row["pairs"].append(pair)
            row["stock"].append(ms["value"])
            row["plugin"].append(mp["value"])
            first = "stock" if ms["t"] < mp["t"] else "plugin"
            detail.append({"model": model, "tp": tp, "workload": w, "pair": pair, "first": first,
                           "between_s": round(abs(mp["t"] - ms["t"]), 1), "stock": ms["value"], "plugin": mp["value"],
                           "cost_pct": cost_pct(w, ms["value"], mp["value"]),
                           "stock_iters": ms.get("iters"), "plugin_iters": mp.get("iters"),
                           "sampler_off": (s["_sampler_off"], p["_sampler_off"])})
    return list(summary.values()), detail


def tp1_rows(path: Path) -> dict:
    """The TP=1 toggle's paused (hooks off) and resumed (hooks on) values per workload, in block order."""
    rec = json.loads(path.read_text())
    out: dict = {"run": rec.get("run"), "tp": rec.get("tp", 1), "lat_iters": rec["spec"].get("lat_iters"),
                 "blocks": rec.get("stopped_after_block"), "sampler_off": _sampler_off(path), "workloads": {}}
    for w in WORKLOADS:
        ms = [m for m in rec["measures"] if m["workload"] == w]
        out["workloads"][w] = {"paused": [m["value"] for m in ms if not m["on"]],
                               "resumed": [m["value"] for m in ms if m["on"]]}
    return out


def machine(env_txt: Path | None) -> list[str]:
    if env_txt is None or not env_txt.exists():
        return ["(no env capture)"]
    t = env_txt.read_text()
    gpus = re.findall(r"\|\s+\d+\s+(NVIDIA [^|]*?)\s{2,}", t)
    mem = re.findall(r"/\s*(\d+)MiB \|", t)
    drv = re.search(r"Driver Version:\s*([\d.]+)", t)
    ver = re.search(r"^vllm (\S+) torch (\S+)", t, re.MULTILINE)
    cpu = re.search(r"^Model name:\s*(.+)$", t, re.MULTILINE)
    ncpu = re.search(r"^CPU\(s\):\s*(\d+)", t, re.MULTILINE)
    hyp = re.search(r"^Hypervisor vendor:\s*(\S+)", t, re.MULTILINE)
    lines = [f"{len(gpus)} x {gpus[0] if gpus else '?'} ({mem[0] if mem else '?'} MiB each, driver "
             f"{drv.group(1) if drv else '?'}); CPU {cpu.group(1).strip() if cpu else '?'}, "
             f"{ncpu.group(1) if ncpu else '?'} cores" + (f" ({hyp.group(1)} VM)" if hyp else "")]
    if ver:
        lines.append(f"vLLM {ver.group(1)}, torch {ver.group(2)}")
    return lines


def _fmt(w: str, v: float) -> str:
    return f"{v:,.0f}" if w == "thr" else f"{v:.4f}"


def markdown(rows: list[dict], detail: list[dict], tp1: dict | None, env_lines: list[str]) -> str:
    sampler = {x for d in detail for x in d["sampler_off"]}
    L = ["# TP=2 on two H200s: stock vs plugin (separate-run pairs)", ""]
    L += [f"- Machine: {m}" for m in env_lines]
    L += ["- Sampler: FlashInfer's off (`VLLM_USE_FLASHINFER_SAMPLER=0`, shared/gpu/env.sh)"
          + ("; every run's log says so" if sampler == {True} else f"; logs checked: {sorted(map(str, sampler))}"),
          ("- Model: Llama-3.1-8B-shaped, dummy bf16 weights, max-model-len 4096, prefix caching off, CUDA graphs + "
           "torch.compile (vLLM's defaults), `--tensor-parallel-size 2`, one engine per run"),
          ("- Plugin: every exporter on (OTLP/gRPC to a loopback receiver, metrics endpoint scraped every 1 s, "
           "`VLLM_W2EXT_TRACE_DIR`, NVTX)"),
          ("- Cost: latency (plugin - stock) / stock, throughput (stock - plugin) / stock; positive = the plugin is "
           "slower. Stock spread: (max - min) / median of the stock runs."), ""]
    L += ["| workload | pair | first | between runs | stock | plugin | cost % |", "|---|---|---|---|---|---|---|"]
    for d in detail:
        L.append(f"| {d['workload']} | {d['pair']} | {d['first']} | {d['between_s']:.0f} s | {_fmt(d['workload'], d['stock'])} "
                 f"| {_fmt(d['workload'], d['plugin'])} | {d['cost_pct']:+.2f} |")
    L += ["", ("| workload | unit | pairs | stock (pair order) | plugin (pair order) | cost per pair % | median cost % "
               "| stock spread % | plugin spread % |"), "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w = r["workload"]
        costs = [cost_pct(w, a, b) for a, b in zip(r["stock"], r["plugin"])]
        L.append(f"| {w} ({WORKLOADS[w][0]}) | {r['unit']} | {len(costs)} | {' / '.join(_fmt(w, v) for v in r['stock'])} "
                 f"| {' / '.join(_fmt(w, v) for v in r['plugin'])} | {' / '.join(f'{c:+.2f}' for c in costs)} "
                 f"| {statistics.median(costs):+.2f} | {spread_pct(r['stock']):.2f} | {spread_pct(r['plugin']):.2f} |")
    if tp1:
        iters = sorted({len(d["stock_iters"] or ()) for d in detail if d["workload"] != "thr"})
        L += ["", (f"## TP=1 vs TP=2 (same machine session; TP=1 = `{tp1['run']}`, the in-engine toggle, not a stock "
                   "run)"), "",
              (f"TP=1: one engine on one H200, the plugin's hooks paused and resumed block by block "
               f"({tp1['blocks'] + 1 if tp1['blocks'] is not None else '?'} blocks, {tp1['lat_iters']} latency "
               f"iterations per value); TP=2: the runs above ({'/'.join(map(str, iters))} iterations per latency "
               "value). Medians."), "",
              "| workload | unit | TP=1 paused | TP=1 resumed | TP=2 stock | TP=2 plugin | TP=2 / TP=1 (stock / paused) |",
              "|---|---|---|---|---|---|---|"]
        for r in rows:
            w = r["workload"]
            t1 = tp1["workloads"].get(w)
            if not t1 or not t1["paused"]:
                continue
            p1, r1 = statistics.median(t1["paused"]), statistics.median(t1["resumed"])
            s2, g2 = statistics.median(r["stock"]), statistics.median(r["plugin"])
            ratio = s2 / p1
            what = f"{1 / ratio:.2f} x faster" if w != "thr" else f"{ratio:.2f} x the tok/s"
            L.append(f"| {w} | {r['unit']} | {_fmt(w, p1)} | {_fmt(w, r1)} | {_fmt(w, s2)} | {_fmt(w, g2)} | {what} |")
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path, help="<model>_tp2_p<N>_{stock,plugin}.json records")
    ap.add_argument("--tp1", type=Path, help="toggle_<model>.json of the TP=1 in-engine toggle (same session)")
    ap.add_argument("--env", type=Path, help="env.txt of the device call (nvidia-smi, versions, lscpu)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--collect", action="store_true", help="copy the records, specs, logs and env captures into OUT/runs")
    a = ap.parse_args(argv)
    rows, detail = pairs([p for p in a.runs if not p.name.endswith(".spec.json")])
    tp1 = tp1_rows(a.tp1) if a.tp1 else None
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    if tp1:
        (a.out / "tp1_vs_tp2.json").write_text(json.dumps({"tp1_toggle": tp1, "tp2_pairs": rows}, indent=1) + "\n")
    (a.out / "summary.md").write_text(markdown(rows, detail, tp1, machine(a.env)))
    if a.collect:
        extra = []
        for p in a.runs + ([a.tp1] if a.tp1 else []):
            extra += [p.with_name(p.name.replace(".json", x)) for x in (".spec.json", ".log.gz")]
        collect([p for p in a.runs + ([a.tp1] if a.tp1 else []) + extra if p.exists()], a.out / "runs")
    print((a.out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
