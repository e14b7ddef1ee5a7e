"""Can the runner split a hook's time into CPU and GIL wait? The order of the clock reads around one timed call,
against a known answer: a hook alone on one thread waits for nothing, so its CPU time is its wall time.

The runner (``hooks/runner.py``) reads the thread clock (a system call) and the wall clock before the hook, both
after it, and both again to time an empty section it subtracts (``selfcost``). Three orders are timed here on the
same stand-in hook, with ``--pollute`` objects walked between calls (vLLM's work cooling the caches):

- ``runner``: the runner's order (thread, wall; hook; thread, wall; thread, wall);
- ``warm``: the same after one more thread-clock read, so the first read's return path runs warm like the others;
- ``wall``: the wall clock alone around the hook (no system call), for scale.

Every call is timed (no sampling). Means and medians per call; CPU over wall should be 1 for a thread that never waits.

    python benchmarks/selfcost_clock_order.py [--calls 20000] [--pollute 500] [--rounds 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

_cpu, _wall = time.thread_time_ns, time.perf_counter_ns


class _Obj:
    __slots__ = ("v",)

    def __init__(self, v: int) -> None:
        self.v = v


def hook() -> list:
    """A step hook's work: one list record with a clock read (as selfcost_bias.py's pre)."""
    return [1, "engine.step", 2, 3, 4, time.time_ns(), 0, 5, None, None, None, True, None]


def runner_order() -> tuple[int, int]:
    c0, w0 = _cpu(), _wall()
    hook()
    c1, w1 = _cpu(), _wall()
    c2, w2 = _cpu(), _wall()
    return (c1 - c0) - (c2 - c1), (w1 - w0) - (w2 - w1)


def warm_order() -> tuple[int, int]:
    _cpu()
    return runner_order()


def wall_only() -> tuple[int, int]:
    w0 = _wall()
    hook()
    w1 = _wall()
    w2 = _wall()
    return 0, (w1 - w0) - (w2 - w1)


ORDERS = {"runner": runner_order, "warm": warm_order, "wall": wall_only}


def measure(fn, calls: int, junk: list) -> dict:
    cpu, wall = [], []
    for _ in range(calls):
        s = 0
        for j in junk:
            s += j.v
        c, w = fn()
        cpu.append(c)
        wall.append(w)
    mc, mw = statistics.mean(cpu), statistics.mean(wall)
    return {"cpu_mean_ns": round(mc), "wall_mean_ns": round(mw), "cpu_median_ns": statistics.median(cpu),
            "wall_median_ns": statistics.median(wall), "cpu_over_wall_mean": round(mc / mw, 3) if mw else None,
            "cpu_over_wall_median": round(statistics.median(cpu) / statistics.median(wall), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--pollute", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    junk = [_Obj(i) for i in range(a.pollute)]
    t0 = _wall()
    for _ in range(100_000):
        _cpu()
    read_ns = (_wall() - t0) / 100_000
    rows = []
    for r in range(a.rounds):                  # the orders interleaved, round by round
        for name, fn in ORDERS.items():
            row = {"round": r + 1, "order": name, **measure(fn, a.calls, junk)}
            rows.append(row)
            print(f"round {r + 1} {name:>6}: cpu {row['cpu_median_ns']:>6} wall {row['wall_median_ns']:>6} ns "
                  f"(median); cpu/wall mean {row['cpu_over_wall_mean']}, median {row['cpu_over_wall_median']}")
    doc = {"what": __doc__.split("\n")[0], "python": platform.python_version(), "machine": platform.processor() or
           platform.machine(), "calls": a.calls, "pollute": a.pollute, "thread_clock_read_ns": round(read_ns),
           "rows": rows}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
