"""Writing the merged trace: the profiler's events first (their raw text, re-serialized only when a
trace's time base differs from the output's), then ours, then the profiler's other top-level keys and
``w2extMerge`` (what the merge measured and read). Streams: memory does not grow with the traces."""
from __future__ import annotations

import gzip
import json
import os
from typing import IO, Iterator

from vllm_w2ext.analysis.merge.clock import ns_to_us
from vllm_w2ext.analysis.merge.profiler_index import ProfilerIndex
from vllm_w2ext.analysis.readers.kineto_raw import KinetoRawReader


def profiler_events(ix: ProfilerIndex, shift_ns: int) -> Iterator[str]:
    """Raw event texts of a profiler trace, re-serialized only when its time base differs."""
    for raw, e in KinetoRawReader(ix.path):
        if shift_ns and "ts" in e:
            e["ts"] = ns_to_us(round(float(e["ts"]) * 1000) + shift_ns)
            yield json.dumps(e)
        else:
            yield raw


def _write_events(f: IO[str], profs: list[ProfilerIndex], ours: list[dict], base_ns: int) -> int:
    """The ``traceEvents`` elements, comma-separated; how many."""
    n = 0
    for ix in profs:
        for raw in profiler_events(ix, ix.base_ns - base_ns):
            f.write(",\n" if n else "")
            f.write(raw)
            n += 1
    for e in ours:
        f.write(",\n" if n else "")
        f.write(json.dumps(e))
        n += 1
    return n


def write_merged(out_path: str, profs: list[ProfilerIndex], ours: list[dict], base_ns: int, info: dict) -> None:
    """Write the merged trace (gzip when ``out_path`` ends in .gz). ``info`` gets the event counts
    (``events``, ``added_events``) before it is written into the file as ``w2extMerge``."""
    meta = dict(profs[0].meta) if profs else {"displayTimeUnit": "ms"}
    meta["baseTimeNanoseconds"] = base_ns
    opener = gzip.open if str(out_path).endswith(".gz") else open
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with opener(out_path, "wt", encoding="utf-8", **({"compresslevel": 5} if opener is gzip.open else {})) as f:
        f.write('{"traceEvents": [\n')
        n = _write_events(f, profs, ours, base_ns)
        f.write("\n]")
        info["events"] = n
        info["added_events"] = len(ours)
        for k, v in meta.items():
            if k != "traceEvents":
                f.write(f",\n{json.dumps(k)}: {json.dumps(v)}")
        f.write(f',\n"w2extMerge": {json.dumps(info)}\n}}\n')
