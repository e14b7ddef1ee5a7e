"""What the worker's per-step CUDA event costs on vLLM's thread (issue #19): `GpuTimer.stop` timed call by call
after a small kernel launch (a stand-in step), with and without the export thread's `poll` running beside it
(every 200 ms, as the pipeline does) and with a thread copying each step's output to the host and waiting for it as
vLLM's async output does, and its parts alone: the current-stream lookup and the event record.
torch only (no vLLM, no plugin dependencies). Its twin, `cuda_event_cost.py`, times torch's raw event calls in
idle / busy / syncing / Python-thread settings; this one times the plugin's own `GpuTimer.stop` (the two belong
in one script: left for the next device session, since the committed results came from each as it stands). Prints one JSON object (µs per call: median, p90, mean).

    python3 benchmarks/gpu/timer_stop_cost.py > timer_stop_cost.json
"""
from __future__ import annotations

import json
import platform
import statistics
import threading
import time

import importlib.util
from pathlib import Path

import torch

# gpu_timing.py by its path: it imports nothing of the plugin, and the package's __init__ wants OpenTelemetry
_spec = importlib.util.spec_from_file_location(
    "gpu_timing", Path(__file__).resolve().parents[2] / "vllm_w2ext" / "hooks" / "gpu_timing.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
GpuTimer = _mod.GpuTimer

N = 4000


def stats(ns: list[int]) -> dict:
    us = sorted(x / 1e3 for x in ns)
    return {"median": round(statistics.median(us), 2), "p90": round(us[int(0.9 * len(us))], 2),
            "mean": round(statistics.fmean(us), 2), "calls": len(us)}


def syncing(x, stop: threading.Event, go: threading.Event) -> None:
    """A thread like vLLM's async output copy: once per step (``go``), a device-to-host copy on its own
    stream, then a wait for it in the driver (GIL released)."""
    s = torch.cuda.Stream()
    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    e = torch.cuda.Event()
    while not stop.is_set():
        if not go.wait(0.1):
            continue
        go.clear()
        with torch.cuda.stream(s):
            host.copy_(x, non_blocking=True)
            e.record(s)
        e.synchronize()


def timed_stops(timer: GpuTimer, x, poll: bool, copier: bool = False) -> list[int]:
    stop, go = threading.Event(), threading.Event()
    if copier:
        threading.Thread(target=syncing, args=(x, stop, go), daemon=True).start()

    def poller():
        while not stop.wait(0.2):
            timer.poll()
    th = threading.Thread(target=poller, daemon=True)
    if poll:
        th.start()
    out = []
    for i in range(N):
        x.mul_(1.0)                               # the step's last launch
        if copier:
            go.set()                              # its output copied to the host while the next step starts
        t0 = time.perf_counter_ns()
        timer.stop(i, time.time_ns())
        out.append(time.perf_counter_ns() - t0)
        if not poll and len(timer.pending) > 200:
            timer.poll()
        if i % 64 == 0:
            torch.cuda.synchronize()
        time.sleep(0.0002)                        # the rest of a CPU-bound step (no GIL held)
    stop.set()
    if poll:
        th.join()
    return out


def main() -> None:
    dev = torch.cuda.current_device()
    x = torch.ones(1024, device="cuda")
    timer = GpuTimer()
    timed_stops(timer, x, False)                  # warm-up: pool filled, stream cached
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "python": platform.python_version(),
           "stop_no_poller": stats(timed_stops(timer, x, False)),
           "stop_with_poller": stats(timed_stops(timer, x, True)),
           "stop_with_poller_and_copy_thread": stats(timed_stops(timer, x, True, copier=True))}
    cur = torch._C._cuda_getCurrentStream
    ns = []
    for _ in range(N):
        t0 = time.perf_counter_ns()
        cur(dev)
        ns.append(time.perf_counter_ns() - t0)
    res["current_stream_lookup"] = stats(ns)
    rec = torch._C._CudaEventBase.record
    s = torch.cuda.current_stream()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(64)]
    for kind, evs in (("record_timing_event", events),
                      ("record_plain_event", [torch.cuda.Event() for _ in range(64)])):
        ns = []
        for i in range(N):
            x.mul_(1.0)
            t0 = time.perf_counter_ns()
            rec(evs[i % 64], s)
            ns.append(time.perf_counter_ns() - t0)
            if i % 64 == 63:
                torch.cuda.synchronize()
        res[kind] = stats(ns)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
