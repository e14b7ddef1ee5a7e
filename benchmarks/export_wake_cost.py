"""Why the export thread's CPU per step is mostly a fixed cost per wake (``results/cpu/export_interval``): the same
work costs more CPU when the thread wakes from a sleep than when it runs back to back, and the export thread wakes
from a sleep every interval. Measured in one process, no vLLM, the plugin's own pipeline (export process on):

- ``flush_once``: ``Pipeline.flush_once`` with nothing recorded (what a wake costs before any record is sent);
- ``clock``: two thread-clock reads with nothing between (the measuring alone);
- ``dict``: 500 lookups in a 2,000-entry dict (a small piece of Python work);

each after a sleep of ``--apart`` ms (the export interval's case), after 1 ms, and back to back. Thread CPU time,
median over ``--n`` calls (µs).

    python benchmarks/export_wake_cost.py [--apart 50 200] [--n 40] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time


def cpu_us(work, n: int, sleep_s: float) -> float:
    out = []
    for _ in range(n):
        if sleep_s:
            time.sleep(sleep_s)
        c0 = time.thread_time_ns()
        work()
        out.append(time.thread_time_ns() - c0)
    return statistics.median(out) / 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apart", type=float, nargs="+", default=[50.0, 200.0], help="sleeps before a call (ms)")
    ap.add_argument("--n", type=int, default=40, help="calls per case")
    ap.add_argument("--out", help="JSON file")
    a = ap.parse_args(argv)
    os.environ.update({"VLLM_W2EXT": "1", "VLLM_W2EXT_TRACE_DIR": tempfile.mkdtemp(prefix="w2ext-wake-"),
                       "VLLM_W2EXT_EXPORT_INTERVAL_MS": "60000"})    # its own thread stays asleep: flushed here
    from vllm_w2ext.telemetry import pipeline
    p = pipeline.get()
    table = {i: str(i) for i in range(2000)}

    def lookups() -> None:
        for k in range(0, 2000, 4):
            table[k]

    work = {"flush_once": p.flush_once, "clock": lambda: None, "dict": lookups}
    sleeps = {**{f"{ms:g} ms apart": ms / 1000 for ms in a.apart}, "1 ms apart": 0.001, "back to back": 0.0}
    res = {name: {label: round(cpu_us(w, a.n if s else 5 * a.n, s), 1) for label, s in sleeps.items()}
           for name, w in work.items()}
    doc = {"what": __doc__.split("\n\n")[0], "machine": {"cpu": platform.processor() or platform.machine(),
           "python": platform.python_version(), "cores": os.cpu_count()}, "export_process": p.remote is not None,
           "n": a.n, "median_cpu_us": res}
    for name, row in res.items():
        print(f"{name}: " + ", ".join(f"{k} {v} µs" for k, v in row.items()))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
    p.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
