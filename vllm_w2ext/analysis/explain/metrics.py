"""``--metrics``: a Prometheus text scrape (or a ``lab/scrape.py`` file of several; the last complete one is used)
read for the plugin's device counters: ``vllm_w2ext_device_idle_seconds_total{engine, rank, cause}``
(and ``vllm_w2ext_device_busy_seconds_total`` where present). Counters cover the processes' lifetime,
warm-up included, so they are a cross-check of the span folder, or its stand-in when the spans carry no
device attributes."""
from __future__ import annotations

import gzip

from vllm_w2ext.analysis.metrics.scrapes import final_scrape, read_scrapes, samples
from vllm_w2ext.vocab import IDLE_CAUSES

IDLE = "vllm_w2ext_device_idle_seconds_total"
BUSY = "vllm_w2ext_device_busy_seconds_total"


def _text(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        text = f.read()
    if text.startswith("# SCRAPE "):
        scrapes = read_scrapes(path)
        return final_scrape(scrapes)[1] if scrapes else ""
    return text


def read(path: str) -> dict:
    """{"devices": {"engine E rank R": {"idle": {cause: s}, "busy_s": s | None}}, "device_idle_by_cause":
    {cause: mean seconds over devices}}; empty when the scrape has no device counters."""
    devices: dict[str, dict] = {}
    for name, labels, value in samples(_text(path)):
        if name not in (IDLE, BUSY):
            continue
        key = f"engine {labels.get('engine', '0')} rank {labels.get('rank', '0')}"
        d = devices.setdefault(key, {"idle": dict.fromkeys(IDLE_CAUSES, 0.0), "busy_s": None})
        if name == IDLE:
            c = labels.get("cause", "unattributed")
            d["idle"][c] = d["idle"].get(c, 0.0) + value
        else:
            d["busy_s"] = (d["busy_s"] or 0.0) + value
    n = len(devices) or 1
    by_cause = {c: round(sum(d["idle"].get(c, 0.0) for d in devices.values()) / n, 6) for c in IDLE_CAUSES} \
        if devices else {}
    return {"file": path, "devices": devices, "device_idle_by_cause": by_cause}
