"""The fast Kineto reader, for ``vllm-w2ext analyze``: the events of a Kineto / Chrome JSON trace
(plain, .gz or .xz) as typed structs, streamed in bounded memory. Its sibling kineto_raw.py keeps each
event's raw text for ``merge``; this one keeps only the fields the analyzer reads.

How: the file is read in CHUNK-byte blocks; each block of the ``traceEvents`` array is cut after its last
complete event and decoded by msgspec into typed ``Event`` structs (the fields the analyzer needs; of
``args`` only the three ids it reads; msgspec skips every other field in C). A cut is taken at a ``}``
followed by a comma and accepted only if ``[`` + text + ``]`` decodes: a cut inside a string or a nested
object cannot decode, so every accepted block is a run of whole events. Memory: one block plus its
decoded events.

Why not ijson alone: measured on the real H100 trace (56 MB, 160k events, this 2-core CPU, idle):
ijson ``items`` (yajl2_c) 0.65 s, ``json.loads`` 2.0 s, msgspec untyped 0.8 s, msgspec typed 0.14 s
(benchmarks/analyze_vs_hta.py re-measures this: ``parser`` in benchmarks/results/cpu/analyze_vs_hta.json).
Compression is detected from the file's first bytes, not its name (kineto_file.py). A file cut short (a
killed profiler) yields its complete events and sets ``truncated``; a file that is not a JSON trace
raises UnreadableTrace.
"""
from __future__ import annotations

import gzip
import lzma
import re
from pathlib import Path
from typing import IO, Iterator, Union

import msgspec

from vllm_w2ext.analysis.readers.errors import UnreadableTrace
from vllm_w2ext.analysis.readers.kineto_file import open_kineto_trace

CHUNK = 4 << 20
MAX_BLOCK = 256 << 20
_ARRAY_START = re.compile(rb'"traceEvents"\s*:\s*\[')


class Args(msgspec.Struct, gc=False):
    correlation: Union[int, None] = None
    device: Union[int, None] = None
    stream: Union[int, None] = None


NO_ARGS = Args()


class Event(msgspec.Struct, gc=False):
    ph: str = ""
    cat: str = ""
    name: str = ""
    ts: float = 0.0
    dur: float = 0.0
    pid: Union[int, str, None] = None
    tid: Union[int, str, None] = None
    args: Union[Args, None] = None


_events = msgspec.json.Decoder(list[Event])


def _loose(block: bytes) -> list[Event]:
    """Decode a block whose events do not all fit the typed schema (odd field types): one by one."""
    out = []
    for d in msgspec.json.decode(block):
        if isinstance(d, dict):
            try:
                e = msgspec.convert({k: d[k] for k in Event.__struct_fields__ if k in d and k != "args"},
                                    Event, strict=False)
            except msgspec.ValidationError:
                continue
            try:
                e.args = msgspec.convert(d.get("args"), Args, strict=False)
            except msgspec.ValidationError:
                pass
            out.append(e)
    return out


def _decode_block(body: bytes) -> list[Event] | None:
    block = b"[" + body + b"]"
    try:
        return _events.decode(block)
    except msgspec.ValidationError:
        try:
            return _loose(block)
        except msgspec.DecodeError:
            return None
    except msgspec.DecodeError:
        return None


def _decode_prefix(buf: bytes, end: int, max_tries: int | None = None):
    """(events, index of the comma after them) for the longest prefix of ``buf`` that ends at an event
    boundary before ``end`` and decodes; None if there is none (within ``max_tries`` boundaries)."""
    tries = 0
    while max_tries is None or tries < max_tries:
        cut, comma = _last_boundary(buf, end)
        if cut < 0:
            return None
        events = _decode_block(buf[:cut + 1])
        if events is not None:
            return events, comma
        end, tries = cut, tries + 1
    return None


def _last_boundary(buf: bytes, end: int) -> tuple[int, int]:
    """Positions of the last ``}`` followed (after white space) by ``,`` before ``end``: (brace, comma)."""
    while True:
        comma = buf.rfind(b",", 0, end)
        if comma < 0:
            return -1, -1
        j = comma - 1
        while j >= 0 and buf[j] in b" \t\r\n":
            j -= 1
        if j >= 0 and buf[j] == 0x7D:       # "}"
            return j, comma
        end = comma


class KinetoEventReader:
    """``for e in KinetoEventReader(path)``: every element of ``traceEvents`` as an Event, in file order.
    ``header`` holds the top-level keys written before ``traceEvents`` (Kineto: deviceProperties,
    distributedInfo, ...); ``truncated`` is set when the file ends inside the array."""

    def __init__(self, path: str | Path):
        self.path = path
        self.header: dict = {}
        self.truncated = False
        self.parser = f"msgspec {msgspec.__version__}, {CHUNK >> 20} MB blocks"

    def __iter__(self) -> Iterator[Event]:
        for block in self.blocks():
            yield from block

    def blocks(self) -> Iterator[list[Event]]:
        """The events in runs of whole events (one per CHUNK of the file): the fast way to iterate."""
        with open_kineto_trace(self.path) as f:
            try:
                yield from self._blocks(f)
            except (EOFError, lzma.LZMAError, gzip.BadGzipFile) as e:
                self.truncated = True
                self.parser += f" (compressed stream ended early: {e})"

    def _blocks(self, f: IO[bytes]) -> Iterator[list[Event]]:
        buf = f.read(CHUNK)
        m = _ARRAY_START.search(buf)
        while m is None:
            more = f.read(CHUNK)
            if not more or len(buf) > MAX_BLOCK:
                raise UnreadableTrace(f"{self.path}: not a JSON trace (no \"traceEvents\" array)")
            buf += more
            m = _ARRAY_START.search(buf)
        head = buf[:m.start()].rstrip().rstrip(b",")
        try:
            self.header = msgspec.json.decode(head + b"}") if head.lstrip().startswith(b"{") else {}
        except msgspec.DecodeError:
            self.header = {}
        buf = buf[m.end():]
        eof = False
        while True:
            if not eof:
                more = f.read(CHUNK)
                eof = not more
                buf += more
            if eof:
                yield from self._tail(buf)
                return
            got = _decode_prefix(buf, len(buf), max_tries=16)
            if got is not None:
                yield got[0]
                buf = buf[got[1] + 1:]
            if len(buf) > MAX_BLOCK:
                raise UnreadableTrace(f"{self.path}: no event boundary in {MAX_BLOCK >> 20} MB of traceEvents")

    def _tail(self, buf: bytes) -> Iterator[list[Event]]:
        end = len(buf)
        for _ in range(64):
            end = buf.rfind(b"]", 0, end)
            if end < 0:
                break
            body = buf[:end].strip()
            events = _decode_block(body) if body else []
            if events is not None:
                yield events
                return
        # no closing bracket that decodes: a file cut short; keep its complete events
        self.truncated = True
        got = _decode_prefix(buf, len(buf))
        if got is not None:
            yield got[0]
