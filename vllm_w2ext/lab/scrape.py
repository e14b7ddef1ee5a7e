"""Scrape a Prometheus endpoint at a fixed interval into one file (for machines with no Prometheus):

    python -m vllm_w2ext.lab.scrape URL OUT.prom [--interval 1]

Each scrape is written as ``# SCRAPE <unix time>`` followed by the exposition text; unreachable
scrapes (the endpoint lives only while vLLM runs) are skipped. Stops on SIGTERM/SIGINT.
``vllm_w2ext.analysis.metrics.scrapes.read_scrapes(path)`` reads it back as [(time, text)]."""
from __future__ import annotations

import argparse
import signal
import threading
import time
import urllib.request


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("out")
    ap.add_argument("--interval", type=float, default=1.0)
    a = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with open(a.out, "w") as f:
        while not stop.is_set():
            t = time.time()
            try:
                with urllib.request.urlopen(a.url, timeout=2) as r:
                    text = r.read().decode()
                f.write(f"# SCRAPE {t:.3f}\n{text}")
                f.flush()
            except OSError:
                pass
            stop.wait(a.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
