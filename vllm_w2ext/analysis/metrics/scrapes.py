"""Scrape files (``lab/scrape.py`` output: ``# SCRAPE <unix time>`` then the exposition text, one
block per scrape) read back, and the few PromQL-like queries the reports need over one scrape's
samples: a labelled sum and a histogram quantile; the plugin's own cost from its self-cost metrics."""
from __future__ import annotations

import gzip

from prometheus_client.parser import text_string_to_metric_families

from vllm_w2ext.vocab import ENGINE

HOLD_PER_FLUSH = "vllm_w2ext_export_thread_gil_hold_per_flush_seconds"
STEPS = "vllm_w2ext_engine_steps_total"
BATCH_REQUESTS = "vllm_w2ext_batch_requests"    # the EngineCore's requests-per-step histogram


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


def run_scrapes(scrapes: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """The scrapes up to the one that holds a run's end state: the last whose executed-step counter is at
    its maximum. As vLLM shuts down, the endpoint can still answer after the other processes' snapshots
    are gone (the front end removes the metrics folder on exit); such scrapes lack the EngineCore's and
    workers' series, and would read as counters falling to zero. Counters only go up, so the drop marks
    them. Without a step counter in any scrape, all of them."""
    steps = [executed_steps(text) for _, text in scrapes]
    if not any(steps):
        return scrapes
    top = max(steps)
    return scrapes[:max(i for i, n in enumerate(steps) if n == top) + 1]


def series_samples(text: str, names) -> list[tuple[str, dict, float]]:
    """``samples`` of one scrape's lines whose series name starts with ``names`` (a str or a tuple of them), only
    those lines parsed (not the whole exposition: a lab run's file holds hundreds of scrapes)."""
    lines = [line for line in text.splitlines() if line.startswith(names)]
    return samples("\n".join(lines) + "\n") if lines else []


def executed_steps(text: str) -> float:
    """The executed-step counter of one scrape (``series_samples``)."""
    ss = series_samples(text, STEPS)
    return total(ss, STEPS, executed="true") if ss else 0.0


def final_scrape(scrapes: list[tuple[float, str]]) -> tuple[float, str] | None:
    """The last of ``run_scrapes``: the run's end state (None without scrapes)."""
    kept = run_scrapes(scrapes)
    return kept[-1] if kept else None


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


def self_cost(value, steps: float, ss=None) -> dict:
    """The plugin's cost to vLLM's processes, read from its own metrics: totals over every role (the hooks' time both
    sampled, ``hook_self_s``, an upper bound, and with every call of the C fronts timed, ``hook_direct_s``), the same
    per executed engine step (µs, as the dashboard's "Plugin time per engine step" sums them), and, given the samples
    ``ss`` of a scrape, the size of the EngineCore export thread's single stalls (its GIL hold per flush: p50 and
    p99, ms). ``value(name, **labels)``: a counter's total in one scrape, or its growth between two."""
    hooks = value("vllm_w2ext_hook_self_seconds_total")
    direct = value("vllm_w2ext_hook_direct_seconds_total")
    cpu = value("vllm_w2ext_export_thread_cpu_seconds_total")
    hold = value("vllm_w2ext_export_thread_gil_hold_seconds_total")
    out = {"hook_self_s": round(hooks, 4), "hook_direct_s": round(direct, 4), "export_thread_cpu_s": round(cpu, 4),
           "export_thread_gil_hold_s": round(hold, 4),
           "spans_recorded": value("vllm_w2ext_spans_recorded_total"),
           "spans_dropped": value("vllm_w2ext_spans_dropped_total"), "hook_errors": value("vllm_w2ext_hook_errors_total")}
    if steps:
        out["us_per_step"] = {"hooks": round(hooks / steps * 1e6, 2), "hooks_direct": round(direct / steps * 1e6, 2),
                              "export_thread_cpu": round(cpu / steps * 1e6, 2),
                              "export_thread_gil_hold": round(hold / steps * 1e6, 2)}
    if ss is not None:
        p50, p99 = (quantile(ss, HOLD_PER_FLUSH, q, role=ENGINE) for q in (0.5, 0.99))
        if p50 is not None:
            out["engine_core_gil_hold_per_flush_ms"] = {
                "p50": round(p50 * 1e3, 3), "p99": round(p99 * 1e3, 3),
                "flushes": total(ss, HOLD_PER_FLUSH + "_count", role=ENGINE)}
    return out
