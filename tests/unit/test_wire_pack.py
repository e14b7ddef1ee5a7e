"""The pipe's C encoding (``telemetry/_wire.c``): whatever it takes reads back equal and of the same types (marshal's
round trip is the reference), timestamps included wherever they fall; what it does not take is refused with a
ValueError (and the frame goes through marshal or pickle); data it did not write is refused, never read past."""
import marshal
import math
import os
import random
from collections import namedtuple
from enum import IntEnum

import pytest

if os.environ.get("W2EXT_REQUIRE_C_FRONT") == "1":      # CI builds the extensions: there its absence is a failure
    from vllm_w2ext.telemetry import _wire
else:
    _wire = pytest.importorskip("vllm_w2ext.telemetry._wire")
TIME_LO, TIME_HI, NEAR = 1 << 59, 1 << 62, 1 << 40


def same(a, b) -> bool:
    """Equal, with the same type at every level (a list stays a list), floats bit for bit (NaN, -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return math.copysign(1, a) == math.copysign(1, b) and (a == b or (math.isnan(a) and math.isnan(b)))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def round_trip(x):
    return _wire.unpack(_wire.pack(x))


EDGE_INTS = [0, 1, -1, 63, 64, -64, -65, 127, 128, 255, 256, 2 ** 31, -2 ** 31 - 1, 2 ** 62, 2 ** 63 - 1, -2 ** 63,
             2 ** 63, -2 ** 63 - 1, 2 ** 64, -2 ** 64, 2 ** 64 - 1, 2 ** 127 + 5, -2 ** 127, 2 ** 128, 10 ** 40,
             TIME_LO - 1, TIME_LO, TIME_LO + 1, TIME_HI - 1, TIME_HI, 1_796_604_052_341_294_153]


def test_edge_values_read_back_with_their_types():
    values = [None, True, False, 0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, 1e308, 5e-324, "", "engine.step",
              "ü€𝄞", b"", b"\x00\xff", [], (), {}, [()], ((),), {"k": [1, (2,)]}, {1: "a", None: 2.5, (1, 2): b"x"},
              3 ** 5000, *EDGE_INTS]
    for v in values:
        assert same(round_trip(v), v), v
    assert same(round_trip(values), values) and same(round_trip(tuple(values)), tuple(values))


def test_times_read_back_wherever_they_fall():
    """Times are written as the distance from the frame's last one where that is near: steps apart, far apart
    (an idle engine), out of order (a previous step's end), mixed with random ids that land in the times' range."""
    rng = random.Random(1)
    t = 1_796_604_052_341_294_153
    seq = []
    for _ in range(2000):
        pick = rng.random()
        if pick < 0.5:
            t += rng.randrange(-10 ** 9, 4 * 10 ** 7)           # near, either way
        elif pick < 0.55:
            t = rng.randrange(TIME_LO, TIME_HI)                  # anywhere in range
        elif pick < 0.6:
            t = rng.choice([TIME_LO, TIME_HI - 1])
        seq.append(t)
        if rng.random() < 0.3:
            seq.append(rng.getrandbits(64))                      # a span id
        if rng.random() < 0.1:
            seq.append(t + rng.choice([NEAR, -NEAR, NEAR - 1, 1 - NEAR]))
    seq = [v for v in seq if -2 ** 200 < v < 2 ** 200]
    assert same(round_trip(seq), seq)
    steps = [[t + k * 40_000_000 + j for j in range(17)] for k in range(100)]
    packed = _wire.pack(steps)
    assert same(_wire.unpack(packed), steps) and len(packed) < len(marshal.dumps(steps)) / 2


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(12 if depth < 5 else 8)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice(EDGE_INTS) + rng.randrange(-3, 4)
    if kind == 2:
        return rng.getrandbits(rng.choice([3, 20, 63, 64, 65, 128])) * rng.choice([1, -1])
    if kind == 3:
        return rng.choice([rng.uniform(-1e9, 1e9), rng.random(), -0.0, math.inf])
    if kind == 4:
        return "".join(rng.choice("ab.-_ü€𝄞") for _ in range(rng.randrange(12)))
    if kind == 5:
        return rng.choice(["engine.step", "engine_core", "worker", ""])          # the same objects again
    if kind == 6:
        return rng.randbytes(rng.randrange(6))
    if kind == 7:
        return 1_796_604_052_341_294_153 + rng.randrange(-10 ** 10, 10 ** 10)
    items = [random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    if kind in (8, 9):
        return items
    if kind == 10:
        return tuple(items)
    return {rng.choice([rng.randrange(100), "k%d" % rng.randrange(9), None]): v for v in items}


def test_random_values_read_back_as_marshal_reads_them():
    rng = random.Random(7)
    for _ in range(3000):
        v = random_value(rng)
        assert same(round_trip(v), marshal.loads(marshal.dumps(v))), v


def test_strings_written_once_per_frame_by_object():
    name = "engine.step.with.a.long.name"
    many = [name] * 1000
    packed = _wire.pack(many)
    assert len(packed) < 3 * 1000 + 100 and same(_wire.unpack(packed), many)
    distinct = ["s%d" % i for i in range(5000)]                 # more than the slots: collisions overwrite
    mixed = [s for pair in zip(distinct, reversed(distinct)) for s in pair] + distinct[::7]
    assert same(round_trip(mixed), mixed)


Pair = namedtuple("Pair", "a b")


class Small(IntEnum):
    ONE = 1


class Name(str):
    pass


def nested(depth: int) -> list:
    v: list = []
    for _ in range(depth):
        v = [v]
    return v


@pytest.mark.parametrize("value", [Pair(1, 2), [Small.ONE], {"k": Name("x")}, {1, 2}, frozenset(), object(), 1j,
                                   bytearray(b"x"), "lone \udc80 surrogate", nested(70)])
def test_what_it_does_not_take_is_refused(value):
    with pytest.raises(ValueError, match="_wire.pack"):
        _wire.pack(value)


def test_frames_it_refuses_go_the_old_ways():
    from vllm_w2ext.telemetry import wire
    for payload, codec in (("lone \udc80", wire.MARSHAL), (Pair(1, 2), wire.PICKLE), ([1, "x"], wire.PACKED)):
        frame = wire.encode_frame(wire.Frame.RANGES, payload)
        n, got = wire.frame_length(frame[:4])
        assert got == codec and n == len(frame) - 4
        assert wire.decode_frame(frame[4:], got) == (wire.Frame.RANGES, payload)


def test_data_it_did_not_write_is_refused():
    v = ["engine.step", "engine.step", 2 ** 127 + 5, 1_796_604_052_341_294_153, 1_796_604_052_341_294_160,
         (1.5, b"ab", {"k": None}), -7]
    packed = _wire.pack(v)
    for cut in range(len(packed)):                               # every prefix: truncated
        with pytest.raises(ValueError):
            _wire.unpack(packed[:cut])
    for bad in (packed + b"N", b"?", b"r\x00", b"a\x02", b"[\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
                b"I\x00", b"s\x02\xff\xfe", b"A" + bytes([2])):
        with pytest.raises(ValueError):
            _wire.unpack(bad)
    rng = random.Random(3)
    for _ in range(20000):                                       # noise: refused or read, never past the end
        try:
            _wire.unpack(rng.randbytes(rng.randrange(1, 24)))
        except ValueError:
            pass
    assert same(_wire.unpack(memoryview(packed)), v)
