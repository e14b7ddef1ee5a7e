"""A finding: one reason the run took longer than its work needed, with the wall-clock seconds it cost,
the evidence (steps, requests, a step to open in Perfetto) and, only where the evidence supports it,
a vLLM setting to try. Findings are ranked by seconds."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Finding:
    id: str                  # stable: "device_idle.<cause>", "prefill_interference", "preemption", ...
    cause: str               # for device idle: the cause name of vocab.IDLE_CAUSES
    title: str
    seconds: float           # wall-clock time lost (per device, averaged over devices, for device idle)
    share: float             # of the wall time
    evidence: dict = field(default_factory=dict)   # "text" (one line) plus structured fields
    suggestion: str | None = None

    def as_dict(self) -> dict:
        return {"id": self.id, "cause": self.cause, "title": self.title, "seconds": round(self.seconds, 6),
                "share": round(self.share, 6), "evidence": self.evidence, "suggestion": self.suggestion}


def ranked(findings: list[Finding]) -> list[Finding]:
    """By seconds lost, largest first; ties (zeros: informational findings) keep their order."""
    return sorted(findings, key=lambda f: -f.seconds)


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def secs(x: float) -> str:
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.1f} ms"
    return f"{x * 1e6:.0f} µs"
