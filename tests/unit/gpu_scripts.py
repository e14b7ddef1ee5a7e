"""Load a script of benchmarks/gpu/ as a module (those scripts are run by path on the GPU machine, not
installed): the unit tier tests their pure parts on planted records."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

GPU = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"


def load(name: str):
    key = f"_w2ext_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, GPU / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod
