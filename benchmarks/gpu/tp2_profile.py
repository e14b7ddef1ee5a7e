"""The trace side of issue #15 (TP=2 on two H200s), from the device calls' raw output to the committed files.

    python3 benchmarks/gpu/tp2_profile.py merge <data>/w2ext-prof-merge --out benchmarks/results/h200x2/merge \\
        [--batch 8] [--first 60 --steps 4]
    python3 benchmarks/gpu/tp2_profile.py explain <data>/tp2/8b_tp2_p1_plugin.traces.tar.xz \\
        --metrics <data>/tp2/8b_tp2_p1_plugin.prom.gz --out benchmarks/results/h200x2/explain

``merge``: the capture of ``benchmarks/gpu/profile_merge.sh`` with ``TP=2`` (``bs<N>/torch/rank{0,1}.*.pt.trace.json.gz``,
one torch-profiler trace per rank, and ``bs<N>/spans/w2ext-<pid>.pftrace``, front end, EngineCore, both workers):
- ``vllm-w2ext merge`` of everything (not committed, a few MB): what it printed -> ``merge_full.txt``;
- the same decode steps cut out of each rank's trace (benchmarks/gpu/cut_excerpt.py, annotations ``first`` ..
  ``first+steps-1``) and merged with the span files, spans clipped to 1 ms around them ->
  ``merged_tp2_bs<N>_steps<a>-<b>.json.gz`` (both GPUs and both workers on one timeline) + ``merge_excerpt.txt``;
- ``vllm-w2ext analyze`` of both ranks' full traces -> ``analyze_tp2_bs<N>.{txt,json}`` (communication share per
  rank and phase, rank skew); the capture's log (gzip), gpu.csv and versions.txt.
``explain``: the plugin's trace files of a TP=2 run (the tarball ``toggle_ab.py --keep-traces`` writes) ->
``explain.{txt,json}`` (with the run's last metrics scrape), and ``worker_step_skew.json``: per engine step, how
far apart the two workers entered ``worker.execute_model`` / ``worker.model_runner.execute_model`` (the CPU side,
unprofiled run) and how their device busy times per step differ.

Every tool runs with relative paths inside a scratch folder, and every text written is scrubbed of absolute
paths (tp2_summary.scrub), so nothing committed names a folder of the machines involved.
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))

import cut_excerpt  # same folder
from tp2_summary import scrub  # same folder

from vllm_w2ext.analysis.readers.pftrace import read_span_file


def cli(args: list[str], cwd: Path) -> str:
    """``vllm-w2ext ARGS`` in ``cwd``; its output, scrubbed. Fails loudly."""
    p = subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", *args], cwd=cwd, capture_output=True, text=True,
                       check=False)
    if p.returncode:
        raise SystemExit(f"vllm-w2ext {' '.join(args)}: rc {p.returncode}\n{p.stdout}\n{p.stderr}")
    return scrub(p.stdout + p.stderr)


def _write_scrubbed(src: Path, dst: Path) -> None:
    if src.name.endswith(".gz"):
        with gzip.open(src, "rt", errors="replace") as f:
            dst.write_bytes(gzip.compress(scrub(f.read()).encode(), 9, mtime=0))
    else:
        dst.write_text(scrub(src.read_text(errors="replace")))


def merge_cmd(capture: Path, out: Path, batch: int, first: int, steps: int) -> None:
    bs = capture / f"bs{batch}"
    ranks = sorted((bs / "torch").glob("rank*.pt.trace.json.gz"))
    if len(ranks) < 2:
        raise SystemExit(f"{bs / 'torch'}: expected one rank*.pt.trace.json.gz per TP rank, found {len(ranks)}")
    out.mkdir(parents=True, exist_ok=True)
    last = first + steps - 1
    name = f"merged_tp2_bs{batch}_steps{first}-{last}.json.gz"
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for sub in ("spans", "torch", "excerpt"):
            (t / sub).mkdir()
        for f in sorted((bs / "spans").glob("w2ext-*.pftrace")):
            shutil.copy2(f, t / "spans" / f.name)
        for f in ranks:
            shutil.copy2(f, t / "torch" / f.name)
            rank = f.name.split(".")[0]                       # "rank0"
            ex = cut_excerpt.cut(cut_excerpt.load(str(f)), first, steps)
            ex["traceName"] = f"excerpt: step annotations {first}..{last} of {f.name}"
            data = json.dumps(ex, separators=(",", ":")).encode()
            (t / "excerpt" / f"{rank}.steps{first}-{last}.pt.trace.json.gz").write_bytes(gzip.compress(data, 9, mtime=0))
        full = cli(["merge", "--out", "merged_full.json.gz", "spans", "torch"], t)
        (out / "merge_full.txt").write_text("$ vllm-w2ext merge --out merged_full.json.gz spans torch\n" + full)
        cut = cli(["merge", "--clip-ms", "1", "--out", name, "spans", "excerpt"], t)
        (out / "merge_excerpt.txt").write_text(f"$ vllm-w2ext merge --clip-ms 1 --out {name} spans excerpt\n" + cut)
        shutil.copy2(t / name, out / name)
        torch = [f"torch/{f.name}" for f in ranks]
        for fmt in ("text", "json"):
            ext = "txt" if fmt == "text" else fmt
            cli(["analyze", *torch, "--format", fmt, "--out", f"analyze.{ext}"], t)
            _write_scrubbed(t / f"analyze.{ext}", out / f"analyze_tp2_bs{batch}.{ext}")
    for f in (f"profile_bs{batch}.log", "gpu.csv", "versions.txt"):
        if (capture / f).exists():
            if f.endswith(".log"):
                (out / f"{f}.gz").write_bytes(gzip.compress(scrub((capture / f).read_text(errors="replace")).encode(),
                                                            9, mtime=0))
            else:
                _write_scrubbed(capture / f, out / f)


def _q(xs: list[float]) -> dict:
    if not xs:
        return {"count": 0}
    s = sorted(xs)
    return {"count": len(s), "median_us": round(statistics.median(s), 3), "p90_us": round(s[int(0.9 * (len(s) - 1))], 3),
            "max_us": round(s[-1], 3)}


def worker_step_skew(folder: Path) -> dict:
    """Per engine step, the two workers' span starts apart (µs) and their device busy times apart."""
    workers = [sf for sf in (read_span_file(str(p)) for p in sorted(folder.glob("w2ext-*.pftrace")))
               if "worker" in sf.roles]
    if len(workers) != 2:
        return {"note": f"{len(workers)} worker span files: expected 2"}
    out: dict = {"workers": [sf.process_name for sf in workers], "spans": {}}
    tokens = {s.step: s.args.get("vllm.worker.num_tokens") for s in workers[0].slices
              if s.name == "worker.execute_model"}
    for name in ("worker.execute_model", "worker.model_runner.execute_model"):
        a, b = ({s.step: s for s in sf.slices if s.name == name} for sf in workers)
        common = sorted(set(a) & set(b))
        rows: dict = {"all": [], "1 token (batch-1 decode)": [], "32 tokens (batch-32 decode)": []}
        later = {"rank 0": 0, "rank 1": 0}
        busy_diff, idle = [], []
        for k in common:
            d = (b[k].start_ns - a[k].start_ns) / 1e3
            rows["all"].append(abs(d))
            if tokens.get(k) == 1:
                rows["1 token (batch-1 decode)"].append(abs(d))
            elif tokens.get(k) == 32:
                rows["32 tokens (batch-32 decode)"].append(abs(d))
            later["rank 1" if d > 0 else "rank 0"] += 1
            ba, bb = a[k].args.get("vllm.device.busy_s"), b[k].args.get("vllm.device.busy_s")
            if ba is not None and bb is not None:
                busy_diff.append(abs(bb - ba) * 1e6)
            if a[k].args.get("vllm.device.idle_s") is not None:
                idle.append(a[k].args["vllm.device.idle_s"] * 1e6)
        row = {"steps": len(common), "start_apart_us": {k: _q(v) for k, v in rows.items()}, "later_rank": later}
        if busy_diff:
            row["device_busy_apart_us"] = _q(busy_diff)
            row["rank0_device_idle_before_step_us"] = _q(idle)
        out["spans"][name] = row
    return out


def explain_cmd(tarball: Path, metrics: Path | None, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        with tarfile.open(tarball) as tf:
            members = [m for m in tf.getmembers() if m.isfile() and ".." not in Path(m.name).parts
                       and not m.name.startswith("/")]
            tf.extractall(t, members=members)
        folders = sorted({p.parent for p in t.rglob("w2ext-*.pftrace")})
        if len(folders) != 1:
            raise SystemExit(f"{tarball}: expected one folder of span files, found {len(folders)}")
        rel = str(folders[0].relative_to(t))
        extra = []
        if metrics is not None:
            shutil.copy2(metrics, t / metrics.name)
            extra = ["--metrics", metrics.name]
        for fmt in ("text", "json"):
            ext = "txt" if fmt == "text" else fmt
            cli(["explain", rel, *extra, "--format", fmt, "--out", f"explain.{ext}"], t)
            _write_scrubbed(t / f"explain.{ext}", out / f"explain.{ext}")
        (out / "worker_step_skew.json").write_text(json.dumps(worker_step_skew(folders[0]), indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge")
    m.add_argument("capture", type=Path, help="the w2ext-prof-merge folder of profile_merge.sh (TP=2)")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--batch", type=int, default=8)
    m.add_argument("--first", type=int, default=60)
    m.add_argument("--steps", type=int, default=4)
    e = sub.add_parser("explain")
    e.add_argument("tarball", type=Path, help="<run>.traces.tar.xz of toggle_ab.py --keep-traces")
    e.add_argument("--metrics", type=Path)
    e.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.cmd == "merge":
        merge_cmd(a.capture, a.out, a.batch, a.first, a.steps)
    else:
        explain_cmd(a.tarball, a.metrics, a.out)
    for f in sorted(a.out.iterdir()):
        print(f"{f.stat().st_size:>10}  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
