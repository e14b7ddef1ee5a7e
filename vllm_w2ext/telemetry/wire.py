"""Named wire formats: what crosses a thread or process boundary, each field order defined once here
(the step formats, which speak of vLLM's scheduler, are in ``vllm_w2ext.steps.facts``).

- :class:`RangeRecord`: one finished range as the hot path leaves it (a plain list in this field order,
  so recording costs one list build and one append); the export side reads it with ``RangeRecord._make``.
- :class:`Interval`: a phase inside a range (the worker's sample and forward; the EngineCore's schedule and
  update when they have marks or an error, else their bounds travel in the step's ``steps.facts.StepRecord``),
  recorded as a plain tuple of its bounds and parent; the export side gives it a span id and reads it as a
  RangeRecord.
Records built on every step are plain lists and tuples, never NamedTuple instances: those pickle
through a Python-level ``__reduce__`` and the C encodings refuse them; plain ones are written at C speed
(``encode_frame``).
- :class:`SelfCost`: the plugin's cumulative counters about itself, sent from a vLLM process to its
  export process and turned into the self-cost metrics there.
- :class:`Frame`: the message kinds of the pipe to the export process; ``encode_frame`` / ``decode_frame``.
"""
from __future__ import annotations

import marshal
import pickle
import struct
from typing import Any, NamedTuple


class RangeRecord(NamedTuple):
    name: str
    role: str
    trace_id: int
    span_id: int
    parent_id: int            # 0: a root span
    start_ns: int             # wall clock (time.time_ns), the clock every process shares
    end_ns: int
    step: int                 # engine step id, -1 when none
    attrs: dict | None        # plain values only (they are pickled)
    links: list | None        # [(trace_id, span_id), ...]
    error: str | None         # exception type name
    nested: bool | int        # on its thread's track: pushed on the thread's stack (True), or not (ON_THREAD);
                              # False: a free-standing interval
    data: Any                 # a hook's raw facts for the export side to assemble (plain tuples), or None


# RangeRecord.nested of a range that belongs to its thread's track (the trace file draws it there, as a True one)
# but was not pushed on the thread's stack of open ranges: nothing nests in it implicitly and it has no NVTX
# push or profiler annotation. Passed to recording.Recorder.begin, it becomes True while marks are wanted.
# Truthy, and not ``True``: ``nested is True`` tells them apart.
ON_THREAD = 1

# Positions of RangeRecord's fields in the hot path's open-range lists (derived, never written twice).
NAME, ROLE, TRACE_ID, SPAN_ID, PARENT_ID, START, END, STEP, ATTRS, LINKS, ERROR, NESTED, DATA = \
    range(len(RangeRecord._fields))


def open_range(name: str, role: str, trace_id: int, span_id: int, parent_id: int, start_ns: int, step: int,
               attrs: dict | None, nested: bool) -> list:
    """A range being recorded: a list in RangeRecord's field order (end, links, error, data unset)."""
    return [name, role, trace_id, span_id, parent_id, start_ns, 0, step, attrs, None, None, nested, None]


class Interval(NamedTuple):
    """A phase recorded by a light hook (``recording.Recorder.phase_end``): on the wire a plain tuple in
    this field order (a range is a list), with no span id; no thread stack is touched to record it."""
    name: str
    role: str
    trace_id: int             # the parent's trace; 0: none (the export side starts a trace)
    parent_id: int            # the parent's span id; 0: a root span
    start_ns: int
    end_ns: int
    step: int
    attrs: dict | None
    error: str | None

    def record(self, trace_id: int, span_id: int) -> RangeRecord:
        """The RangeRecord of this phase, given its trace (its parent's, or a new one) and a span id made
        on the export side."""
        return RangeRecord(self.name, self.role, trace_id, span_id, self.parent_id,
                           self.start_ns, self.end_ns, self.step, self.attrs, None, self.error, True, None)


IV_START, IV_END = Interval._fields.index("start_ns"), Interval._fields.index("end_ns")


class OutputsPhase(NamedTuple):
    """The front end's ``front.process_outputs`` inside a recorded ``front.step`` (offline), carried in that range's
    ``data`` as a plain tuple in this field order instead of a record of its own: the export side makes it the
    step's child span (``steps.assemble``). One record per front-end iteration where there were two, each a
    Python call and an allocation on vLLM's front-end thread."""
    start_ns: int
    end_ns: int
    outputs: int              # EngineCoreOutputs handled (vllm_w2ext.num_outputs)


class SelfCost(NamedTuple):
    recorded: int             # ranges recorded
    dropped: int              # ranges lost (buffer full, export process gone, sink refused)
    errors: int               # sink / assembly failures
    export_cpu_s: float       # CPU time of the plugin's export thread(s) in this process
    export_gil_wait_s: float  # wall minus CPU time of the export thread's work sections (GIL waits, I/O)
    export_gil_hold_s: float  # wall time of those sections between the calls that release the GIL (Pipeline)
    hook_cpu_s: float         # CPU time inside hooks on vLLM's threads (sampled, scaled)
    hook_gil_wait_s: float    # wall minus CPU time inside hooks (sampled, scaled)
    hook_errors: dict         # hook name -> faults
    export_flushes: int = 0   # the export thread's flushes (wakes and explicit flushes) so far
    export_holds: tuple = ()  # the GIL hold of each of the last flushes (s, at most HOLDS_KEPT, the last one the
                              # export_flushes-th): upper bounds of the stalls it imposed at once
    hook_direct_s: float = 0.0   # the hooks' calls the C fronts took, every one timed (selfcost.direct)
    hook_direct_calls: int = 0
    hook_direct_by_hook: dict = {}   # hook name -> its share of hook_direct_s (selfcost.direct_by_hook; never mutated)
    gc_s: float = 0.0         # Python's collections in the process, any thread (selfcost.collections)
    gc_collections: int = 0


HOLDS_KEPT = 64               # SelfCost.export_holds: the last flushes' holds sent with the own counters (~1 s apart)
ZERO_COST = SelfCost(0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, {})


class Frame:
    """Message kinds on the pipe to the export process: ``<u32 word><body>``, the body ``(kind, payload)``
    encoded by :func:`encode_frame` (read back by :func:`decode_frame`)."""
    IDENTITY = "identity"         # (pid, vLLM version, roles, metrics folder)
    RANGES = "ranges"             # [RangeRecord-ordered lists]
    STATS = "stats"               # SelfCost
    SERVE_METRICS = "serve_metrics"   # (port, host, metrics folder): the front end's scrape endpoint
    FLUSH = "flush"               # (sequence number, timeout s): acknowledged as <u32 seq> on stdout


LEN = struct.Struct("<I")
PICKLE, MARSHAL, PACKED = 0, 1 << 31, 1 << 30   # the word's top two bits: how the body is encoded; the rest: its length
_CODEC = PACKED | MARSHAL

try:                          # the records' encoding in C (``telemetry/_wire.c``), where the extension was built
    from vllm_w2ext.telemetry._wire import pack, unpack
except ImportError:           # (setup.py builds it where it can): marshal encodes every frame
    pack = unpack = None


def encode_frame(kind: str, payload) -> bytes:
    """One frame. The hot path's records are plain lists, tuples, ints and strings. Where the C extension was built
    ``_wire.pack`` writes them (the engine step's record in ~0.8 us against marshal's ~1.75 on the 2-core CPU machine,
    benchmarks/results/cpu/wire_pack: this runs on the export thread of vLLM's process, under its GIL); else, or for
    what it does not take, ``marshal`` (about 3x faster than pickle: 0.14 vs 0.43 us per range record); anything
    marshal refuses too (a NamedTuple such as SelfCost, a str or int subclass) goes as a pickle. Both ends run the same
    interpreter and package (the export process is ``sys.executable``), so both read what either wrote."""
    msg = (kind, payload)
    if pack is not None:
        try:
            body = pack(msg)
            return LEN.pack(len(body) | PACKED) + body
        except ValueError:
            pass
    try:
        body = marshal.dumps(msg)
        return LEN.pack(len(body) | MARSHAL) + body
    except ValueError:
        body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        return LEN.pack(len(body) | PICKLE) + body


def frame_length(word: bytes) -> tuple[int, int]:
    """(body length, its encoding: PICKLE, MARSHAL or PACKED) of a frame's first four bytes."""
    (n,) = LEN.unpack(word)
    return n & ~_CODEC, n & _CODEC


def decode_frame(body: bytes, codec: int):
    if codec == PACKED:
        if unpack is None:
            raise ValueError("a packed frame, and the C extension vllm_w2ext.telemetry._wire is not built here")
        return unpack(body)
    return marshal.loads(body) if codec == MARSHAL else pickle.loads(body)
