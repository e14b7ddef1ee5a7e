"""Scraped Prometheus text -> timestamped OpenMetrics, for ``promtool tsdb create-blocks-from
openmetrics`` (backfilling scrapes taken where no Prometheus runs, e.g. the H100 box)."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def scrapes_to_openmetrics(scrapes: list[tuple[float, str]], extra_labels: dict[str, str]) -> str:
    """Timestamped OpenMetrics text (for ``promtool tsdb create-blocks-from openmetrics``) from a list
    of (unix time, exposition text) scrapes: one block per family, samples in time order."""
    fams: dict[str, tuple[str, list[str]]] = {}
    for t, text in scrapes:
        for fam in text_string_to_metric_families(text):
            typ, lines = fams.setdefault(fam.name, (fam.type, []))
            for smp in fam.samples:
                if smp.name.endswith("_created"):
                    continue
                labels = {**smp.labels, **extra_labels}
                lab = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                lines.append(f"{smp.name}{{{lab}}} {smp.value} {t:.3f}")
    out = []
    for name, (typ, lines) in fams.items():
        out.append(f"# TYPE {name} {typ}")
        out.extend(lines)
    out.append("# EOF")
    return "\n".join(out) + "\n"
