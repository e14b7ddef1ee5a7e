#!/usr/bin/env python3
"""What the direct self-cost counter adds to a hook's C front (``hooks/_cfront.c``: every call it takes timed in
time-stamp-counter ticks): this tree's front against the front of an earlier commit without it (``--before``,
default 412e5b6), both built here from their ``_cfront.c``, on a bounds hook and on a pre/post hook whose ``pre`` and
``post`` do nothing, interleaved round by round (A B A B ...), ns per call (min and median over the rounds).

    python benchmarks/cfront_direct_cost.py [--before REV | --before-file _cfront.c] [--calls 200000] [--rounds 9]
        [--json out.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vllm_w2ext.hooks import runner as R  # noqa: E402
from vllm_w2ext.hooks.bounds import buffer as bounds_buffer  # noqa: E402
from vllm_w2ext.hooks.spec import Hook  # noqa: E402
from vllm_w2ext.telemetry import recording  # noqa: E402


def build(source: str, where: Path) -> Path:
    """Compile one _cfront.c into ``where`` (setuptools, as setup.py builds it); the extension's path."""
    (where / "_cfront.c").write_text(source)
    (where / "setup.py").write_text("from setuptools import Extension, setup\n"
                                    "setup(name='x', ext_modules=[Extension('_cfront', ['_cfront.c'])])\n")
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=where, check=True,
                   capture_output=True)
    return next(where.glob("_cfront*" + sysconfig.get_config_var("EXT_SUFFIX")))


def load(path: Path):
    spec = importlib.util.spec_from_file_location("vllm_w2ext.hooks._cfront", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Front


class Target:
    def method(self, so, out=None):
        return so


def front(cls, kind: str):
    R.CFront = cls
    if kind == "bounds":
        r = R.HookRunner(Hook("t.bounds", __name__, "Target.method", lambda i, a, k: None, lambda s, res, e: None,
                              bounds=bounds_buffer(), bounds_keep="arg"))
        r.set_bounds(True, True)
    else:
        r = R.HookRunner(Hook("t.prepost", __name__, "Target.method", lambda i, a, k: 1, lambda s, res, e: None))
    r.left = 1 << 30                     # no sampled call through the Python front
    f = r.bind(vars(Target)["method"])
    assert type(f) is cls
    return f


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="412e5b6")
    ap.add_argument("--before-file", type=Path, help="the earlier _cfront.c itself (where there is no git history)")
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    recording.PHASE_MARKS[0] = False
    before_src = a.before_file.read_text() if a.before_file else subprocess.run(
        ["git", "show", f"{a.before}:vllm_w2ext/hooks/_cfront.c"], cwd=ROOT, check=True, capture_output=True,
        text=True).stdout
    with tempfile.TemporaryDirectory() as t0, tempfile.TemporaryDirectory() as t1:
        builds = {"before": load(build(before_src, Path(t0))),
                  "direct": load(build((ROOT / "vllm_w2ext/hooks/_cfront.c").read_text(), Path(t1)))}
    t = Target()
    got: dict = {}
    for _ in range(a.rounds):
        for kind in ("bounds", "prepost"):
            for name, cls in builds.items():
                f = front(cls, kind)
                s = time.perf_counter_ns()
                for i in range(a.calls):
                    f(t, i)
                got.setdefault(f"{kind}/{name}", []).append((time.perf_counter_ns() - s) / a.calls)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.machine())
    out = {"cpu": model, "cpus": os.cpu_count(), "python": platform.python_version(),
           "before": a.before, "calls": a.calls, "rounds": a.rounds,
           "ns_per_call": {k: {"min": round(min(v), 1), "median": round(statistics.median(v), 1), "all": v}
                           for k, v in got.items()}}
    for kind in ("bounds", "prepost"):
        b, d = out["ns_per_call"][f"{kind}/before"], out["ns_per_call"][f"{kind}/direct"]
        out[f"{kind}_added_ns"] = {"min": round(d["min"] - b["min"], 1), "median": round(d["median"] - b["median"], 1)}
        print(f"{kind}: before {b['min']} / {b['median']} ns, direct {d['min']} / {d['median']} ns (min / median): "
              f"+{out[f'{kind}_added_ns']['min']} / +{out[f'{kind}_added_ns']['median']} ns a call")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
