"""Writing the merged trace: the profiler's events first (their raw text, re-serialized only where
the merge changes them: profiler_events), then ours, then the profiler's other top-level keys and
``w2extMerge`` (what the merge measured and read). Streams: memory does not grow with the traces."""
from __future__ import annotations

import gzip
import json
import os
from typing import IO, Iterator

from vllm_w2ext.analysis.merge.clock import ns_to_us
from vllm_w2ext.analysis.merge.profiler_index import ProfilerIndex, is_global_instant
from vllm_w2ext.analysis.merge.tracks import NAMING_METADATA
from vllm_w2ext.analysis.readers.kineto_raw import KinetoRawReader


def profiler_events(ix: ProfilerIndex, shift_ns: int) -> Iterator[str]:
    """Raw event texts of a profiler trace, re-serialized only when changed: another time base, a GPU
    activity (or its ac2g flow end) moved to a lane of its stream, a global instant moved onto the
    profiled process, a bookkeeping event moved to the profiler's own process (``PROFILER_PID``), an
    ac2g flow id shifted (the second and later trace of a merge: ``ProfilerIndex.renumber``). The
    profiler's naming metadata is left out (tracks.layout replaces it)."""
    host = ix.cpu_pids[0] if ix.cpu_pids else None
    for n, (raw, e) in enumerate(KinetoRawReader(ix.path)):
        ph = e.get("ph")
        if ph == "M" and e.get("name") in NAMING_METADATA:
            continue
        changed = False
        if n in ix.moved:
            e["tid"], changed = ix.moved[n], True
        elif ph == "f" and e.get("cat") == "ac2g" and ix.moved_flows:
            try:
                lane = ix.moved_flows.get((e.get("id"), float(e.get("ts"))))
            except (TypeError, ValueError):
                lane = None
            if lane and (e.get("pid"), e.get("tid")) == lane[:2]:
                e["tid"], changed = lane[2], True
        elif is_global_instant(e):
            if host is not None and e.get("pid") != host:
                e["pid"], e["tid"], changed = host, host, True
        elif ix.remap:
            try:
                to = ix.remap.get((e.get("pid"), e.get("tid")))
            except TypeError:                 # an unhashable pid or tid: left as it is
                to = None
            if to:
                e["pid"], e["tid"] = to
                changed = True
        if ix.flow_id_shift and e.get("cat") == "ac2g" and ph in ("s", "t", "f") and type(e.get("id")) is int:
            e["id"] += ix.flow_id_shift
            changed = True
        if shift_ns and "ts" in e:
            e["ts"] = ns_to_us(round(float(e["ts"]) * 1000) + shift_ns)
            changed = True
        yield json.dumps(e) if changed else raw


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
