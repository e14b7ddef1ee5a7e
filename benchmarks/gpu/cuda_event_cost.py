"""What a CUDA event costs the calling thread, by the ways the plugin could record and read one (issue #19).

    python3 benchmarks/gpu/cuda_event_cost.py --out DIR        # on the GPU machine; torch only, no vLLM

Why: inside a real vLLM 0.26 engine on the H200 (benchmarks/results/h200/hook_cost/), the worker hooks that
record and read the step's CUDA events cost 72-100 us (``worker.execute_model`` pre: resolve + record) and
44 us (``worker.sample_tokens`` post: one record) per step, 2/3 of the plugin's whole per-step cost, while a
CUDA event record is a sub-microsecond driver call. This times each candidate, per call, with the wall clock
and the thread's CPU clock, in four settings:

- ``idle``: nothing else on the GPU or in the process;
- ``busy``: the GPU runs a queue of matmuls launched ahead (as vLLM's forward under async scheduling);
- ``busy+sync``: and a second thread waits on the GPU in a loop (vLLM's output thread: ``Event.synchronize``);
- ``busy+py``: and a second thread runs Python in bursts (vLLM's IO threads), so a call that releases the GIL
  must wait to get it back.

Candidates: ``torch.cuda.Event.record()`` (the plugin's call: looks up the current stream, builds a Python
``Stream``, releases the GIL around ``cudaEventRecord``), ``record(stream)`` with the stream looked up
once, ``Event.query()``, ``Event.elapsed_time()``, ``torch.cuda.current_stream()`` (a first version also called
``cudaEventRecord`` through ctypes; on the H200 image that crashed the process, and it was taken out). The fifth
setting, ``steps``, has vLLM's shape: 2 ms of work between a step's two events, the CPU at most two steps ahead.
"""
from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from pathlib import Path

import torch

N = 2000


def python_bursts(stop: threading.Event) -> None:
    """A thread's loop of Python work in bursts (50 us busy, 100 us asleep) until ``stop``: vLLM's IO threads,
    the plugin's export thread, anything that wants the GIL back while a CUDA call has released it."""
    while not stop.is_set():
        t = time.perf_counter() + 50e-6
        while time.perf_counter() < t:
            pass
        time.sleep(100e-6)


def timeit(fn, n: int = N) -> dict:
    cpu, wall = time.thread_time_ns, time.perf_counter_ns
    c0, w0 = cpu(), wall()
    for _ in range(n):
        fn()
    c1, w1 = cpu(), wall()
    return {"wall_us": round((w1 - w0) / n / 1e3, 3), "cpu_us": round((c1 - c0) / n / 1e3, 3)}


def candidates() -> dict:
    Event = torch.cuda.Event
    s = torch.cuda.current_stream()
    pool = [Event(enable_timing=True) for _ in range(2 * N + 2)]
    for e in pool:                  # torch creates the CUDA event at its first record: do it before timing
        e.record(s)
    torch.cuda.synchronize()
    it = iter(pool)
    done = Event(enable_timing=True)
    done.record()
    done.synchronize()
    done2 = Event(enable_timing=True)
    done2.record()
    done2.synchronize()
    out = {
        "torch Event.record()": lambda: next(it).record(),
        "torch Event.record(stream looked up once)": lambda: next(it).record(s),
        "torch.cuda.current_stream()": torch.cuda.current_stream,
        "Event.query() (completed)": done.query,
        "Event.elapsed_time()": lambda: done.elapsed_time(done2),
    }
    # keep references alive
    out["_keep"] = (pool, done, done2)
    return out


def busy_gpu(ms: float = 100.0):
    """Queue matmuls for about ``ms`` of GPU time (launched ahead, as under async scheduling; a few hundred
    launches, well under the driver's queue depth, so no launch waits for room)."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    t = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t[0].record()
    a @ a
    t[1].record()
    t[1].synchronize()
    per = max(t[0].elapsed_time(t[1]), 0.05)
    for _ in range(int(ms / per)):
        a @ a
    return a


def steps_scenario(steps: int = 300, ahead: int = 2) -> dict:
    """vLLM's shape: each step launches about 2 ms of GPU work between a start and an end event, and the CPU
    runs at most ``ahead`` steps ahead of the GPU (it waits on step i-ahead's end event, as async scheduling
    waits on the sampled tokens). Only the record calls are timed."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    s = torch.cuda.current_stream()
    cpu, wall = time.thread_time_ns, time.perf_counter_ns
    out = {}
    for label, timing, pass_stream in (("timing events, record()", True, False),
                                       ("timing events, record(stream)", True, True),
                                       ("non-timing events, record(stream)", False, True)):
        evs = [(torch.cuda.Event(enable_timing=timing), torch.cuda.Event(enable_timing=timing)) for _ in range(steps)]
        for x, y in evs:
            x.record(s)
            y.record(s)
        torch.cuda.synchronize()
        c = w = 0
        for i, (x, y) in enumerate(evs):
            if i >= ahead:
                evs[i - ahead][1].synchronize()
            c0, w0 = cpu(), wall()
            x.record(s) if pass_stream else x.record()
            c += cpu() - c0
            w += wall() - w0
            for _ in range(10):
                a @ a
            c0, w0 = cpu(), wall()
            y.record(s) if pass_stream else y.record()
            c += cpu() - c0
            w += wall() - w0
        torch.cuda.synchronize()
        out[label] = {"wall_us": round(w / steps / 2 / 1e3, 3), "cpu_us": round(c / steps / 2 / 1e3, 3)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out")
    a = ap.parse_args()
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "python": platform.python_version(),
                 "calls_per_figure": N, "settings": {}}
    stop = threading.Event()

    def sync_loop():
        e = torch.cuda.Event()
        while not stop.is_set():
            e.record()
            e.synchronize()

    def py_loop():
        python_bursts(stop)

    for setting in ("idle", "busy", "busy+sync", "busy+py"):
        torch.cuda.synchronize()
        stop.clear()
        th = None
        if setting == "busy+sync":
            th = threading.Thread(target=sync_loop, daemon=True)
        elif setting == "busy+py":
            th = threading.Thread(target=py_loop, daemon=True)
        row = {}
        for name, fn in candidates().items():
            if name.startswith("_"):
                continue
            if setting != "idle":
                busy_gpu()
            if th is not None and not th.is_alive():
                th.start()
            row[name] = timeit(fn)
        stop.set()
        if th is not None:
            th.join(5)
        torch.cuda.synchronize()
        res["settings"][setting] = row
        print(setting, json.dumps(row), flush=True)
    res["settings"]["steps (2 ms of matmuls per step, 2 steps ahead)"] = st = steps_scenario()
    print("steps", json.dumps(st), flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "cuda_event_cost.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
