"""Exported spans as plain records: one ``SpanRecord`` per span, read from and written to JSON lines
(what ``vllm_w2ext.receiver`` writes). Kept apart from the tree so the receiver needs nothing else."""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import Iterable

from vllm_w2ext.vocab import Attr


@dataclass
class SpanRecord:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    attrs: dict = field(default_factory=dict)
    resource: dict = field(default_factory=dict)
    links: list = field(default_factory=list)      # [(trace_id, span_id)]
    status_code: int = 0
    transport: str = ""                            # how it arrived (grpc/http), when known

    @property
    def role(self) -> str:
        return self.resource.get(Attr.PROCESS_ROLE, "")

    @property
    def pid(self) -> int:
        return int(self.resource.get("process.pid", 0))

    @property
    def dur_us(self) -> float:
        return (self.end_ns - self.start_ns) / 1000.0

    @property
    def step(self) -> int | None:
        v = self.attrs.get(Attr.STEP_ID)
        return int(v) if v is not None else None

    @classmethod
    def from_dict(cls, d: dict) -> "SpanRecord":
        keys = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in keys})


def load_jsonl(path: str) -> list[SpanRecord]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [SpanRecord.from_dict(json.loads(line)) for line in f if line.strip()]


def write_jsonl(spans: Iterable[SpanRecord], path: str) -> None:
    with open(path, "w") as f:
        for s in spans:
            f.write(json.dumps(vars(s)) + "\n")
