"""Build and read the NVTX recording injection library (``nvtx_record.c``).

A process started with ``NVTX_INJECTION64_PATH=<libnvtx_record.so>`` and
``NVTX_RECORD_FILE=<file>`` appends one tab-separated line per NVTX event to
``<file>``; :func:`parse_records` reads that file and :func:`pair_ranges` turns
the push/pop and start/end events into ranges.  No GPU, CUDA or Nsight needed.

NVTX decides whether a tool is attached on first use, so the env vars must be
set before the instrumented process starts (use a subprocess).

"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

NVTX_HEADERS_PACKAGE = "nvidia-nvtx-cu12==12.9.79"
SOURCE = Path(__file__).with_name("nvtx_record.c")
LIB_NAME = "libnvtx_record.so"


class RecorderBuildError(RuntimeError):
    """The recorder library could not be built (no compiler, no headers...)."""


@dataclass(frozen=True)
class NvtxEvent:
    kind: str  # push / pop / start / end / mark / category (category naming)
    domain: str  # "default" for the core (NULL) domain
    tid: int  # OS thread id (gettid)
    timestamp_ns: int  # CLOCK_REALTIME
    category: int  # 0 if none; for kind == "category": the id being named
    payload: Optional[int]  # integer payloads only (INT64/UINT64/INT32/UINT32)
    message: str  # ASCII or registered-string message; category name for "category"
    range_id: int  # start/end only, else 0


@dataclass(frozen=True)
class NvtxRange:
    kind: str  # "push" (push/pop) or "start" (start/end)
    name: str
    domain: str
    category: int
    payload: Optional[int]
    tid: int  # thread that opened the range
    start_ns: int
    end_ns: Optional[int]  # None if the range was never closed
    depth: int  # push nesting depth in its (domain, thread) stack; 0 for start/end
    parent: Optional[str]  # enclosing push range name (same domain and thread)
    range_id: int = 0  # start/end ranges only
    end_tid: Optional[int] = None  # thread that closed the range

    @property
    def duration_ns(self) -> Optional[int]:
        return None if self.end_ns is None else self.end_ns - self.start_ns


# --------------------------------------------------------------------------- build


def _headers_dir(cache_dir: Path) -> Path:
    include = cache_dir / "nvtx_headers" / "nvidia" / "nvtx" / "include"
    if (include / "nvtx3" / "nvToolsExt.h").is_file():
        return include
    wheels = sorted(cache_dir.glob("nvidia_nvtx_cu12-12.9.79-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "-d", str(cache_dir), NVTX_HEADERS_PACKAGE]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(cache_dir.glob("nvidia_nvtx_cu12-12.9.79-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise RecorderBuildError(
                f"could not download {NVTX_HEADERS_PACKAGE} for the NVTX headers "
                f"({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")
    with zipfile.ZipFile(wheels[-1]) as whl:
        members = [m for m in whl.namelist() if m.startswith("nvidia/nvtx/include/")]
        whl.extractall(cache_dir / "nvtx_headers", members)
    if not (include / "nvtx3" / "nvToolsExt.h").is_file():
        raise RecorderBuildError(f"{wheels[-1]} has no nvidia/nvtx/include/nvtx3/nvToolsExt.h")
    return include


def build_recorder(cache_dir: os.PathLike | str) -> Path:
    """Return the path of ``libnvtx_record.so``, building it into *cache_dir*.

    Downloads the NVTX headers wheel if needed and recompiles when the library
    is missing or older than ``nvtx_record.c``.  Needs ``gcc`` (or ``$CC``).
    """
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    lib = cache_dir / LIB_NAME
    if lib.is_file() and lib.stat().st_mtime >= SOURCE.stat().st_mtime:
        return lib
    cc = os.environ.get("CC") or "gcc"
    if shutil.which(cc) is None:
        raise RecorderBuildError(
            f"C compiler {cc!r} not found on PATH; it is needed to build the NVTX "
            f"recorder ({SOURCE}). Install gcc (e.g. `apt-get install gcc`) or set $CC.")
    include = _headers_dir(cache_dir)
    tmp = lib.with_name(f"{LIB_NAME}.{os.getpid()}.tmp")
    cmd = [cc, "-O2", "-Wall", "-shared", "-fPIC", f"-I{include}",
           "-o", str(tmp), str(SOURCE), "-lpthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RecorderBuildError(f"compiling the NVTX recorder failed ({' '.join(cmd)}):\n"
                                 f"{proc.stdout}{proc.stderr}")
    os.replace(tmp, lib)  # atomic: concurrent builders never see a partial .so
    return lib


def recorder_env(lib: os.PathLike | str, record_file: os.PathLike | str,
                 base: Optional[dict] = None) -> dict:
    """Environment for a subprocess whose NVTX events go to *record_file*."""
    env = dict(os.environ if base is None else base)
    env.pop("NVTX_DISABLE", None)  # would make the `nvtx` package a no-op
    env["NVTX_INJECTION64_PATH"] = str(lib)
    env["NVTX_RECORD_FILE"] = str(record_file)
    return env


# --------------------------------------------------------------------------- parse


def parse_records(path: os.PathLike | str) -> list[NvtxEvent]:
    """Parse a ``NVTX_RECORD_FILE`` in file order (per-thread order is exact)."""
    events = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 8:
            raise ValueError(f"{path}:{lineno}: expected 8 tab-separated fields: {line!r}")
        kind, domain, tid, ts, cat, payload, message, range_id = fields
        events.append(NvtxEvent(kind, domain, int(tid), int(ts), int(cat),
                                int(payload) if payload else None, message, int(range_id)))
    return events


def category_names(events: Iterable[NvtxEvent]) -> dict[tuple[str, int], str]:
    """``{(domain, category_id): name}`` from nvtxDomainNameCategoryA calls."""
    return {(e.domain, e.category): e.message for e in events if e.kind == "category"}


def pair_ranges(events: Iterable[NvtxEvent]) -> list[NvtxRange]:
    """Match push/pop per (domain, thread) stack and start/end by range id.

    Ranges are returned in opening order; ranges never closed have
    ``end_ns=None``; pops/ends without an opener are ignored.
    """
    opened: list[dict] = []
    stacks: dict[tuple[str, int], list[dict]] = {}
    started: dict[int, dict] = {}
    for e in events:
        if e.kind == "push":
            stack = stacks.setdefault((e.domain, e.tid), [])
            r = dict(kind="push", name=e.message, domain=e.domain, category=e.category,
                     payload=e.payload, tid=e.tid, start_ns=e.timestamp_ns, end_ns=None,
                     depth=len(stack), parent=stack[-1]["name"] if stack else None)
            stack.append(r)
            opened.append(r)
        elif e.kind == "pop":
            stack = stacks.get((e.domain, e.tid))
            if stack:
                r = stack.pop()
                r.update(end_ns=e.timestamp_ns, end_tid=e.tid)
        elif e.kind == "start":
            r = dict(kind="start", name=e.message, domain=e.domain, category=e.category,
                     payload=e.payload, tid=e.tid, start_ns=e.timestamp_ns, end_ns=None,
                     depth=0, parent=None, range_id=e.range_id)
            started[e.range_id] = r
            opened.append(r)
        elif e.kind == "end":
            r = started.pop(e.range_id, None)
            if r is not None:
                r.update(end_ns=e.timestamp_ns, end_tid=e.tid)
    return [NvtxRange(**r) for r in opened]
