"""The sink interface: what the export side hands finished ranges to (OTLP, metrics, trace file, the
export process). Every method has a no-op default, so callers never probe with ``getattr``."""
from __future__ import annotations


class Sink:
    name = "sink"
    dropped = 0               # ranges this sink lost (queue full, write failed, peer gone)
    failed_batches = 0        # batches it could not deliver
    released_s = 0.0          # wall time the caller spent in its calls with the GIL released (blocking writes)

    def consume(self, ranges: list) -> None:
        """Take a batch of finished ranges (export thread or export process only)."""

    def tick(self) -> None:
        """Called once per export interval (periodic work: metric snapshots)."""

    def flush(self, timeout_s: float) -> None:
        """Deliver everything consumed so far, within ``timeout_s``."""

    def shutdown(self, timeout_s: float) -> None:
        """Flush and release resources, within ``timeout_s``."""

    def close_in_forked_child(self) -> None:
        """In a forked child: drop what belongs to the parent (pipes, threads) without using it."""
