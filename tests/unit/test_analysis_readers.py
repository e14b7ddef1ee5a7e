"""The two sibling Kineto readers on the same small traces (plain, gzip, xz, cut short, not a trace):
kineto_events gives typed events fast, kineto_raw gives each event's raw text byte for byte; both
raise the one UnreadableTrace."""
from __future__ import annotations

import gzip
import lzma

import pytest

from vllm_w2ext.analysis.readers.errors import UnreadableTrace
from vllm_w2ext.analysis.readers.kineto_events import KinetoEventReader
from vllm_w2ext.analysis.readers.kineto_raw import KinetoRawReader

EVENTS = ['{"ph": "X", "cat": "kernel", "name": "k0", "pid": 0, "tid": 7, "ts": 1.500, "dur": 2.250, '
          '"args": {"correlation": 11, "device": 0, "stream": 7, "grid": [1, 1, 1]}}',
          '{"ph":"X","cat":"cuda_runtime","name":"cudaLaunchKernel","pid":3,"tid":3,"ts":0.5,"dur":1,'
          '"args":{"correlation":11}}',
          '{"ph": "M", "name": "process_name", "pid": 3, "args": {"name": "python"}}']
TEXT = ('{"schemaVersion": 1, "deviceProperties": [{"name": "GPU"}], "traceEvents": [\n'
        + ",\n".join(EVENTS) + '\n], "baseTimeNanoseconds": 1700000000000000000}')


@pytest.fixture(params=["plain", "gzip", "xz"])
def trace(request, tmp_path):
    data = TEXT.encode()
    path = tmp_path / "t.json"          # no suffix says what the compression is: the bytes do
    path.write_bytes({"plain": data, "gzip": gzip.compress(data), "xz": lzma.compress(data)}[request.param])
    return path


def test_event_reader(trace):
    r = KinetoEventReader(trace)
    events = list(r)
    assert [e.name for e in events] == ["k0", "cudaLaunchKernel", "process_name"]
    k = events[0]
    assert (k.cat, k.ts, k.dur, k.pid, k.tid) == ("kernel", 1.5, 2.25, 0, 7)
    assert (k.args.correlation, k.args.device, k.args.stream) == (11, 0, 7)
    a = events[2].args                       # its args hold none of the three ids
    assert (a.correlation, a.device, a.stream) == (None, None, None)
    assert r.header == {"schemaVersion": 1, "deviceProperties": [{"name": "GPU"}]} and not r.truncated


def test_raw_reader_keeps_the_text(trace):
    r = KinetoRawReader(str(trace))
    got = list(r)
    assert [raw for raw, _ in got] == EVENTS
    assert got[1][1]["args"] == {"correlation": 11}
    assert r.meta == {"schemaVersion": 1, "deviceProperties": [{"name": "GPU"}],
                      "baseTimeNanoseconds": 1700000000000000000}
    assert r.events == 3 and not r.truncated


def test_cut_short_keeps_complete_events(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text(TEXT[:TEXT.index(EVENTS[2]) + 20])      # ends inside the third event
    r = KinetoEventReader(path)
    assert [e.name for e in r] == ["k0", "cudaLaunchKernel"] and r.truncated
    raw = KinetoRawReader(str(path))
    assert [e["name"] for _, e in raw] == ["k0", "cudaLaunchKernel"] and raw.truncated


@pytest.mark.parametrize("content", [b"not json at all", b'{"other": []}'])
def test_not_a_trace(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(UnreadableTrace):
        list(KinetoEventReader(path))
    if content.startswith(b"{"):
        # the raw reader reads any JSON object: a document without traceEvents has no events
        r = KinetoRawReader(str(path))
        assert list(r) == [] and r.meta == {"other": []}
    else:
        with pytest.raises(UnreadableTrace):
            list(KinetoRawReader(str(path)))


def test_missing_file(tmp_path):
    for read in (lambda p: list(KinetoEventReader(p)), lambda p: list(KinetoRawReader(p))):
        with pytest.raises(UnreadableTrace, match="not found"):
            read(str(tmp_path / "nope.json"))
    assert issubclass(UnreadableTrace, ValueError)
