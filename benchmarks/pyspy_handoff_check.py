"""Where py-spy puts the teardown of a returning frame: the planted case behind ``gpu/pyspy_share.py``'s
hand-off rule (a sample on a hook wrapper's call line into vLLM is vLLM's work, not the plugin's).

    python benchmarks/pyspy_handoff_check.py --spy PATH/TO/py-spy [--seconds 5] [--rate 200]

A child process calls ``callee`` through ``wrapper`` in a loop for a few seconds. ``callee`` builds 20,000
objects into its locals and returns; the wrapper's only line is the call. py-spy samples the child
(``--nonblocking``, raw stacks). Printed: the samples whose innermost frame is the wrapper's call line, as a
share of all samples. CPython makes the caller's frame current before it frees the returning frame's locals,
so freeing them is sampled on the caller's call line: a wrapper there is charged with its callee's teardown.
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = '''
import time
def callee():
    xs = [object() for _ in range(20000)]
    d = {i: [i] for i in range(20000)}
    return len(xs) + len(d)
def wrapper(fn):
    return fn()                               # WRAPPER_CALL
t = time.time()
while time.time() - t < SECONDS:
    wrapper(callee)
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spy", required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=200)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "planted.py"
        src.write_text(CHILD.replace("SECONDS", str(a.seconds + 3)))
        call_line = next(i for i, line in enumerate(src.read_text().splitlines(), 1) if "WRAPPER_CALL" in line)
        child = subprocess.Popen([sys.executable, str(src)])
        time.sleep(1)
        out = Path(tmp) / "stacks.txt"
        subprocess.run([a.spy, "record", "--nonblocking", "-r", str(a.rate), "-d", str(int(a.seconds)),
                        "--pid", str(child.pid), "-f", "raw", "-o", str(out)], check=True, capture_output=True)
        child.wait()
        inner: collections.Counter = collections.Counter()
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            inner[stack.split(";")[-1].replace(str(src), "planted.py")] += int(n)
    total = sum(inner.values())
    on_call = sum(n for f, n in inner.items() if f == f"wrapper (planted.py:{call_line})")
    print(f"python {sys.version.split()[0]}, {total} samples")
    for f, n in inner.most_common():
        print(f"  {n:6d}  {f}")
    print(f"innermost frame on the wrapper's call line: {on_call} of {total} = {100 * on_call / total:.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
