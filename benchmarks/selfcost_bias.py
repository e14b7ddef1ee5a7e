"""Does the plugin's self-cost counter tell the truth? A known answer: the cost of a hooked call is what the same
loop takes with the hook minus what it takes without it (interleaved blocks, medians), the runner's own code and
what the hook does to the caches of the code around it included. The counter (``selfcost.hook_wall_ns`` /
``hook_cpu_ns``: one call in ``SAMPLE_EVERY`` timed by the runner, both clocks) is read over the hooked blocks.

The hook is a stand-in of a step hook's work (a list record with two clock reads, appended to a buffer in post);
between calls the "engine" walks ``--pollute`` objects (vLLM's own work, cooling the caches the way a step does).
``--wall-only`` times the sampled calls with the wall clock alone (the thread clock is a system call): to see whether
reading it is what moves the counter.

    python benchmarks/selfcost_bias.py [--pollute 0,500] [--calls 20000] [--blocks 30] [--wall-only] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("VLLM_W2EXT", "1")

from vllm_w2ext.hooks import runner  # noqa: E402
from vllm_w2ext.hooks.runner import HookRunner  # noqa: E402
from vllm_w2ext.hooks.spec import Hook  # noqa: E402
from vllm_w2ext.telemetry import selfcost  # noqa: E402


class _State:
    def __init__(self) -> None:
        self.step = 0
        self.buf: list = []


S = _State()


def pre(obj, args, kwargs):
    S.step = n = S.step + 1
    return [n, "engine.step", 1, 2, 3, time.time_ns(), 0, n, None, None, None, True, None]


def post(r, result, error):
    r[6] = time.time_ns()
    buf = S.buf
    buf.append(r)
    if len(buf) > 1024:
        buf.clear()


class _Obj:
    __slots__ = ("v",)

    def __init__(self, v: int) -> None:
        self.v = v


def measure(pollute: int, calls: int, blocks: int) -> dict:
    junk = [_Obj(i) for i in range(pollute)]

    def plain(self):
        s = 0
        for j in junk:
            s += j.v
        return s

    hooked = HookRunner(Hook("t.bias", "m", "C.f", pre, post)).bind(plain)

    def block(fn) -> int:
        t = time.perf_counter_ns()
        for _ in range(calls):
            fn(None)
        return time.perf_counter_ns() - t

    block(plain), block(hooked)                       # warm-up
    truth, wall, cpu = [], [], []
    for _ in range(blocks):
        a = block(plain)
        w0, c0 = selfcost.hook_wall_ns[0], selfcost.hook_cpu_ns[0]
        b = block(hooked)
        wall.append((selfcost.hook_wall_ns[0] - w0) / calls)
        cpu.append((selfcost.hook_cpu_ns[0] - c0) / calls)
        a2 = block(plain)
        truth.append((b - (a + a2) / 2) / calls)
    return {"pollute": pollute, "plain_call_ns": round(a / calls), "truth_ns": round(statistics.median(truth)),
            "truth_ns_quartiles": [round(q) for q in statistics.quantiles(truth, n=4)],
            "counter_wall_ns": round(statistics.median(wall)), "counter_cpu_ns": round(statistics.median(cpu))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pollute", default="0,500")      # the committed runs (results/cpu/selfcost_bias)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--wall-only", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.wall_only:
        runner._cpu = lambda: 0
    rows = [measure(int(p), a.calls, a.blocks) for p in a.pollute.split(",")]
    doc = {"what": __doc__.split("\n")[0], "python": platform.python_version(), "machine": platform.processor() or
           platform.machine(), "wall_only": a.wall_only, "sample_every": selfcost.SAMPLE_EVERY, "rows": rows}
    for r in rows:
        print(f"pollute {r['pollute']:>6}: plain call {r['plain_call_ns'] / 1e3:8.2f} µs | truth {r['truth_ns']:6} ns "
              f"(quartiles {r['truth_ns_quartiles'][0]}..{r['truth_ns_quartiles'][2]}) | counter wall "
              f"{r['counter_wall_ns']:6} cpu {r['counter_cpu_ns']:6} ns per call")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
