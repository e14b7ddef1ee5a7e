"""py-spy ``--nonblocking`` against sampling with the process stopped, on a planted case whose answer is known: how
well the stack sampler that ``gpu/pyspy_share.sh`` uses reads a short, frequent plugin call's share.

    python benchmarks/pyspy_torn_check.py --spy PATH/TO/py-spy [--seconds 20] [--rate 500]

The child process has two planted modules on its path:
- ``vllm/planted_core.py`` stands for vLLM. Each step calls ``hook()`` and ``outer()`` (which calls ``inner()``),
  puts the result on a ``queue.Queue``, then spins on a line that calls nothing: ``while z < N: z += 1``.
- ``vllm_w2ext/planted_hook.py`` stands for the plugin: those three short functions.

py-spy samples the child twice: with ``--nonblocking`` (the process runs on while its frames are read), and with the
process stopped for each stack (py-spy's default), which reads a consistent stack. Each run is read by
``gpu/pyspy_share.share`` as the device's readings are, with its queue rule and without it.

Printed for each run:
- the samples whose innermost frame is the plugin's, and of them those under the spin line. The spin line calls
  nothing, so those frames were read after they had returned: py-spy reads the innermost frame first, and the
  caller's line later.
- the plugin's share as ``share`` reads it.

The stopped run is the reference. The two runs read the same process, so the plugin's true share is the same in
both.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu"))
import pyspy_share  # noqa: E402  (benchmarks/gpu/, beside this file's own folder)

CORE = '''import queue
import time

from vllm_w2ext.planted_hook import hook, outer

Q = queue.Queue()


def step():
    n = hook()                                # HOOK_CALL
    m = outer()                               # OUTER_CALL
    Q.put_nowait(m)                           # PUT
    Q.queue.clear()
    z = 0
    while z < 3000: z += 1                    # SPIN
    return n + z


def main(seconds):
    t = time.time()
    while time.time() - t < seconds:
        step()
'''
HOOK = '''def hook():
    xs = [0] * 64
    return len(xs)


def outer():
    return inner() + 1


def inner():
    xs = [0] * 64
    return len(xs)
'''


def sample(spy: str, root: Path, seconds: float, rate: int, flags: list[str]) -> Path:
    child = subprocess.Popen([sys.executable, "-c", f"import vllm.planted_core as c; c.main({seconds + 3})"],
                             cwd=root, env={"PYTHONPATH": str(root)})
    time.sleep(1)
    out = root / f"stacks{'_'.join(flags) or '_blocking'}.txt"
    subprocess.run([spy, "record", *flags, "-r", str(rate), "-d", str(int(seconds)), "--pid", str(child.pid),
                    "-f", "raw", "-o", str(out)], check=True, capture_output=True)
    child.wait()
    return out


def patterns(stacks, spin: int) -> dict:
    """Samples by what they show: a plugin frame innermost (under the spin line, under a queue frame, elsewhere), a
    queue frame innermost with a plugin frame right over it."""
    out = dict.fromkeys(("plugin_innermost", "under_spin_line", "under_queue", "queue_under_plugin"), 0)
    for f, n in stacks:
        if pyspy_share._ours(f[-1]):
            out["plugin_innermost"] += n
            parent = f[-2] if len(f) > 1 else ""
            out["under_spin_line"] += n * parent.endswith(f"(vllm/planted_core.py:{spin})")
            out["under_queue"] += n * bool(pyspy_share.QUEUE_FRAME.search(parent))
        elif pyspy_share.QUEUE_FRAME.search(f[-1]) and len(f) > 1 and pyspy_share._ours(f[-2]):
            out["queue_under_plugin"] += n
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spy", required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=500)
    a = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {a.seconds:.0f} s at {a.rate} Hz per run")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for pkg, name, text in (("vllm", "planted_core.py", CORE), ("vllm_w2ext", "planted_hook.py", HOOK)):
            (root / pkg).mkdir()
            (root / pkg / "__init__.py").write_text("")
            (root / pkg / name).write_text(text)
        spin = next(i for i, ln in enumerate(CORE.splitlines(), 1) if "SPIN" in ln)
        source = pyspy_share.source_lines(root)
        for flags in (["--nonblocking"], []):
            stacks = pyspy_share.read(sample(a.spy, root, a.seconds, a.rate, flags))
            pats = patterns(stacks, spin)
            reads = {"no rule": pyspy_share.share(stacks), "queue rule": pyspy_share.share(stacks, source=source)}
            total = reads["no rule"]["samples"]
            print(f"{' '.join(flags) or 'stopped for each stack'}: {total} samples; "
                  + ", ".join(f"{k} {v}" for k, v in pats.items()))
            for name, r in reads.items():
                print(f"    plugin share, {name}: {r['plugin_samples']} = {r['plugin_pct']} % (torn {r['torn_samples']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
