"""Scrape files (``lab/scrape.py`` output: ``# SCRAPE <unix time>`` then the exposition text, one
block per scrape) read back, and the few PromQL-like queries the reports need over one scrape's
samples: a labelled sum and a histogram quantile."""
from __future__ import annotations

import gzip

from prometheus_client.parser import text_string_to_metric_families


def read_scrapes(path: str) -> list[tuple[float, str]]:
    opener = gzip.open if path.endswith(".gz") else open
    out, cur, buf = [], None, []
    with opener(path, "rt") as f:
        for line in f:
            if line.startswith("# SCRAPE "):
                if cur is not None:
                    out.append((cur, "".join(buf)))
                cur, buf = float(line.split()[2]), []
            else:
                buf.append(line)
    if cur is not None:
        out.append((cur, "".join(buf)))
    return out


def samples(text: str) -> list[tuple[str, dict, float]]:
    return [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]


def total(ss, name: str, **labels) -> float:
    return sum(v for n, lab, v in ss if n == name and all(lab.get(k) == x for k, x in labels.items()))


def quantile(ss, name: str, q: float, **labels) -> float | None:
    """histogram_quantile over cumulative buckets (linear inside the bucket, as Prometheus does)."""
    b: dict[float, float] = {}
    for n, lab, v in ss:
        if n == name + "_bucket" and all(lab.get(k) == x for k, x in labels.items()):
            le = float(lab["le"])
            b[le] = b.get(le, 0.0) + v
    if not b:
        return None
    les = sorted(b)
    count = b[les[-1]]
    if count == 0:
        return None
    rank, prev_le, prev_c = q * count, 0.0, 0.0
    for le in les:
        if b[le] >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(b[le] - prev_c, 1e-12)
        prev_le, prev_c = le, b[le]
    return les[-2] if len(les) > 1 else None
