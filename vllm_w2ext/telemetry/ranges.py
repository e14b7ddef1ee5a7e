"""A finished range on the export side: what the sinks (OTLP, metrics, trace file) consume.

Built from a :class:`~vllm_w2ext.telemetry.wire.RangeRecord` (the hot path's raw record) after the
assembly step has filled in the attributes and links that need lookups."""
from __future__ import annotations

from typing import Any

from vllm_w2ext.telemetry.recording import new_span_id, new_trace_id
from vllm_w2ext.telemetry.wire import Interval, RangeRecord


class Range:
    __slots__ = ("name", "role", "trace_id", "span_id", "parent_id", "start_ns", "end_ns", "attrs", "links",
                 "step", "error", "nested", "data", "events")

    def __init__(self, name: str, role: str, trace_id: int, span_id: int, parent_id: int, start_ns: int,
                 end_ns: int = 0, attrs: dict | None = None, step: int = -1, links: list | None = None,
                 error: str | None = None, nested: bool = False, data: Any = None):
        self.name = name
        self.role = role
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id      # 0: root
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attrs = attrs
        self.links = links
        self.step = step                # engine step id, -1 when none
        self.error = error
        self.nested = nested
        self.data = data                # the hook's raw facts until assembly consumed them
        self.events: list | None = None  # [(name, wall clock ns, attributes or None)]

    @classmethod
    def from_record(cls, rec: list | tuple) -> "Range":
        if type(rec) is tuple:                   # an Interval (a range is a list)
            iv = Interval._make(rec)
            r = iv.record(iv.trace_id or new_trace_id(), new_span_id())
        else:
            r = RangeRecord._make(rec)
        return cls(r.name, r.role, r.trace_id, r.span_id, r.parent_id, r.start_ns, r.end_ns, r.attrs, r.step,
                   r.links, r.error, r.nested, r.data)

    @property
    def context(self) -> tuple[int, int]:
        return self.trace_id, self.span_id

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Range({self.name!r}, role={self.role}, step={self.step}, dur={self.end_ns - self.start_ns}ns)"
