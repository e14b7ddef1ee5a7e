"""Named wire formats: what crosses a thread or process boundary, each field order defined once here
(the step formats, which speak of vLLM's scheduler, are in ``vllm_w2ext.steps.facts``).

- :class:`RangeRecord`: one finished range as the hot path leaves it (a plain list in this field order,
  so recording costs one list build and one append); the export side reads it with ``RangeRecord._make``.
- :class:`Interval`: a phase inside a range (schedule, update, sample, forward), recorded as a plain tuple
  of its bounds and parent; the export side gives it a span id and reads it as a RangeRecord.
Records built on every step are plain lists and tuples, never NamedTuple instances: those pickle
through a Python-level ``__reduce__``, plain ones at C speed.
- :class:`SelfCost`: the plugin's cumulative counters about itself, sent from a vLLM process to its
  export process and turned into the self-cost metrics there.
- :class:`Frame`: the message kinds of the pipe to the export process.
"""
from __future__ import annotations

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
    nested: bool              # pushed on its thread's stack (True) or a free-standing interval
    data: Any                 # a hook's raw facts for the export side to assemble (plain tuples), or None


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


class SelfCost(NamedTuple):
    recorded: int             # ranges recorded
    dropped: int              # ranges lost (buffer full, export process gone, sink refused)
    errors: int               # sink / assembly failures
    export_cpu_s: float       # CPU time of the plugin's export thread(s) in this process
    export_gil_wait_s: float  # wall minus CPU time of the export thread's work sections (GIL waits, I/O)
    hook_cpu_s: float         # CPU time inside hooks on vLLM's threads (sampled, scaled)
    hook_gil_wait_s: float    # wall minus CPU time inside hooks (sampled, scaled)
    hook_errors: dict         # hook name -> faults


ZERO_COST = SelfCost(0, 0, 0, 0.0, 0.0, 0.0, 0.0, {})


class Frame:
    """Message kinds on the pipe to the export process: ``<u32 length><pickle of (kind, payload)>``."""
    IDENTITY = "identity"         # (pid, vLLM version, roles, metrics folder)
    RANGES = "ranges"             # [RangeRecord-ordered lists]
    STATS = "stats"               # SelfCost
    SERVE_METRICS = "serve_metrics"   # (port, host, metrics folder): the front end's scrape endpoint
    FLUSH = "flush"               # (sequence number, timeout s): acknowledged as <u32 seq> on stdout
