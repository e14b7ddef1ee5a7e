"""Per-process Perfetto trace file: every finished range as a slice, appended as it is exported.

A Perfetto trace is a sequence of length-delimited ``TracePacket`` records (field 1 of ``Trace``), so
appending complete packets keeps the file valid at every moment: a process killed with SIGKILL leaves
a file that opens, holding everything written before the kill. Tracks: one per process, one per role
for ranges that nest on a thread, and "lanes" for ranges that overlap (requests, executor futures),
assigned greedily so slices on a track never overlap. Debug annotations: the step id and the span's
scalar attributes (the request id, which ``merge`` uses to link a front-end request to its EngineCore
request; batch, device-idle and request-phase attributes, which ``explain`` reads). The file stops growing at
``VLLM_W2EXT_TRACE_MAX_MB`` (further ranges are counted as dropped). A write that fails (disk full,
I/O error) or writes only part of a batch is cut back to the last whole packet; the file then stops
growing, the error is logged once and every later range is counted as dropped: the trace stays valid
and vLLM never sees the error."""
from __future__ import annotations

import errno
import logging
import os
import random

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import DebugAnnotation, TracePacket, TrackEvent

from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.telemetry.sink import Sink
from vllm_w2ext.telemetry import identity
from vllm_w2ext.vocab import ENGINE, FRONT, TRACE_STEP_ARG, WORKER, Attr, trace_file_name

log = logging.getLogger("vllm_w2ext")
_BEGIN, _END = TrackEvent.Type.TYPE_SLICE_BEGIN, TrackEvent.Type.TYPE_SLICE_END


def process_label(roles: dict, first_role: str, pid: int) -> str:
    """The process track's name: its roles with engine index and ranks, e.g. ``vLLM worker engine 1 rank 0
    TP0 PP0 DP1 (pid 12)``, ``vLLM front end API server 1 (pid 9)`` (what ``explain`` and people read to
    tell engines and ranks apart)."""
    parts = []
    for role in (FRONT, ENGINE, WORKER):
        if role not in roles and role != first_role:
            continue
        a = roles.get(role, {})
        if role == FRONT:
            n = a.get(identity.API_SERVER_INDEX)          # one of several API servers (vllm serve with DP)
            parts.append("front end" if n is None or a.get(Attr.RANK) is None else f"front end API server {n}")
        elif role == ENGINE:
            parts.append(f"EngineCore engine {a.get(Attr.ENGINE_INDEX, 0)}")
        else:
            label = f"worker engine {a.get(Attr.ENGINE_INDEX, 0)} rank {a.get(Attr.RANK, 0)}"
            for key, tag in ((Attr.TP_RANK, "TP"), (Attr.PP_RANK, "PP"), (Attr.DP_RANK, "DP")):
                if a.get(key) is not None:
                    label += f" {tag}{a[key]}"
            parts.append(label)
    return f"vLLM {' + '.join(parts)} (pid {pid})"


def annotations(attrs: dict) -> list:
    """The span's scalar attributes as debug annotations (lists, e.g. GPU timings, stay OTLP-only)."""
    out = []
    for k, v in attrs.items():
        if isinstance(v, bool):
            out.append(DebugAnnotation(name=k, bool_value=v))
        elif isinstance(v, int):
            out.append(DebugAnnotation(name=k, int_value=v))
        elif isinstance(v, float):
            out.append(DebugAnnotation(name=k, double_value=v))
        elif isinstance(v, str):
            out.append(DebugAnnotation(name=k, string_value=v))
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def frame(packet: TracePacket) -> bytes:
    """One ``Trace.packet`` field: tag (field 1, length-delimited) + length + bytes."""
    data = packet.SerializeToString()
    return b"\x0a" + _varint(len(data)) + data


class TraceFileSink(Sink):
    """The trace file of the vLLM process ``pid`` (written by its export process by default)."""
    name = "trace_file"

    def __init__(self, directory: str, max_bytes: int, pid: int | None = None):
        os.makedirs(directory, exist_ok=True)
        self.pid = os.getpid() if pid is None else pid
        self.path = os.path.join(directory, trace_file_name(self.pid))
        self.max_bytes = max_bytes
        self.size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        self.f = open(self.path, "ab", buffering=0)
        self.seq = random.getrandbits(31) or 1
        self.dropped = 0
        self.failed: str | None = None          # why writing stopped (disk full, I/O error)
        self._tracks: dict[tuple, int] = {}
        self._lanes: dict[tuple[str, str], list[int]] = {}      # (role, name) -> last end per lane
        self._proc_uuid = (self.pid << 16) | 1

    def _packet(self, **kw) -> TracePacket:
        return TracePacket(trusted_packet_sequence_id=self.seq, **kw)

    def _track(self, key: tuple, name: str, out: bytearray) -> int:
        uuid = self._tracks.get(key)
        if uuid is None:
            if not self._tracks:
                p = self._packet()
                p.track_descriptor.uuid = self._proc_uuid
                p.track_descriptor.process.pid = self.pid
                p.track_descriptor.process.process_name = process_label(identity.roles(), key[0], self.pid)
                out += frame(p)
                self._tracks[("process",)] = self._proc_uuid
            uuid = self._proc_uuid + len(self._tracks) + 1
            p = self._packet()
            p.track_descriptor.uuid = uuid
            p.track_descriptor.parent_uuid = self._proc_uuid
            p.track_descriptor.name = name
            out += frame(p)
            self._tracks[key] = uuid
        return uuid

    def _track_for(self, r: Range, out: bytearray) -> int:
        if r.nested:
            return self._track((r.role, "thread"), r.role, out)
        lanes = self._lanes.setdefault((r.role, r.name), [])
        for i, last_end in enumerate(lanes):
            if last_end <= r.start_ns:
                lanes[i] = r.end_ns
                break
        else:
            lanes.append(r.end_ns)
            i = len(lanes) - 1
        return self._track((r.role, r.name, i), f"{r.name} #{i}", out)

    def consume(self, ranges: list[Range]) -> None:
        out = bytearray()
        for r in ranges:
            track = self._track_for(r, out)
            begin = self._packet(timestamp=r.start_ns)
            ev = begin.track_event
            ev.type, ev.track_uuid, ev.name = _BEGIN, track, r.name
            if r.step >= 0:
                ev.debug_annotations.append(DebugAnnotation(name=TRACE_STEP_ARG, int_value=r.step))
            if r.attrs:
                ev.debug_annotations.extend(annotations(r.attrs))
            end = self._packet(timestamp=r.end_ns)
            end.track_event.type, end.track_event.track_uuid = _END, track
            out += frame(begin) + frame(end)
        if self.failed or self.size + len(out) > self.max_bytes:
            self.dropped += len(ranges)
            return
        self._append(bytes(out), len(ranges))

    def _append(self, data: bytes, n_ranges: int) -> None:
        """Write whole packets only: the file is valid after every call, also when the disk fills."""
        try:
            written = os.write(self.f.fileno(), data)
            if written == len(data):
                self.size += written
                return
            err = OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        except OSError as e:
            err = e
        self._stop_writing(err)
        self.dropped += n_ranges

    def _stop_writing(self, err: OSError) -> None:
        try:
            os.ftruncate(self.f.fileno(), self.size)     # drop a partly written packet
        except OSError:
            pass
        self.failed = err.strerror or repr(err)
        log.warning("vllm_w2ext: trace file %s stopped at %d bytes: %s; further ranges are dropped and "
                    "counted in vllm_w2ext_spans_dropped_total (VLLM_W2EXT_TRACE_DIR)", self.path, self.size,
                    self.failed)

    def flush(self, timeout_s: float) -> None:
        if self.failed:
            return
        try:
            os.fsync(self.f.fileno())
        except OSError as e:            # a full or failing disk may refuse the sync too
            self._stop_writing(e)

    def shutdown(self, timeout_s: float) -> None:
        try:
            self.f.close()
        except OSError:
            pass
