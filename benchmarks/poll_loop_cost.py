"""The device timer's poll per step, its loop in Python against its loop in C (``hooks/_event_times.c``), on the CPU.

    python benchmarks/poll_loop_cost.py [--out FILE] [--steps 100] [--polls 300] [--rounds 3]

``GpuTimer.poll`` on the export thread turns each pending step's end event into a sample. With the extension, one C
call times them all with the GIL released and places them (``runtime_resolve``); without it, one
``cudaEventElapsedTime`` per step through ctypes and a Python loop (``runtime_elapsed``). Here both call the same
stand-in runtime, a C library compiled at run time whose ``cudaEventElapsedTime`` returns at once: what is timed is
everything around the driver's call, which on the GPU holds vLLM's GIL (the driver's own time is not here: the GPU
machine's ``benchmarks/gpu/event_cost.py`` part ``poll`` measures the whole). Each poll resolves ``--steps`` pending
steps; µs per step, median over the polls, rounds alternating the two ways. Needs a C compiler (``cc``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vllm_w2ext.hooks import gpu_timing  # noqa: E402
from vllm_w2ext.lab.lab_env import cpu_model  # noqa: E402

STAND_IN = """
int cudaEventElapsedTime(float *ms, void *start, void *end)
{ *ms = (float)((long)end - (long)start) * 1e-3f; return 0; }
int cudaGetLastError(void) { return 0; }
"""


class Event:
    __slots__ = ("cuda_event",)

    def __init__(self, handle: int):
        self.cuda_event = handle


def stand_in_runtime(folder: str) -> str:
    src, lib = os.path.join(folder, "cudart.c"), os.path.join(folder, "libcudart_stand_in.so")
    Path(src).write_text(STAND_IN)
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-o", lib, src], check=True)
    return lib


def per_step_us(lib: str, way: str, steps: int, polls: int) -> float:
    resolve = gpu_timing.runtime_resolve(lib) if way == "c" else None
    if way == "c" and resolve is None:
        raise SystemExit("the C extension vllm_w2ext.hooks._event_times is not built (pip install -e .)")
    timer = gpu_timing.GpuTimer((None, None, None, None, None, 0, gpu_timing.runtime_elapsed(lib), lambda: None,
                                 resolve))
    timer._device_set = True
    timer.anchor = (Event(1), 10**15)               # never renewed (ANCHOR_EVERY_NS below)
    per = []
    for p in range(polls):
        anchor = (Event(1), 10**15)
        for i in range(steps):                      # a pending step: (end event, step, launch, anchor, fresh, own)
            timer.pending.append((Event(1000 + i * 2000), p * steps + i, 10**15 + i * 2_000_000, anchor, False, True))
        timer.pool.clear()
        t0 = time.perf_counter_ns()
        out = timer.poll()
        per.append((time.perf_counter_ns() - t0) / steps / 1e3)
        assert len(out) == steps
    return statistics.median(per)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results/cpu/event_times/poll_loop_cost.json")
    ap.add_argument("--steps", type=int, default=100, help="pending steps per poll (a 200 ms interval of 2 ms steps)")
    ap.add_argument("--polls", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    gpu_timing.ANCHOR_EVERY_NS = 10**30
    with tempfile.TemporaryDirectory() as d:
        lib = stand_in_runtime(d)
        rows = []
        for r in range(a.rounds):
            for way in ("python", "c"):
                us = per_step_us(lib, way, a.steps, a.polls)
                rows.append({"round": r + 1, "way": way, "us_per_step": round(us, 3)})
                print(f"round {r + 1} {way}: {us:.3f} µs per step", flush=True)
    doc = {"what": __doc__.split("\n\n")[0], "machine": {"cpu": cpu_model(),
                                                         "python": platform.python_version(), "cores": os.cpu_count()},
           "steps_per_poll": a.steps, "polls": a.polls, "rows": rows,
           "median_us_per_step": {w: statistics.median(x["us_per_step"] for x in rows if x["way"] == w)
                                  for w in ("python", "c")}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
