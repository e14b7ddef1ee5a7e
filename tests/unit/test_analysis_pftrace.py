"""The span-file reader (readers/pftrace.py) on a small Perfetto file built here with the perfetto
protobuf classes, the way the plugin writes one: length-delimited ``Trace.packet`` records."""
from __future__ import annotations

import pytest
from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import DebugAnnotation, TracePacket, TrackEvent

from vllm_w2ext.analysis.readers.errors import UnreadableTrace
from vllm_w2ext.analysis.readers.pftrace import iter_packets, read_span_file
from vllm_w2ext.vocab import ENGINE, FRONT, WORKER, Attr, Span

SEQ, PROC, WORKER_TRACK, LANE = 1, 100, 101, 102


def frame(p: TracePacket) -> bytes:
    data = p.SerializeToString()
    n, varint = len(data), bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        varint.append(b | (0x80 if n else 0))
        if not n:
            return b"\x0a" + bytes(varint) + data


def track(uuid: int, name: str, pid: int | None = None) -> bytes:
    p = TracePacket(trusted_packet_sequence_id=SEQ)
    p.track_descriptor.uuid = uuid
    if pid is not None:
        p.track_descriptor.process.pid = pid
        p.track_descriptor.process.process_name = "vLLM test"
    else:
        p.track_descriptor.parent_uuid = PROC
        p.track_descriptor.name = name
    return frame(p)


def begin(ts: int, track_uuid: int, name: str, **annotations) -> bytes:
    p = TracePacket(trusted_packet_sequence_id=SEQ, timestamp=ts)
    p.track_event.type, p.track_event.track_uuid, p.track_event.name = TrackEvent.TYPE_SLICE_BEGIN, track_uuid, name
    for k, v in annotations.items():
        p.track_event.debug_annotations.append(
            DebugAnnotation(name=k, int_value=v) if isinstance(v, int) else DebugAnnotation(name=k, string_value=v))
    return frame(p)


def end(ts: int, track_uuid: int) -> bytes:
    p = TracePacket(trusted_packet_sequence_id=SEQ, timestamp=ts)
    p.track_event.type, p.track_event.track_uuid = TrackEvent.TYPE_SLICE_END, track_uuid
    return frame(p)


UNFINISHED = begin(4_000, LANE, Span.ENGINE_REQUEST)               # its end was never written
FILE = (track(PROC, "", pid=4321) + track(WORKER_TRACK, WORKER) + track(LANE, f"{Span.REQUEST} #0")
        + begin(1_000, WORKER_TRACK, Span.WORKER_EXECUTE, step=7)
        + begin(1_100, WORKER_TRACK, Span.FORWARD, step=7) + end(1_900, WORKER_TRACK)
        + end(2_000, WORKER_TRACK)
        + begin(500, LANE, Span.REQUEST, **{Attr.REQUEST_ID: "req-1"}) + end(3_000, LANE)
        + UNFINISHED)


def test_slices_roles_and_annotations(tmp_path):
    path = tmp_path / "w2ext-4321.pftrace"
    path.write_bytes(FILE)
    sf = read_span_file(str(path))
    assert (sf.pid, sf.process_name, sf.packets, sf.truncated_bytes, sf.open_slices) == (4321, "vLLM test", 10, 0, 1)
    got = [(s.name, s.start_ns, s.end_ns, s.step, s.role, s.track) for s in sf.slices]
    assert got == [
        (Span.FORWARD, 1_100, 1_900, 7, WORKER, WORKER),                  # inner slice ends first
        (Span.WORKER_EXECUTE, 1_000, 2_000, 7, WORKER, WORKER),
        (Span.REQUEST, 500, 3_000, -1, FRONT, f"{Span.REQUEST} #0"),      # a lane: role from the name
    ]
    assert sf.slices[2].args == {Attr.REQUEST_ID: "req-1"} and sf.slices[0].args == {"step": 7}
    assert sf.roles == [FRONT, WORKER]


def test_role_from_name_prefix_on_a_lane(tmp_path):
    path = tmp_path / "w2ext-1.pftrace"
    path.write_bytes(track(PROC, "", pid=1) + track(LANE, "lane") + begin(10, LANE, Span.STEP, step=3) + end(20, LANE))
    [s] = read_span_file(str(path)).slices
    assert (s.role, s.step) == (ENGINE, 3)


def test_cut_file_keeps_complete_packets(tmp_path):
    path = tmp_path / "w2ext-99.pftrace"
    path.write_bytes(FILE[:-3])                       # SIGKILL in the middle of the last packet
    sf = read_span_file(str(path))
    assert sf.packets == 9 and len(sf.slices) == 3 and sf.open_slices == 0
    assert sf.truncated_bytes == len(UNFINISHED) - 3


def test_pid_from_the_file_name_when_no_process_track(tmp_path):
    path = tmp_path / "w2ext-77.pftrace"
    path.write_bytes(track(LANE, "lane"))
    assert read_span_file(str(path)).pid == 77


def test_not_a_perfetto_file(tmp_path):
    path = tmp_path / "w2ext-5.pftrace"
    path.write_bytes(b'{"traceEvents": []}')
    with pytest.raises(UnreadableTrace, match="not a Perfetto protobuf trace"):
        read_span_file(str(path))
    first = track(PROC, "", pid=4321)
    assert [end_ for _, end_ in iter_packets(first + first[:2])] == [len(first)]     # a cut length prefix
