"""vLLM wheels from the package registry, for the static checks of ``benchmarks/compat_matrix.py`` and
tests/test_compat_static.py: ``pip download --no-deps`` of the Linux x86-64 wheel (its Python sources
are the same on every platform), cached in a folder. Imports no vLLM; needs pip."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("W2EXT_VLLM_WHEELS", "~/.cache/w2ext-vllm-wheels")).expanduser()
# Other places that already hold vLLM wheels on the development machines (read, never deleted).
ELSEWHERE = (Path("~/.cache/w2ext-gpu").expanduser(),)
PLATFORM = ("--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
            "--implementation", "cp")


def version_key(v: str) -> tuple:
    """0.27.1 > 0.27.0; pre-releases (0.33.0rc1) sort before their release."""
    m = re.match(r"^(\d+(?:\.\d+)*)(.*)$", v)
    if not m:
        return ((), v)
    return (tuple(int(x) for x in m.group(1).split(".")), (0, m.group(2)) if m.group(2) else (1, ""))


def registry_versions(package: str = "vllm", python: str = sys.executable) -> list[str]:
    """Every version the configured registry lists (``pip index versions``), newest first."""
    p = subprocess.run([python, "-m", "pip", "index", "versions", package], capture_output=True, text=True,
                       timeout=300, check=False)
    m = re.search(r"^Available versions:\s*(.+)$", p.stdout, re.MULTILINE)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"pip index versions {package} failed:\n{p.stdout}\n{p.stderr}")
    return [v.strip() for v in m.group(1).split(",") if v.strip()]


def find_wheel(version: str, dirs=()) -> Path | None:
    for d in (*dirs, CACHE, *ELSEWHERE):
        hits = sorted(Path(d).glob(f"vllm-{version}-*.whl")) if Path(d).is_dir() else []
        if hits:
            return hits[0]
    return None


def download(version: str, dest: Path = CACHE, python: str = sys.executable, timeout: float = 1800) -> Path:
    """Download the wheel of vllm==version into dest (atomically: a partial download never looks
    cached) and return its path. Raises RuntimeError when pip fails."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".vllm-{version}-", dir=dest))
    try:
        p = subprocess.run([python, "-m", "pip", "download", "-q", "--no-deps", *PLATFORM, f"vllm=={version}",
                            "-d", str(tmp)], capture_output=True, text=True, timeout=timeout, check=False)
        wheels = sorted(tmp.glob(f"vllm-{version}-*.whl"))
        if p.returncode != 0 or not wheels:
            raise RuntimeError(f"pip download vllm=={version} failed (rc {p.returncode}):\n"
                               f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        final = dest / wheels[0].name
        os.replace(wheels[0], final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def get(version: str, dest: Path = CACHE, dirs=(), python: str = sys.executable) -> tuple[Path, bool]:
    """(wheel, downloaded now): a cached wheel of that version, else one downloaded into dest."""
    found = find_wheel(version, (dest, *dirs))
    if found is not None:
        return found, False
    return download(version, dest, python), True
