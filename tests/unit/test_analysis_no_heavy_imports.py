"""Analysis runs where vLLM and torch are not installed (a laptop opening an H100 trace): importing every
analysis module, and the lab's report, must not import them, nor may analysis import the lab."""
from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import vllm_w2ext.analysis as analysis
import vllm_w2ext.lab.report as report
names = [m.name for pkg in (analysis, report) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("vllm", "torch"))
print(len(names), heavy)
"""
LAB_CHECK = """
import importlib, pkgutil, sys
import vllm_w2ext.analysis as analysis
for m in pkgutil.walk_packages(analysis.__path__, "vllm_w2ext.analysis."):
    importlib.import_module(m.name)
print(sorted(m for m in sys.modules if m.startswith("vllm_w2ext.lab")))
"""


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_no_vllm_or_torch():
    count, heavy = _run(CHECK).split(" ", 1)
    assert int(count) > 20 and heavy == "[]"


def test_analysis_does_not_import_the_lab():
    assert _run(LAB_CHECK) == "[]"
