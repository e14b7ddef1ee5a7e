"""Python's cyclic collections, timed on the thread each runs on (``gc.callbacks``), for the engine benchmarks
(``hook_cost_engine.py``, ``gpu/gc_share.py``). A collection runs on whichever thread's allocation sets it off, walks
every thread's young objects, and counts in that thread's clock, whoever made the garbage."""
from __future__ import annotations

import gc
import threading
import time


class CollectionTimer:
    """``start()`` appends the callback, ``stop()`` removes it; ``rows``: thread name -> {generation: [collections,
    seconds, longest]}; ``clear()`` forgets them."""

    def __init__(self) -> None:
        self.rows: dict = {}
        self._t0 = threading.local()

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0.t = time.perf_counter()
            return
        t0 = getattr(self._t0, "t", None)
        if t0 is None:
            return
        dt = time.perf_counter() - t0
        row = self.rows.setdefault(threading.current_thread().name, {}).setdefault(info.get("generation"),
                                                                                   [0, 0.0, 0.0])
        row[0] += 1
        row[1] += dt
        row[2] = max(row[2], dt)

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)

    def stop(self) -> None:
        gc.callbacks.remove(self._on_gc)

    def clear(self) -> None:
        self.rows.clear()

    def by_thread(self, steps: int) -> dict:
        """Per thread: collections, gen-2 collections, µs per engine step, the longest (ms)."""
        out = {}
        for t, gens in sorted(self.rows.items()):
            rows = gens.values()
            n, s, mx = sum(r[0] for r in rows), sum(r[1] for r in rows), max(r[2] for r in rows)
            out[t] = {"collections": n, "gen2": gens.get(2, [0])[0],
                      "us_per_step": round(s / steps * 1e6, 2) if steps else None, "max_ms": round(mx * 1e3, 2)}
        return out

    def by_generation(self, steps: int) -> dict:
        """Per thread and generation: collections, µs per engine step, the longest (ms)."""
        return {t: {str(g): {"collections": c, "us_per_step": round(s / steps * 1e6, 2) if steps else None,
                             "max_ms": round(mx * 1e3, 2)} for g, (c, s, mx) in sorted(gens.items())}
                for t, gens in sorted(self.rows.items())}
