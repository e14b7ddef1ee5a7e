"""Cut a few consecutive steps out of a Kineto trace into a small, valid Kineto trace (test fixture).

    python benchmarks/gpu/cut_excerpt.py benchmarks/results/h100/profiles/decode_bs1_in512_out128.pt.trace.json.xz \\
        tests/fixtures/h100_decode_bs1_excerpt.pt.trace.json.xz --first 60 --steps 4

Keeps the top-level metadata (deviceProperties, distributedInfo, ...) and the "M" metadata events; the
vLLM step annotations ``execute_context_*`` number ``first`` .. ``first+steps-1`` (in start order) with
every CPU event that starts inside their span [start of the first, start of the one after the last);
the GPU activities (kernels, memcpy, memset) and ac2g flows whose ``correlation`` is one of the kept
launch calls; and the ``gpu_user_annotation`` projections of the kept steps. Written as .xz or .gz
by the output's suffix. Loads the whole source with json (a one-off tool for ~60 MB traces).
"""
from __future__ import annotations

import argparse
import gzip
import json
import lzma
import re
import sys

STEP = re.compile(r"^execute_context_\d+\(\d+\)_generation_\d+\(\d+\)$")
GPU = ("kernel", "gpu_memcpy", "gpu_memset")


def load(path: str) -> dict:
    opener = lzma.open if path.endswith(".xz") else gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def cut(trace: dict, first: int, steps: int) -> dict:
    ev = trace["traceEvents"]
    marks = sorted((e for e in ev if e.get("cat") == "user_annotation" and STEP.match(e.get("name", ""))),
                   key=lambda e: e["ts"])
    if first + steps > len(marks):
        raise SystemExit(f"--first {first} --steps {steps}: the trace has only {len(marks)} step annotations")
    t0 = marks[first]["ts"]
    t1 = marks[first + steps]["ts"] if first + steps < len(marks) else marks[-1]["ts"] + marks[-1]["dur"]
    names = [m["name"] for m in marks[first:first + steps]]
    cpu_pids = {m["pid"] for m in marks}
    keep, corrs = [], set()
    for e in ev:
        if e.get("ph") == "M":
            keep.append(e)
        elif e.get("pid") in cpu_pids and e.get("ph") == "X" and t0 <= e.get("ts", -1) < t1:
            keep.append(e)
            corr = (e.get("args") or {}).get("correlation")
            if corr is not None:
                corrs.add(corr)
    gpu_ts = []
    for e in ev:
        if e.get("cat") in GPU and (e.get("args") or {}).get("correlation") in corrs:
            keep.append(e)
            gpu_ts.append((e["ts"], e["ts"] + e.get("dur", 0)))
        elif e.get("cat") == "ac2g" and e.get("id") in corrs:
            keep.append(e)
    g0, g1 = min(a for a, _ in gpu_ts), max(b for _, b in gpu_ts)
    keep += [e for e in ev if e.get("cat") == "gpu_user_annotation" and e["name"] in names
             and g0 - 1 <= e["ts"] <= g1]
    out = {k: v for k, v in trace.items() if k != "traceEvents"}
    out["traceEvents"] = keep
    out["traceName"] = f"excerpt: step annotations {first}..{first + steps - 1} of {trace.get('traceName', 'trace')}"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst", help="output .json.xz or .json.gz")
    ap.add_argument("--first", type=int, default=60, help="index of the first step annotation kept (start order)")
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args(argv)
    out = cut(load(a.src), a.first, a.steps)
    data = json.dumps(out, separators=(",", ":")).encode()
    if a.dst.endswith(".xz"):
        blob = lzma.compress(data, preset=9)
    elif a.dst.endswith(".gz"):
        blob = gzip.compress(data, 9, mtime=0)
    else:
        raise SystemExit("dst must end in .xz or .gz")
    with open(a.dst, "wb") as f:
        f.write(blob)
    print(f"{a.dst}: {len(out['traceEvents'])} events, {len(data)} bytes JSON, {len(blob)} bytes compressed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
