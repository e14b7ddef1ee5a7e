"""The sink interface: what the export side hands finished ranges to (OTLP, metrics, trace file, the
export process). Every method has a no-op default, so callers never probe with ``getattr``."""
from __future__ import annotations


class Sink:
    name = "sink"
    dropped = 0               # ranges this sink lost (queue full, write failed, peer gone)
    failed_batches = 0        # batches it could not deliver

    def consume(self, ranges: list) -> None:
        """Take a batch of finished ranges (export thread or export process only)."""

    def tick(self) -> None:
        """Called once per export interval (periodic work: metric snapshots)."""

    def flush(self, timeout_s: float) -> None:
        """Deliver everything consumed so far, within ``timeout_s``."""

    def shutdown(self, timeout_s: float) -> None:
        """Flush and release resources, within ``timeout_s``."""

    def released_here(self) -> float:
        """Wall seconds the calling thread has spent so far inside this sink's calls with the GIL released (its
        blocking writes): ``Pipeline`` takes them out of the export thread's GIL hold."""
        return 0.0

    def encode_cpu_here(self) -> float:
        """Thread CPU seconds the calling thread has spent so far serializing this sink's frames (its ``encode``
        part): ``Pipeline`` splits the export thread's send into taking, encoding and writing with it."""
        return 0.0

    def close_in_forked_child(self) -> None:
        """In a forked child: drop what belongs to the parent (pipes, threads) without using it."""
