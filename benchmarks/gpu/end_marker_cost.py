"""What the step's end marker costs vLLM's thread, by the ways it could be recorded (issue #19).

    python3 benchmarks/gpu/end_marker_cost.py --out DIR            # on the GPU machine; torch only, no vLLM

Why: inside a real vLLM 0.26 engine on the H200 host, the worker's ``sample_tokens`` post (the step's end
event, ``hooks/gpu_timing.py``) is the largest hook half fully traced at batch 1: 19.2 us per step
(``benchmarks/results/h200/device_timing``), where the same record costs 3.9 us in a plain loop. torch's
``Event.record`` releases the GIL around ``cudaEventRecord``: in a process with other Python threads (vLLM's IO
threads, the plugin's export thread) the caller may then wait to get it back. ctypes can make the same call
holding the GIL (``PyDLL``), on the very runtime or driver library torch loaded.

Each candidate runs in a process of its own (a crash is reported, not fatal: an earlier ctypes variant crashed on
this image, cause unknown), in vLLM's shape: each step replays a CUDA graph (a stand-in forward), launches ~30 small
eager kernels (stand-in sampling), then records the candidate's marker (timed: thread CPU and wall clock), and the
CPU stays at most two steps ahead of the GPU (it waits on the marker of two steps back, as async scheduling waits
on the sampled tokens). Two settings: ``quiet`` (no other thread) and ``py`` (a second thread runs Python in
bursts of 50 us every 150 us, as vLLM's IO threads and the export thread do). The ctypes candidates are checked:
the GPU time between consecutive markers (``cudaEventElapsedTime``) must match the torch candidate's.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

CANDIDATES = ("none", "torch_timing", "torch_notiming", "cudart_gil", "cudart_nogil", "driver_gil")
STEPS, WARM, AHEAD = 800, 50, 2


def _libs() -> dict:
    """The CUDA runtime and driver libraries this process has loaded (paths; the plugin's /proc/self/maps lookup)."""
    from event_cost import _gpu_timing            # (benchmarks/gpu on sys.path: this file's folder)
    return {name: [p] if (p := _gpu_timing.loaded_library(prefix)) else []
            for name, prefix in (("cudart", "libcudart.so"), ("cuda", "libcuda.so"))}


def run_one(candidate: str) -> dict:
    import ctypes

    import torch
    torch.cuda.init()
    dev = torch.device("cuda")
    s = torch.cuda.current_stream()
    x = torch.randn(1, 4096, device=dev, dtype=torch.bfloat16)
    ws = [torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16) * 0.01 for _ in range(8)]
    logits = torch.randn(1, 128256, device=dev)

    def forward(h):
        for w in ws:
            h = torch.nn.functional.silu(h @ w)
        return h

    side = torch.cuda.Stream()
    side.wait_stream(s)
    with torch.cuda.stream(side):
        for _ in range(3):
            forward(x)
    s.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = forward(x)

    def sample():
        p = torch.softmax(logits, dim=-1)
        for _ in range(6):
            p = p * 1.0001
            p = p / p.sum(dim=-1, keepdim=True)
            t = torch.argmax(p, dim=-1)
        return t + out.shape[0]

    libs = _libs()
    info: dict = {"candidate": candidate, "libs": libs}
    raw_stream = ctypes.c_void_p(s.cuda_stream)
    n = STEPS + WARM
    if candidate in ("torch_timing", "torch_notiming", "none"):
        evs = [torch.cuda.Event(enable_timing=candidate != "torch_notiming") for _ in range(n)]
        record = torch._C._CudaEventBase.record
        mark = (lambda i: None) if candidate == "none" else (lambda i: record(evs[i], s))
        waiter = [torch.cuda.Event() for _ in range(n)] if candidate == "none" else None
        wait = (lambda i: (waiter[i].synchronize())) if waiter else (lambda i: evs[i].synchronize())
        elapsed = (lambda i: evs[i - 1].elapsed_time(evs[i])) if candidate == "torch_timing" else None
    else:
        which = "cudart" if candidate.startswith("cudart") else "cuda"
        path = libs[which][0]
        info["lib"] = path
        dll = (ctypes.CDLL if candidate.endswith("nogil") else ctypes.PyDLL)(path)
        helper = ctypes.CDLL(path)
        handles = []
        if which == "cudart":
            create, rec = helper.cudaEventCreateWithFlags, dll.cudaEventRecord
            query, sync, el = helper.cudaEventQuery, helper.cudaEventSynchronize, helper.cudaEventElapsedTime
        else:
            create, rec = helper.cuEventCreate, dll.cuEventRecord
            query, sync, el = helper.cuEventQuery, helper.cuEventSynchronize, helper.cuEventElapsedTime
        create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint]
        rec.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        sync.argtypes = query.argtypes = [ctypes.c_void_p]
        el.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_void_p]
        for _ in range(n):
            h = ctypes.c_void_p()
            rc = create(ctypes.byref(h), 0)
            if rc != 0:
                raise RuntimeError(f"event create returned {rc}")
            handles.append(h)
        rcs = []

        def mark(i):
            rc = rec(handles[i], raw_stream)
            if rc:
                rcs.append(rc)

        def wait(i):
            sync(handles[i])

        def elapsed(i):
            f = ctypes.c_float()
            rc = el(ctypes.byref(f), handles[i - 1], handles[i])
            return f.value if rc == 0 else float("nan")
        info["record_errors"] = rcs

    cpu, wall = time.thread_time_ns, time.perf_counter_ns
    res = {}
    for setting in ("quiet", "py"):
        stop = threading.Event()
        th = None
        if setting == "py":
            from event_cost import python_bursts           # (benchmarks/gpu on sys.path: this file's folder)
            th = threading.Thread(target=python_bursts, args=(stop,), daemon=True)
            th.start()
        torch.cuda.synchronize()
        c_tot = w_tot = 0
        cs = []
        t0 = wall()
        for i in range(n):
            if i >= AHEAD:
                wait(i - AHEAD)
            graph.replay()
            sample()
            if candidate == "none":
                waiter[i].record(s)
            c0, w0 = cpu(), wall()
            mark(i)
            c1, w1 = cpu(), wall()
            if i >= WARM:
                c_tot += c1 - c0
                w_tot += w1 - w0
                cs.append(w1 - w0)
        torch.cuda.synchronize()
        t1 = wall()
        stop.set()
        if th is not None:
            th.join(2)
        cs.sort()
        row = {"cpu_us": round(c_tot / STEPS / 1e3, 3), "wall_us": round(w_tot / STEPS / 1e3, 3),
               "wall_p50_us": round(cs[len(cs) // 2] / 1e3, 3), "wall_p90_us": round(cs[int(len(cs) * .9)] / 1e3, 3),
               "wall_max_us": round(cs[-1] / 1e3, 3), "step_ms": round((t1 - t0) / n / 1e6, 4)}
        if elapsed is not None:
            gaps = sorted(elapsed(i) for i in range(WARM + 1, n))
            row["gpu_ms_between_markers_p50"] = round(gaps[len(gaps) // 2], 4)
        res[setting] = row
    info["settings"] = res
    return info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out")
    ap.add_argument("--one", choices=CANDIDATES, help="(internal) run one candidate, print its JSON")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(run_one(a.one)), flush=True)
        return 0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for r in range(a.rounds):
        order = CANDIDATES if r % 2 == 0 else tuple(reversed(CANDIDATES))
        for c in order:
            p = subprocess.run([sys.executable, __file__, "--one", c], capture_output=True, text=True, timeout=120)
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
            rec = json.loads(line[7:]) if line else {"candidate": c, "rc": p.returncode, "stderr": p.stderr[-2000:]}
            rec["round"] = r + 1
            runs.append(rec)
            print(c, r + 1, json.dumps(rec.get("settings") or {"rc": p.returncode, "err": p.stderr[-300:]}), flush=True)
            (out / "end_marker_cost.json").write_text(json.dumps(
                {"python": platform.python_version(), "steps": STEPS, "ahead": AHEAD, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
