"""Opening a Kineto / Chrome JSON trace as bytes, plain, gzip or xz, whatever its name says: the
compression is read from the file's first bytes (a profiler may write ``.json`` that is gzipped, and a
copied file may lose its suffix). Shared by the two Kineto readers, kineto_events and kineto_raw."""
from __future__ import annotations

import gzip
import lzma
from pathlib import Path
from typing import IO

from vllm_w2ext.analysis.readers.errors import UnreadableTrace

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"


def open_kineto_trace(path: str | Path) -> IO[bytes]:
    """The decompressed byte stream of the trace at ``path``; UnreadableTrace if there is no file."""
    p = Path(path)
    if not p.is_file():
        raise UnreadableTrace(f"trace file not found: {p}")
    with open(p, "rb") as f:
        magic = f.read(len(XZ_MAGIC))
    if magic.startswith(GZIP_MAGIC):
        return gzip.open(p, "rb")
    if magic == XZ_MAGIC:
        return lzma.open(p, "rb")
    return open(p, "rb")
