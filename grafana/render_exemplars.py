"""Render the dashboard's exemplar panels as PNG from a live Prometheus, where Grafana cannot run.

    python grafana/render_exemplars.py --prometheus http://127.0.0.1:9090 --start T0 --end T1 --out x.png

For every panel whose targets ask for exemplars (``"exemplar": true``), each query's ``query_range``
result is drawn as lines and its ``/api/v1/query_exemplars`` result as dots (value at the time the
exemplar was observed), as Grafana draws them; the slowest exemplar of each panel is labelled with its
trace id (what a click in Grafana opens in Tempo or Jaeger). Needs matplotlib. Returns, and with
``--json`` writes, what was drawn: per panel the series and exemplars counted and the labelled trace."""
from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dashboard_queries import load_queries


def _get(base: str, path: str, params: dict) -> dict:
    with urllib.request.urlopen(f"{base}{path}?" + urllib.parse.urlencode(params), timeout=30) as r:
        body = json.loads(r.read())
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def exemplar_panels(dashboard: Path, cuda: bool = False) -> dict[str, list[dict]]:
    panels: dict[str, list[dict]] = {}
    for q in load_queries(dashboard):
        if q["exemplar"] and (cuda or not q["cuda_only"]):
            panels.setdefault(q["panel"], []).append(q)
    return panels


def render(base: str, start: float, end: float, out: Path, dashboard: Path, step: float = 1.0,
           title: str = "") -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = exemplar_panels(dashboard)
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    drawn = {}
    for ax, (name, queries) in zip(axes.flat, panels.items()):
        n_series = n_ex = 0
        slowest = None
        for q in queries:
            rng = _get(base, "/api/v1/query_range", {"query": q["expr"], "start": f"{start:.3f}",
                                                      "end": f"{end:.3f}", "step": str(step)})
            for series in rng["result"]:
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                label = ",".join(f"{k}={v}" for k, v in series["metric"].items()
                                 if k not in ("job", "instance", "engine", "rank", "tp_rank", "pp_rank")) or q["legend"] or q["ref_id"]
                ax.plot(xs, ys, label=(q["legend"].replace("{{", "").replace("}}", "") + " " + label)[:40],
                        linewidth=1)
                n_series += 1
            for group in _get(base, "/api/v1/query_exemplars", {"query": q["expr"], "start": f"{start:.3f}",
                                                                 "end": f"{end:.3f}"}) or []:
                pts = [(float(e["timestamp"]) - start, float(e["value"]), e["labels"]) for e in group["exemplars"]]
                if not pts:
                    continue
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, marker="D", alpha=0.7,
                           color="tab:red", zorder=3)
                n_ex += len(pts)
                top = max(pts, key=lambda p: p[1])
                if slowest is None or top[1] > slowest[1]:
                    slowest = top
        if slowest is not None:
            ax.annotate(f"trace {slowest[2].get('trace_id', '?')[:16]}...", (slowest[0], slowest[1]),
                        fontsize=6, xytext=(5, -10), textcoords="offset points", color="tab:red")
        ax.set_yscale("symlog", linthresh=1e-4)      # ms quantiles and second-long outliers on one axis
        ax.set_title(f"{name[:55]}\n{n_ex} exemplars (red)", fontsize=8)
        ax.tick_params(labelsize=7)
        if 0 < n_series <= 8:
            ax.legend(fontsize=6, loc="upper left")
        if not n_series:
            ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
        drawn[name] = {"series": n_series, "exemplars": n_ex,
                       "slowest_exemplar": None if slowest is None else
                       {"value": slowest[1], **{k: slowest[2].get(k) for k in ("trace_id", "span_id")}}}
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title or "vllm-w2ext dashboard, exemplar panels (x: s since start; lines: query_range, "
                          "red: query_exemplars)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return drawn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--start", type=float, required=True)
    ap.add_argument("--end", type=float, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dashboard", type=Path, default=HERE / "dashboards" / "vllm-w2ext.json")
    a = ap.parse_args(argv)
    drawn = render(a.prometheus.rstrip("/"), a.start, a.end, a.out, a.dashboard)
    if a.json:
        a.json.write_text(json.dumps(drawn, indent=1))
    print(json.dumps(drawn))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
