"""Reader of the plugin's per-process Perfetto span files (``VLLM_W2EXT_TRACE_DIR/w2ext-<pid>.pftrace``).

The writer (``vllm_w2ext/telemetry/trace_file.py``) appends length-delimited ``Trace.packet`` records:
one process ``TrackDescriptor``, child tracks (one per role for ranges that nest on a thread, lanes
named ``<span> #<i>`` for overlapping ranges), and a ``TYPE_SLICE_BEGIN`` / ``TYPE_SLICE_END`` pair
per range, timestamps from ``time.time_ns()``, debug annotations ``step`` and, on request slices,
``vllm.request.id``. A file cut anywhere (SIGKILL mid-write) yields every
complete packet before the cut; a begin whose end was lost is counted, not returned. A file that is not
a Perfetto protobuf trace raises UnreadableTrace."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import TracePacket, TrackEvent

from vllm_w2ext.analysis.readers.errors import UnreadableTrace
from vllm_w2ext.vocab import ENGINE, FRONT, ROLE_BY_SPAN_PREFIX, TRACE_FILE_RE, TRACE_STEP_ARG, WORKER

_BEGIN, _END = TrackEvent.Type.TYPE_SLICE_BEGIN, TrackEvent.Type.TYPE_SLICE_END
ROLE_NAMES = {FRONT: "front end", ENGINE: "EngineCore", WORKER: "worker"}     # as people call them


@dataclass(eq=False)          # identity: slices are dict keys
class Slice:
    name: str
    start_ns: int
    end_ns: int
    step: int            # engine step id, -1 when none
    role: str            # frontend / engine_core / worker
    track: str           # track name in the span file: a role ("worker") or a lane ("vllm.request #0")
    args: dict = field(default_factory=dict)    # the begin event's debug annotations (step included)


@dataclass
class SpanFile:
    path: str
    pid: int
    process_name: str
    slices: list[Slice] = field(default_factory=list)
    packets: int = 0
    truncated_bytes: int = 0     # bytes after the last complete packet (a cut file)
    open_slices: int = 0         # begins whose end was never written

    @property
    def roles(self) -> list[str]:
        return sorted({s.role for s in self.slices})


def _role_of(name: str, track: str) -> str:
    """A slice's role: its track's when the track is a role, else from its name's prefix."""
    if track in ROLE_NAMES:
        return track
    return next((role for prefix, role in ROLE_BY_SPAN_PREFIX if name.startswith(prefix)), FRONT)


def _value(a):
    kind = a.WhichOneof("value")
    return getattr(a, kind) if kind in ("int_value", "uint_value", "double_value", "bool_value",
                                         "string_value") else None


def iter_packets(data: bytes):
    """(packet, end offset) of each complete ``Trace.packet`` record; stops at a cut record."""
    i, n_data = 0, len(data)
    while i < n_data:
        if data[i] != 0x0A:
            raise UnreadableTrace(f"not a Perfetto protobuf trace: unexpected tag 0x{data[i]:02x} at byte {i}")
        j, n, shift = i + 1, 0, 0
        while True:
            if j >= n_data:
                return
            b = data[j]
            j += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if j + n > n_data:
            return
        yield TracePacket.FromString(data[j:j + n]), j + n
        i = j + n


def read_span_file(path: str) -> SpanFile:
    with open(path, "rb") as f:
        data = f.read()
    m = TRACE_FILE_RE.match(os.path.basename(path))
    sf = SpanFile(path=path, pid=int(m.group(1)) if m else 0, process_name="")
    tracks: dict[int, str] = {}
    open_: dict[tuple[int, int], list[tuple[int, str, int]]] = {}    # (seq, track) -> begins
    end = 0
    for p, end in iter_packets(data):
        sf.packets += 1
        if p.HasField("track_descriptor"):
            td = p.track_descriptor
            if td.HasField("process"):
                sf.pid = td.process.pid or sf.pid
                sf.process_name = td.process.process_name
            tracks[td.uuid] = td.name
            continue
        if not p.HasField("track_event"):
            continue
        ev, key = p.track_event, (p.trusted_packet_sequence_id, p.track_event.track_uuid)
        if ev.type == _BEGIN:
            args = {a.name: _value(a) for a in ev.debug_annotations}
            open_.setdefault(key, []).append((p.timestamp, ev.name, args))
        elif ev.type == _END and open_.get(key):
            start, name, args = open_[key].pop()
            track = tracks.get(key[1], "")
            step = args.get(TRACE_STEP_ARG, -1)
            sf.slices.append(Slice(name, start, p.timestamp, step if isinstance(step, int) else -1,
                                   _role_of(name, track), track, args))
    sf.truncated_bytes = len(data) - end if sf.packets else len(data)
    sf.open_slices = sum(len(v) for v in open_.values())
    return sf
