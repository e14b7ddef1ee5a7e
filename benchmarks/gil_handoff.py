"""Does the export thread's yield between chunks hand the GIL to vLLM's thread? (issue #19, the stall a flush imposes)

    python benchmarks/gil_handoff.py [--flushes 60] [--reps 2] > out.txt

The export thread (``telemetry/pipeline.py``, ``Pipeline.flush_once``) sends its batch in chunks: each chunk is
encoded (Python and C work, GIL held), written to the pipe (``os.write``: GIL released around the syscall), then it
calls ``time.sleep(0)``. The GIL-hold metrics count the time between those releases as held, on the premise that a
release lets a thread waiting for the GIL in. A CPU-bound thread does not release the GIL on its own (only when
forced, after ``sys.getswitchinterval()``), so whether it gets in at a release depends on CPython's hand-off: the
releasing thread may take the GIL straight back before the waiter wakes.

Stand-ins, no vLLM: the main thread runs a CPU-bound Python loop and times its own iterations (vLLM's stepping
thread); a second thread, every 20 ms, runs a flush of CHUNKS chunks of ~CHUNK_US of Python work, each followed by
one of: nothing (``none``), a 64 KiB write to a pipe drained by a child process (``write``), the write and
``time.sleep(0)`` (``write+yield``: the plugin's way). What the main thread sees: its iterations longer than 1.5
chunks (it waited for more than one chunk at once), their total, its longest, and the flush's wall time (a flush that
hands the GIL over waits to get it back, up to a switch interval each time).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time

MODES = ("none", "write", "write+yield")
SHAPES = ((1, 2000), (4, 250), (8, 100))      # (chunks, µs of work per chunk)


def busy(n: int) -> int:
    x = 0
    for i in range(n):
        x += i
    return x


def calibrate(target_us: float) -> int:
    n = 1000
    while True:
        t = time.perf_counter()
        busy(n)
        d = (time.perf_counter() - t) * 1e6
        if d > 200:
            return max(1, int(n * target_us / d))
        n *= 2


def run(fd: int, chunks: int, chunk_us: float, mode: str, flushes: int) -> dict:
    n = calibrate(chunk_us)
    data = b"x" * 65536
    stop = threading.Event()
    gaps: list[float] = []

    def stepping():
        last = time.perf_counter()
        while not stop.is_set():
            busy(200)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    th = threading.Thread(target=stepping)
    th.start()
    time.sleep(0.05)
    walls = []
    for _ in range(flushes):
        time.sleep(0.02)
        t0 = time.perf_counter()
        for _ in range(chunks):
            busy(n)
            if mode != "none":
                os.write(fd, data)
            if mode == "write+yield":
                time.sleep(0)
        walls.append(time.perf_counter() - t0)
    stop.set()
    th.join()
    over = [g for g in gaps if g > 1.5 * chunk_us * 1e-6]
    return {"chunks": chunks, "chunk_us": chunk_us, "mode": mode, "flushes": flushes,
            "flush_wall_ms_median": round(statistics.median(walls) * 1e3, 2),
            "main_gaps_over_1.5_chunks": len(over), "their_total_ms": round(sum(over) * 1e3, 2),
            "main_gap_max_ms": round(max(gaps) * 1e3, 3),
            "main_iteration_median_us": round(statistics.median(gaps) * 1e6, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flushes", type=int, default=60)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    child = subprocess.Popen([sys.executable, "-c", "import sys\nwhile sys.stdin.buffer.read1(1 << 20): pass"],
                             stdin=subprocess.PIPE)
    print(f"# Python {platform.python_version()}, switch interval {sys.getswitchinterval()} s, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    try:
        for rep in range(a.reps):                 # the modes interleaved, shape by shape
            for chunks, chunk_us in SHAPES:
                for mode in MODES:
                    print(rep + 1, run(child.stdin.fileno(), chunks, chunk_us, mode, a.flushes), flush=True)
    finally:
        child.stdin.close()
        child.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
