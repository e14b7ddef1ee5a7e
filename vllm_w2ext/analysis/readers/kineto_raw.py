"""The byte-exact Kineto reader, for ``vllm-w2ext merge``: the events of a torch-profiler (Kineto)
Chrome-JSON trace (``.json``, ``.json.gz``, ``.json.xz``, detected from the first bytes) as (raw text,
parsed dict).

Its sibling kineto_events.py is faster (msgspec, typed) but keeps only the fields ``analyze`` reads;
merge must copy the profiler's events byte for byte, so this reader hands back each event's raw text
as well. The other top-level keys (``baseTimeNanoseconds``, ``distributedInfo``, ``deviceProperties``,
...) are collected on the side, so a trace larger than memory can be indexed and then copied event by
event. Each value is parsed by the C JSON decoder (``JSONDecoder.raw_decode``) from a sliding text
buffer. A file cut mid-event (a killed profiler, a partial copy) ends the stream at the last complete
event and sets ``truncated``; a file that is not a JSON trace raises UnreadableTrace."""
from __future__ import annotations

import gzip
import io
import json
import lzma
from typing import IO, Iterator

from vllm_w2ext.analysis.readers.errors import UnreadableTrace
from vllm_w2ext.analysis.readers.kineto_file import open_kineto_trace

_WS = " \t\n\r"
_decode = json.JSONDecoder().raw_decode


class _EndedEarly(Exception):
    """The text ends inside the JSON: caught by the reader, which then sets ``truncated``."""


def open_text(path: str) -> IO[str]:
    """Text stream of a plain, gzip or xz file (by content, not by name; kineto_file.py)."""
    return io.TextIOWrapper(open_kineto_trace(path), encoding="utf-8")


class KinetoRawReader:
    """``for raw, event in KinetoRawReader(path)``: every element of ``traceEvents`` in file order.
    ``meta`` holds the other top-level keys, ``events`` the count, ``truncated`` is set when the
    file ends inside the JSON; all three are filled as the iteration goes."""

    def __init__(self, path: str, chunk_chars: int = 4 << 20):
        self.path = path
        self.chunk = chunk_chars
        self.meta: dict = {}          # top-level keys other than traceEvents
        self.truncated = False
        self.events = 0

    # -- buffer -----------------------------------------------------------------------------
    def _fill(self) -> bool:
        data = self._f.read(self.chunk)
        if not data:
            self._eof = True
            return False
        self._s = self._s[self._i:] + data
        self._i = 0
        return True

    def _peek(self) -> str:
        while True:
            s, i = self._s, self._i
            while i < len(s) and s[i] in _WS:
                i += 1
            self._i = i
            if i < len(s):
                return s[i]
            if not self._fill():
                raise _EndedEarly(f"{self.path}: ends before the JSON does")

    def _expect(self, chars: str) -> str:
        c = self._peek()
        if c not in chars:
            raise UnreadableTrace(f"{self.path}: not a Chrome/Kineto JSON trace (expected one of {chars!r}, "
                             f"got {c!r} near character {self._i})")
        self._i += 1
        return c

    def _value(self) -> tuple[object, str]:
        self._peek()
        while True:
            try:
                v, j = _decode(self._s, self._i)
            except json.JSONDecodeError:
                if self._eof or not self._fill():
                    raise _EndedEarly(f"{self.path}: cut inside a JSON value")
                continue
            if j >= len(self._s) and not self._eof and self._fill():
                continue               # a number at the buffer's end may go on in the next chunk
            raw = self._s[self._i:j]
            self._i = j
            return v, raw

    # -- document ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[str, dict]]:
        """(raw text, event) for each element of ``traceEvents``; fills ``meta`` on the way."""
        self.meta, self.truncated, self.events = {}, False, 0
        self._f, self._s, self._i, self._eof = open_text(self.path), "", 0, False
        try:
            yield from self._document()
        except (_EndedEarly, EOFError, lzma.LZMAError, gzip.BadGzipFile):
            self.truncated = True
        finally:
            self._f.close()

    def _document(self):
        self._expect("{")
        if self._peek() == "}":
            return
        while True:
            key, _ = self._value()
            self._expect(":")
            if key == "traceEvents":
                yield from self._events()
            else:
                self.meta[key], _ = self._value()
            if self._expect(",}") == "}":
                return

    def _events(self):
        self._expect("[")
        if self._peek() == "]":
            self._i += 1
            return
        while True:
            ev, raw = self._value()
            self.events += 1
            yield raw, ev
            if self._expect(",]") == "]":
                return
