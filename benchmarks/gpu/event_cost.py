"""What the device timeline's CUDA events cost, call by call (issue #19). No vLLM (the plugin's ``gpu_timing.py`` is
loaded by its path; the ``poll`` part's C way imports the repository's package, with the plugin's dependencies).

    python3 benchmarks/gpu/event_cost.py --out DIR [--parts raw,timer,poll,record]   # on the GPU machine

Four parts, one JSON file (``DIR/event_cost.json``; each part is printed as it ends):

- ``raw``: torch's own event calls (``Event.record()``, ``record(stream)`` with the stream looked up once,
  ``torch.cuda.current_stream()``, ``Event.query()``, ``Event.elapsed_time()``), per call with the wall clock and the
  thread's CPU clock, in four settings: ``idle``; ``busy`` (the GPU runs a queue of matmuls launched ahead, as vLLM's
  forward under async scheduling); ``busy+sync`` (and a second thread waits on the GPU in a loop, as vLLM's output
  thread does); ``busy+py`` (and a second thread runs Python in bursts, so a call that releases the GIL must wait to
  get it back). A fifth setting has vLLM's shape: 2 ms of work between a step's two events, the CPU at most two
  steps ahead.
- ``timer``: the plugin's ``GpuTimer.stop`` (vLLM's thread, once per step) timed call by call after a small
  kernel launch (a stand-in step), alone, with the export thread's ``poll`` running beside it every 200 ms (as the
  pipeline does), and with a thread copying each step's output to the host and waiting for it (vLLM's async
  output); its parts alone: the current-stream lookup and the event record (timing and plain events).
- ``poll``: the export thread's side, ``GpuTimer.poll`` per step it resolves, wall and thread CPU, for a poll every
  200 ms over 2 ms stand-in steps: its loop in C (the plugin's way where ``_event_times`` was built), through the
  CUDA runtime per step, and torch's calls, interleaved, and whether the runtime and torch read the same times.
- ``record``: the end event's record alone, torch's ``record(event, stream)`` (the GIL released around it) against
  the runtime's ``cudaEventRecord`` through ctypes (the GIL held), alternated step by step in stand-in steps of
  vLLM's shapes (a CUDA graph replay, or ten launched matmuls; then Python work on the thread; the CPU at most two
  steps ahead), alone, beside a thread running Python in bursts, and beside a thread copying output to the host.

Folded from ``cuda_event_cost.py`` (the ``raw`` part) and ``timer_stop_cost.py`` (``timer``) of earlier sessions;
their results (``benchmarks/results/h200/end_marker``, ``device_timing_cost``) came from those scripts as they were
at the commits that added them.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

N = 2000            # calls per figure (raw)
STEPS = 4000        # stand-in steps (timer)
# the poll's loop in C (vllm_w2ext.hooks._event_times, where it was built in place: ``python3 setup.py build_ext
# --inplace``) is imported by gpu_timing.runtime_resolve from the repository's package
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
_spec = importlib.util.spec_from_file_location(
    "gpu_timing", Path(__file__).resolve().parents[2] / "vllm_w2ext" / "hooks" / "gpu_timing.py")
_gpu_timing = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gpu_timing)
GpuTimer = _gpu_timing.GpuTimer


def stats(ns: list[int]) -> dict:
    """µs per call: median, p90, mean."""
    us = sorted(x / 1e3 for x in ns)
    return {"median": round(statistics.median(us), 2), "p90": round(us[int(0.9 * len(us))], 2),
            "mean": round(statistics.fmean(us), 2), "calls": len(us)}


def python_bursts(stop: threading.Event) -> None:
    """A thread's loop of Python work in bursts (50 us busy, 100 us asleep) until ``stop``: vLLM's IO threads,
    the plugin's export thread, anything that wants the GIL back while a CUDA call has released it."""
    while not stop.is_set():
        t = time.perf_counter() + 50e-6
        while time.perf_counter() < t:
            pass
        time.sleep(100e-6)


# -- raw: torch's event calls -------------------------------------------------------------------------------
def timeit(fn, n: int = N) -> dict:
    cpu, wall = time.thread_time_ns, time.perf_counter_ns
    c0, w0 = cpu(), wall()
    for _ in range(n):
        fn()
    c1, w1 = cpu(), wall()
    return {"wall_us": round((w1 - w0) / n / 1e3, 3), "cpu_us": round((c1 - c0) / n / 1e3, 3)}


def candidates() -> tuple[dict, tuple]:
    """The calls to time, and the objects they need kept alive."""
    Event = torch.cuda.Event
    s = torch.cuda.current_stream()
    pool = [Event(enable_timing=True) for _ in range(2 * N + 2)]
    for e in pool:                  # torch creates the CUDA event at its first record: do it before timing
        e.record(s)
    torch.cuda.synchronize()
    it = iter(pool)
    done, done2 = Event(enable_timing=True), Event(enable_timing=True)
    for e in (done, done2):
        e.record()
        e.synchronize()
    return {
        "torch Event.record()": lambda: next(it).record(),
        "torch Event.record(stream looked up once)": lambda: next(it).record(s),
        "torch.cuda.current_stream()": torch.cuda.current_stream,
        "Event.query() (completed)": done.query,
        "Event.elapsed_time()": lambda: done.elapsed_time(done2),
    }, (pool, done, done2)


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


def raw_part() -> dict:
    res: dict = {"calls_per_figure": N}
    stop = threading.Event()

    def sync_loop():
        e = torch.cuda.Event()
        while not stop.is_set():
            e.record()
            e.synchronize()

    for setting, target in (("idle", None), ("busy", None), ("busy+sync", sync_loop),
                            ("busy+py", lambda: python_bursts(stop))):
        torch.cuda.synchronize()
        stop.clear()
        th = threading.Thread(target=target, daemon=True) if target is not None else None
        calls, keep = candidates()
        row = {}
        for name, fn in calls.items():
            if setting != "idle":
                busy_gpu()
            if th is not None and not th.is_alive():
                th.start()
            row[name] = timeit(fn)
        stop.set()
        if th is not None:
            th.join(5)
        torch.cuda.synchronize()
        del keep
        res[setting] = row
    res["steps (2 ms of matmuls per step, 2 steps ahead)"] = steps_scenario()
    return res


# -- timer and poll: the plugin's GpuTimer -------------------------------------------------------------------
def copy_to_host(x, stop: threading.Event, go: threading.Event) -> None:
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


def start_poller(timer, stop: threading.Event, polls: list | None = None) -> threading.Thread:
    """The export thread's side: ``timer.poll()`` every 200 ms until ``stop``; each poll's (wall ns, thread CPU ns,
    steps resolved) appended to ``polls`` when given."""
    def poller():
        cpu, wall = time.thread_time_ns, time.perf_counter_ns
        while not stop.wait(0.2):
            c0, w0 = cpu(), wall()
            n = len(timer.poll())
            if polls is not None:
                polls.append((wall() - w0, cpu() - c0, n))
    th = threading.Thread(target=poller, daemon=True)
    th.start()
    return th


def timed_stops(timer, x, poll: bool, copier: bool = False) -> list[int]:
    """``timer.stop`` timed over STEPS stand-in steps (a kernel launch, then ~0.2 ms without the GIL); ``poll``:
    the export thread's poll every 200 ms beside it."""
    stop, go = threading.Event(), threading.Event()
    if copier:
        threading.Thread(target=copy_to_host, args=(x, stop, go), daemon=True).start()
    th = start_poller(timer, stop) if poll else None
    out = []
    for i in range(STEPS):
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
    if th is not None:
        th.join()
    return out


def timer_part(timer, x) -> dict:
    dev = torch.cuda.current_device()
    res = {"steps": STEPS, "stop_no_poller": stats(timed_stops(timer, x, False)),
           "stop_with_poller": stats(timed_stops(timer, x, True)),
           "stop_with_poller_and_copy_thread": stats(timed_stops(timer, x, True, copier=True))}
    cur = torch._C._cuda_getCurrentStream
    ns = []
    for _ in range(STEPS):
        t0 = time.perf_counter_ns()
        cur(dev)
        ns.append(time.perf_counter_ns() - t0)
    res["current_stream_lookup"] = stats(ns)
    rec = torch._C._CudaEventBase.record
    s = torch.cuda.current_stream()
    for kind, evs in (("record_timing_event", [torch.cuda.Event(enable_timing=True) for _ in range(64)]),
                      ("record_plain_event", [torch.cuda.Event() for _ in range(64)])):
        ns = []
        for i in range(STEPS):
            x.mul_(1.0)
            t0 = time.perf_counter_ns()
            rec(evs[i % 64], s)
            ns.append(time.perf_counter_ns() - t0)
            if i % 64 == 63:
                torch.cuda.synchronize()
        res[kind] = stats(ns)
    return res


def poll_once(timer, x, steps: int = 1500) -> dict:
    """``GpuTimer.poll`` on a thread of its own every 200 ms while the main thread runs 2 ms stand-in steps (a
    kernel launch, ``stop``, then the rest of the step without the GIL): per poll and per resolved step."""
    polls: list = []
    stop = threading.Event()
    th = start_poller(timer, stop, polls)
    for i in range(steps):
        x.mul_(1.0)
        timer.stop(i, time.time_ns())
        time.sleep(0.002)
    stop.set()
    th.join()
    resolved = sum(p[2] for p in polls)
    return {"polls": len(polls), "steps_resolved": resolved,
            "per_poll_us": {"wall": stats([p[0] for p in polls]), "cpu": stats([p[1] for p in polls])},
            "per_resolved_step_us": {"wall": round(sum(p[0] for p in polls) / max(resolved, 1) / 1e3, 2),
                                     "cpu": round(sum(p[1] for p in polls) / max(resolved, 1) / 1e3, 2)}}


def poll_part(timer, x) -> dict:
    """The poll three ways, interleaved twice: its loop in C with the GIL released around the CUDA runtime's calls
    (``runtime_resolve``, the plugin's way where the extension was built; ``c``), one ``cudaEventElapsedTime`` per step
    through ctypes (``runtime``, its way without the extension) and torch's calls (``torch_elapsed``: a query of the
    step's event, of its anchor once, and ``elapsed_time``); and whether the runtime and torch read the same times on
    the same events."""
    runtime = timer._elapsed
    resolve = _gpu_timing.runtime_resolve()
    res: dict = {"runtime_found": _gpu_timing.loaded_cudart() is not None, "c_built": resolve is not None,
                 "runs": []}
    ways = ([("c", runtime, resolve)] if resolve is not None else []) + [
        ("runtime", runtime, None), ("torch", _gpu_timing.torch_elapsed(), None)]
    for rnd in range(2):
        for name, fn, c in ways:
            timer._elapsed, timer._resolve = fn, c
            res["runs"].append({"way": name, "round": rnd + 1, **poll_once(timer, x)})
    timer._elapsed, timer._resolve = runtime, resolve
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    diffs = []
    for _ in range(50):
        a.record()
        for _ in range(20):
            x.mul_(1.0)
        b.record()
        b.synchronize()
        diffs.append(abs(runtime(a, b) - a.elapsed_time(b)))
    res["max_abs_diff_ms_runtime_vs_torch"] = max(diffs)
    return res


# -- record: vLLM's thread's end-event record, torch's way against the runtime's -------------------------------------
def step_graph(x):
    """A CUDA graph of a few small matmuls, replayed once per step: vLLM's decode at a small batch (one launch)."""
    a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            a @ a
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = a
        for _ in range(8):
            y = y @ a
    return g.replay, (a, g, y)


def step_matmuls():
    """Ten matmuls launched one by one per step (an eager forward)."""
    a = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)

    def launch():
        for _ in range(10):
            a @ a
    return launch, a


def python_rest(n: int = 3000) -> int:
    """The rest of a CPU-bound step on vLLM's thread: Python work that holds the GIL and fills the caches."""
    d = {}
    for i in range(n):
        d[i] = (i, str(i))
    return len(d)


class RuntimeRecord:
    """``cudaEventRecord`` of the CUDA runtime torch loaded, through ctypes with the GIL held (``PyDLL``), on raw
    handles passed as ``c_void_p`` objects without ``argtypes`` (ctypes passes them as they are): the way
    ``gpu_timing.CudaRuntime`` recorded vLLM's end events at 218ac06 (reverted: dearer in the engine)."""

    def __init__(self, path: str) -> None:
        import ctypes
        lib = ctypes.PyDLL(path)
        self._c = ctypes
        self.record = lib.cudaEventRecord
        self.record.restype = ctypes.c_int
        self._create = lib.cudaEventCreateWithFlags
        self._create.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint]
        self._create.restype = ctypes.c_int

    def handle(self, value: int):
        return self._c.c_void_p(value)

    def new_event(self):
        h = self._c.c_void_p()
        if self._create(self._c.byref(h), 0):
            raise RuntimeError("cudaEventCreateWithFlags failed")
        return h


def record_steps(launch, steps: int, rt, background) -> dict:
    """``steps`` stand-in steps (launch, the end event's record timed, the rest of the step in Python, the CPU at most
    two steps ahead), the two ways alternated step by step: torch's ``_CudaEventBase.record(event, stream)`` (the GIL
    released around it) and the runtime's ``cudaEventRecord`` (``RuntimeRecord``, the GIL held)."""
    s = torch.cuda.current_stream()
    raw = rt.handle(s.cuda_stream)
    tev = [torch.cuda.Event(enable_timing=True) for _ in range(8)]
    hev = [rt.new_event() for _ in range(8)]
    gate = [torch.cuda.Event() for _ in range(steps)]
    rec = torch._C._CudaEventBase.record
    cpu, wall = time.thread_time_ns, time.perf_counter_ns
    times = {"torch": ([], []), "runtime": ([], [])}
    stop, go = threading.Event(), threading.Event()
    th = None
    if background == "python":
        th = threading.Thread(target=python_bursts, args=(stop,), daemon=True)
    elif background == "copy":
        th = threading.Thread(target=copy_to_host, args=(torch.ones(4096, device="cuda"), stop, go), daemon=True)
    if th is not None:
        th.start()
    for i in range(steps):
        launch()
        way = "torch" if i % 2 == 0 else "runtime"
        c0, w0 = cpu(), wall()
        if way == "torch":
            rec(tev[i % 8], s)
        elif rt.record(hev[i % 8], raw):
            raise RuntimeError("cudaEventRecord failed")
        w1, c1 = wall(), cpu()
        times[way][0].append(w1 - w0)
        times[way][1].append(c1 - c0)
        gate[i].record(s)
        go.set()
        python_rest()
        if i >= 2:
            gate[i - 2].synchronize()
    torch.cuda.synchronize()
    stop.set()
    if th is not None:
        th.join(5)
    return {way: {"wall": stats(w), "cpu": stats(c)} for way, (w, c) in times.items()}


def record_part(x) -> dict:
    path = _gpu_timing.loaded_cudart()
    if path is None:
        return {"runtime_found": False}
    rt = RuntimeRecord(path)
    res: dict = {"runtime_found": True, "steps": STEPS}
    for shape, (launch, keep) in (("graph", step_graph(x)), ("matmuls", step_matmuls())):
        launch()
        torch.cuda.synchronize()
        for background in ("none", "python", "copy"):
            res[f"{shape}, {background}"] = record_steps(launch, STEPS, rt, background)
            print("record", shape, background, json.dumps(res[f"{shape}, {background}"]), flush=True)
        del keep
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out")
    ap.add_argument("--parts", default="raw,timer,poll", help="comma-separated: raw, timer, poll, record")
    a = ap.parse_args()
    parts = a.parts.split(",")
    if unknown := set(parts) - {"raw", "timer", "poll", "record"}:
        ap.error(f"--parts: unknown {sorted(unknown)}")
    torch.cuda.init()
    x = torch.ones(1024, device="cuda")
    res: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "python": platform.python_version(),
                 "cpu": platform.processor() or platform.machine()}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    timer = None
    for part in parts:
        if part == "raw":
            res["raw"] = raw_part()
        elif part == "record":
            res["record"] = record_part(x)
        else:
            if timer is None:
                timer = GpuTimer()
                timed_stops(timer, x, False)      # warm-up: pool filled, stream cached
            res[part] = timer_part(timer, x) if part == "timer" else poll_part(timer, x)
        print(part, json.dumps(res[part]), flush=True)
        (out / "event_cost.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
