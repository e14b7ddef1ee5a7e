"""The named wire formats: a hot-path range list reads back as the same RangeRecord and Range, also
after pickling (what crosses the pipe to the export process)."""
import pickle

from vllm_w2ext.steps.facts import Stamp
from vllm_w2ext.telemetry import wire
from vllm_w2ext.telemetry.ranges import Range


def test_open_range_is_in_record_order():
    r = wire.open_range("engine.step", "engine_core", 1, 2, 0, 10, 7, {"k": 1}, True)
    r[wire.END] = 20
    rec = wire.RangeRecord._make(pickle.loads(pickle.dumps(r)))
    assert rec.name == "engine.step" and rec.trace_id == 1 and rec.span_id == 2 and rec.start_ns == 10
    assert rec.end_ns == 20 and rec.step == 7 and rec.attrs == {"k": 1} and rec.nested is True
    assert rec.links is None and rec.error is None and rec.data is None
    back = Range.from_record(r)
    assert (back.name, back.role, back.step, back.end_ns, back.context) == ("engine.step", "engine_core", 7, 20, (1, 2))


def test_field_positions_follow_the_record():
    assert wire.RangeRecord._fields.index("data") == wire.DATA
    assert wire.RangeRecord._fields.index("end_ns") == wire.END
    assert len(wire.open_range("n", "r", 1, 2, 3, 4, 5, None, False)) == len(wire.RangeRecord._fields)


def test_stamp_pickles_by_name():
    s = Stamp(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    assert pickle.loads(pickle.dumps(s)).schedule_end == 5


def test_process_track_names_say_engine_and_rank():
    from vllm_w2ext.telemetry.trace_file import process_label
    roles = {"engine_core": {"vllm.engine_index": 1},
             "worker": {"vllm.rank": 0, "vllm.tp_rank": 0, "vllm.engine_index": 1, "vllm.dp_rank": 1}}
    assert process_label(roles, "engine_core", 7) == \
        "vLLM EngineCore engine 1 + worker engine 1 rank 0 TP0 DP1 (pid 7)"
    assert process_label({}, "frontend", 3) == "vLLM front end (pid 3)"


def test_recorder_ranges_are_in_record_order():
    from vllm_w2ext.telemetry.recording import Recorder
    rec = Recorder(10, None)
    outer = rec.begin("engine.step", "engine_core", step=4, attrs={"a": 1})
    inner = rec.begin("engine.schedule", "engine_core")
    free = rec.begin("engine.execute_model", "engine_core", parent=(outer[wire.TRACE_ID], outer[wire.SPAN_ID]),
                     nested=False)
    for r in (inner, free, outer):
        rec.end(r)
    recs = [wire.RangeRecord._make(r) for r in rec.take()]
    assert [r.name for r in recs] == ["engine.schedule", "engine.execute_model", "engine.step"]
    assert recs[0].parent_id == recs[2].span_id and recs[0].step == 4 and recs[0].nested
    assert recs[1].parent_id == recs[2].span_id and not recs[1].nested and recs[2].attrs == {"a": 1}
    assert all(r.end_ns >= r.start_ns > 0 for r in recs) and rec.recorded == 3


def test_frames_go_packed_or_marshal_when_plain_and_as_pickle_otherwise(monkeypatch):
    """The pipe to the export process: plain records are written by the C encoding (``_wire.pack``, the fast path)
    where it was built, else with marshal; a frame holding anything both refuse (a NamedTuple like SelfCost) falls
    back to pickle; read_frames reads each, in order, and stops at a cut frame."""
    import io

    from vllm_w2ext.telemetry.export_process import read_frames
    r = wire.open_range("engine.step", "engine_core", 2 ** 127 + 5, 2, 0, 10, 7, {"k": 1.5}, True)
    r[wire.DATA] = ((1, 0, 1, ("a",), (), 0, 0, (), (), None, 1, 0), True, (), 1)
    iv = ("engine.schedule", "engine_core", 3, 4, 11, 12, 7, None, None)
    plain = wire.encode_frame(wire.Frame.RANGES, [r, iv])
    stats = wire.encode_frame(wire.Frame.STATS, wire.ZERO_COST)
    monkeypatch.setattr(wire, "pack", None)
    marshalled = wire.encode_frame(wire.Frame.RANGES, [r, iv])
    monkeypatch.undo()
    assert wire.frame_length(plain[:4]) == (len(plain) - 4, wire.PACKED if wire.pack else wire.MARSHAL)
    assert wire.frame_length(marshalled[:4]) == (len(marshalled) - 4, wire.MARSHAL)
    assert wire.frame_length(stats[:4]) == (len(stats) - 4, wire.PICKLE)
    got = list(read_frames(io.BytesIO(plain + marshalled + stats + plain[:-1])))
    assert got == [(wire.Frame.RANGES, [r, iv])] * 2 + [(wire.Frame.STATS, wire.ZERO_COST)]
    assert type(got[2][1]) is wire.SelfCost and type(got[0][1][0]) is list and type(got[0][1][1]) is tuple


def test_a_packed_frame_without_the_extension_is_named(monkeypatch):
    """An export process that cannot read a packed frame says so (read_frames skips it and goes on)."""
    import pytest
    monkeypatch.setattr(wire, "unpack", None)
    with pytest.raises(ValueError, match="_wire is not built"):
        wire.decode_frame(b"N", wire.PACKED)
