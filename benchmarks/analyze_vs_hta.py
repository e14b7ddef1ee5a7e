"""``vllm-w2ext analyze`` vs HTA's ``get_gpu_kernel_breakdown`` on the same large Kineto trace.

    .venv/bin/python benchmarks/analyze_vs_hta.py --sizes-mb 100 300 1000 --hta-limit-gb 12

1. Builds ``benchmarks/.cache/analyze_vs_hta/<N>mb/trace.pt.trace.json.gz`` (git-ignored): the committed
   real H100 trace (vLLM 0.26.0, decode batch 1) replicated back to back until the uncompressed JSON reaches
   N MB, each copy with timestamps shifted past the previous one and fresh correlation / External ids /
   flow ids; the metadata header (deviceProperties, distributedInfo.rank) and "M" events once.
2. Parser micro-benchmark on the uncompressed source trace: ijson (yajl2_c) streaming, msgspec and
   json whole-file decodes.
3. For each size: our analyzer (``python -m vllm_w2ext.analysis.kernels.command --format json``) and HTA
   (``TraceAnalysis(trace_dir).get_gpu_kernel_breakdown(visualize=False)``), each in its own process:
   wall and CPU (user + sys) time and peak RSS, by GNU time, with the 1-minute load average before
   (the machine is shared: CPU time is the fairer comparison when it is busy). HTA runs under ``prlimit --as`` when
   ``--hta-limit-gb`` is given (this 24 GiB machine is shared); a failure is recorded as such.
4. Agreement: our total kernel time vs HTA's per-kernel sums of COMPUTATION + COMMUNICATION kernels
   (HTA_DISABLE_NS_ROUNDING=1: by default HTA rounds every event to whole microseconds, ceil(start) and
   floor(end), which lowers its totals by several percent on these short kernels; its kernel-type table is
   a union of intervals, not a sum, so the per-kernel table is the one compared).
Writes benchmarks/results/cpu/analyze_vs_hta.json.
"""
from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "benchmarks/results/h100/profiles/decode_bs1_in512_out128.pt.trace.json.xz"
CACHE = ROOT / "benchmarks/.cache/analyze_vs_hta"
OUT = ROOT / "benchmarks/results/cpu/analyze_vs_hta.json"

HTA_SNIPPET = """
import json, sys
from hta.trace_analysis import TraceAnalysis
a = TraceAnalysis(trace_dir=sys.argv[1])
kt, kdf = a.get_gpu_kernel_breakdown(visualize=False)
print("HTA_RESULT " + json.dumps({
    "kernel_type_union_us": {r["kernel_type"]: float(r["sum"]) for _, r in kt.iterrows()},
    "kernel_sum_us": {k: float(v) for k, v in kdf.groupby("kernel_type")["sum (us)"].sum().items()}}))
"""


def build_trace(size_mb: int) -> Path:
    out = CACHE / f"{size_mb}mb" / "trace.pt.trace.json.gz"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(SRC, "rt") as f:
        src = json.load(f)
    events = src.pop("traceEvents")
    meta = [e for e in events if e.get("ph") == "M"]
    body = [e for e in events if e.get("ph") != "M" and e.get("cat") not in ("Trace",) and e.get("ph") != "i"]
    t0 = min(e["ts"] for e in body)
    period = max(e["ts"] + e.get("dur", 0) for e in body) - t0 + 1000.0
    ids = [e.get("id", 0) for e in body if isinstance(e.get("id"), int)]
    ids += [(e.get("args") or {}).get(k, 0) for e in body for k in ("correlation", "External id")]
    id_step = max(i for i in ids if isinstance(i, int)) + 1
    target, written, copy = size_mb * 1_000_000, 0, 0
    tmp = out.with_suffix(".tmp")
    with gzip.open(tmp, "wt", compresslevel=3) as f:
        head = json.dumps(src)[:-1]
        f.write(head + ', "traceEvents": [\n')
        first = True
        for e in meta:
            f.write(("" if first else ",\n") + json.dumps(e))
            first = False
        while written < target:
            shift_t, shift_id = copy * period, copy * id_step
            for e in body:
                e2 = dict(e, ts=e["ts"] + shift_t)
                if isinstance(e.get("id"), int):
                    e2["id"] = e["id"] + shift_id
                a = e.get("args")
                if a and ("correlation" in a or "External id" in a):
                    a2 = dict(a)
                    for k in ("correlation", "External id"):
                        if k in a2:
                            a2[k] = a2[k] + shift_id
                    e2["args"] = a2
                s = ",\n" + json.dumps(e2)
                written += len(s)
                f.write(s)
            copy += 1
        f.write("\n]}\n")
    tmp.rename(out)
    (out.parent / "copies.txt").write_text(f"{copy} copies, {written} bytes of events\n")
    return out


def run_child(cmd: list[str], env: dict | None = None) -> dict:
    """Run cmd under /usr/bin/time: wall time and the child's own peak RSS (GNU time's %M; measuring with
    wait4 from this process would count the fork of this parent, which holds the source trace)."""
    load = os.getloadavg()[0]
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "W2EXT_TIME %e %M %U %S"] + cmd, capture_output=True, text=True,
                       cwd=str(ROOT), env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t
    line = [ln.split() for ln in p.stderr.splitlines() if ln.startswith("W2EXT_TIME ")]
    rss = float(line[-1][2]) / 1024 if line else None
    cpu = float(line[-1][3]) + float(line[-1][4]) if line else None
    return {"rc": p.returncode, "wall_s": round(wall, 2), "cpu_s": cpu and round(cpu, 2),
            "peak_rss_mb": rss and round(rss, 1), "loadavg_1min_before": round(load, 2),
            "stdout": p.stdout, "stderr": p.stderr[-1500:]}


def parser_bench() -> dict:
    import ijson
    import msgspec
    raw = lzma.decompress(SRC.read_bytes())
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "source.json"
    path.write_bytes(raw)
    res = {"file_mb": round(len(raw) / 1e6, 1), "ijson_backend": ijson.backend}
    t = time.perf_counter()
    with open(path, "rb") as f:
        n = sum(1 for _ in ijson.items(f, "traceEvents.item", use_float=True))
    res["ijson_items_stream_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    msgspec.json.decode(path.read_bytes())
    res["msgspec_whole_file_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    json.loads(path.read_bytes())
    res["json_whole_file_s"] = round(time.perf_counter() - t, 3)
    from vllm_w2ext.analysis.readers.kineto_events import KinetoEventReader
    t = time.perf_counter()
    assert sum(1 for _ in KinetoEventReader(path)) == n
    res["ours_msgspec_blocks_stream_s"] = round(time.perf_counter() - t, 3)
    res["events"] = n
    path.unlink()
    return res


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next((ln.split()[1] for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), "0")
    import hta  # noqa: F401
    from importlib.metadata import version
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(int(mem) / 2**20, 1),
            "python": platform.python_version(), "ijson": version("ijson"), "msgspec": version("msgspec"),
            "holistictraceanalysis": version("holistictraceanalysis"), "pandas": version("pandas")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--hta-limit-gb", type=float, default=None, help="address-space limit for HTA (prlimit --as)")
    ap.add_argument("--skip-hta-above-mb", type=int, default=None, help="do not run HTA on larger traces")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    result = {"machine": machine(), "source": str(SRC.relative_to(ROOT)), "parser": parser_bench(), "runs": []}
    print(json.dumps(result["parser"]))
    for size in a.sizes_mb:
        trace = build_trace(size)
        run = {"target_mb": size, "gz_mb": round(trace.stat().st_size / 1e6, 1),
               "copies": (trace.parent / "copies.txt").read_text().strip()}
        ours = run_child([sys.executable, "-m", "vllm_w2ext.analysis.kernels.command", str(trace), "--format", "json"])
        r = json.loads(ours.pop("stdout")) if ours["rc"] == 0 else {}
        run["ours"] = {**ours, "kernel_time_us": r.get("kernel_time_us"), "events": r.get("trace", {}).get("events"),
                       "kernels": r.get("trace", {}).get("kernels")}
        if a.skip_hta_above_mb is not None and size > a.skip_hta_above_mb:
            run["hta"] = {"skipped": f"not run above {a.skip_hta_above_mb} MB"}
        else:
            cmd = [sys.executable, "-c", HTA_SNIPPET, str(trace.parent)]
            if a.hta_limit_gb:
                cmd = ["prlimit", f"--as={int(a.hta_limit_gb * 2**30)}", "--"] + cmd
                run["hta_limit_gb"] = a.hta_limit_gb
            hta = run_child(cmd, env={"HTA_DISABLE_NS_ROUNDING": "1"})   # keep float us: comparable sums
            line = next((ln for ln in hta.pop("stdout").splitlines() if ln.startswith("HTA_RESULT ")), None)
            hta["result"] = json.loads(line.split(" ", 1)[1]) if line else None
            if hta["rc"] == 0:
                hta.pop("stderr")
            run["hta"] = hta
            if hta["result"] and r:
                theirs = sum(v for k, v in hta["result"]["kernel_sum_us"].items()
                             if k in ("COMPUTATION", "COMMUNICATION"))
                run["hta_kernel_sum_us"] = theirs
                run["kernel_time_rel_diff"] = abs(theirs - r["kernel_time_us"]) / theirs
                run["speedup_wall"] = round(hta["wall_s"] / ours["wall_s"], 2)
                run["speedup_cpu"] = round(hta["cpu_s"] / ours["cpu_s"], 2)
        if ours["rc"] == 0:
            run["ours"].pop("stderr")
        result["runs"].append(run)
        print(json.dumps(run)[:600], flush=True)
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
