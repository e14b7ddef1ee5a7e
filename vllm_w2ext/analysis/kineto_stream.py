"""Stream the events of a Kineto / Chrome JSON trace (plain, .gz or .xz) one at a time, in bounded memory.

Parser: ijson with its yajl2 C backend (``ijson.items(f, "traceEvents.item")``), measured on the real H100
trace (56 MB, 160k events, 2-core CPU): ijson 0.65 s, msgspec typed decode of the whole file 0.93 s (and
not streaming), ``json.load`` 2.0 s. See benchmarks/analyze_vs_hta.py, which re-measures this.
Compression is detected from the file's first bytes, not its name.
"""
from __future__ import annotations

import gzip
import io
import lzma
from pathlib import Path
from typing import IO, Iterator

READ_BUFFER = 1 << 20


class TraceError(ValueError):
    """The trace file cannot be read as a Kineto/Chrome JSON trace."""


def _ijson():
    try:
        import ijson
    except ImportError as e:  # pragma: no cover - dependency missing
        raise TraceError("vllm-w2ext analyze needs the 'ijson' package (pip install ijson)") from e
    return ijson


def open_trace(path: str | Path) -> IO[bytes]:
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"trace file not found: {p}")
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic[:2] == b"\x1f\x8b":
        return io.BufferedReader(gzip.open(p, "rb"), READ_BUFFER)
    if magic == b"\xfd7zXZ\x00":
        return io.BufferedReader(lzma.open(p, "rb"), READ_BUFFER)
    return open(p, "rb", buffering=READ_BUFFER)


def backend() -> str:
    return f"ijson {_ijson().backend}"


def read_header(path: str | Path) -> dict:
    """Top-level keys written before ``traceEvents`` (Kineto: deviceProperties, distributedInfo, ...);
    stops at ``traceEvents`` so it reads only the head of the file."""
    ijson = _ijson()
    header: dict = {}
    key, builder = None, None
    with open_trace(path) as f:
        try:
            for prefix, event, value in ijson.parse(f, use_float=True):
                if prefix == "" and event == "map_key":
                    if builder is not None:
                        header[key] = builder.value
                    if value == "traceEvents":
                        break
                    key, builder = value, ijson.ObjectBuilder()
                elif builder is not None and prefix != "":
                    builder.event(event, value)
        except ijson.JSONError as e:
            raise TraceError(f"{path}: not a JSON trace ({e})") from e
    return header


def iter_events(path: str | Path) -> Iterator[dict]:
    """Every element of ``traceEvents``, in file order, one dict at a time."""
    ijson = _ijson()
    with open_trace(path) as f:
        try:
            yield from ijson.items(f, "traceEvents.item", use_float=True)
        except ijson.JSONError as e:
            raise TraceError(f"{path}: not a valid JSON trace ({e})") from e
        except (EOFError, lzma.LZMAError, gzip.BadGzipFile, OSError) as e:
            raise TraceError(f"{path}: truncated or corrupt compressed trace ({e})") from e
