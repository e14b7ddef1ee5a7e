"""Render the dashboard's panels as PNG from real Prometheus query results, where Grafana cannot run.

    python grafana/render_panels.py RUN_DIR [--out DIR]

RUN_DIR holds ``scrape_<run>.prom[.gz]`` files (``vllm_w2ext.lab.scrape`` output, e.g. from the H100).
They are backfilled into a throw-away Prometheus (``promtool tsdb create-blocks-from openmetrics``,
then ``prometheus`` on 127.0.0.1), every plugin panel's queries are run with ``query_range`` over each
run's window, and each run gets ``dashboard_<run>.png`` (one subplot per panel, one line per series).
Needs Debian's ``prometheus`` (prometheus + promtool) and matplotlib."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dashboard_queries import load_queries  # noqa: E402

from vllm_w2ext.analysis.metrics.scrapes import read_scrapes  # noqa: E402
from vllm_w2ext.lab import free_port  # noqa: E402
from vllm_w2ext.analysis.metrics.openmetrics import scrapes_to_openmetrics  # noqa: E402


def _get(port: int, path: str, params: dict) -> dict:
    url = f"http://127.0.0.1:{port}{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def backfill(path: Path, work: Path) -> tuple[float, float] | None:
    """One run's scrapes into its own TSDB (runs must not see each other through rate windows)."""
    scrapes = read_scrapes(str(path))
    if not scrapes:
        return None
    om = work / "run.om"
    om.write_text(scrapes_to_openmetrics(scrapes, {"job": "vllm-w2ext", "instance": "backfill"}))
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om), str(work / "data")],
                   check=True, capture_output=True, timeout=300)
    return scrapes[0][0], scrapes[-1][0]


def render(run: str, window: tuple[float, float], port: int, panels: dict[str, list[dict]], out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    t0 = window[0]
    for ax, (title, queries) in zip(axes.flat, panels.items()):
        n = 0
        for q in queries:
            res = _get(port, "/api/v1/query_range", {"query": q["expr"], "start": f"{window[0]:.3f}",
                                                       "end": f"{window[1]:.3f}", "step": "1"})
            for series in res["data"]["result"]:
                xs = [float(t) - t0 for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                label = ",".join(f"{k}={v}" for k, v in series["metric"].items()
                                 if k not in ("job", "instance", "engine", "rank", "tp_rank", "pp_rank")) or q.get("ref", "")
                ax.plot(xs, ys, label=label[:40])
                n += 1
        ax.set_title(title[:60], fontsize=9)
        ax.tick_params(labelsize=7)
        if 0 < n <= 8 and any(line.get_label() and not line.get_label().startswith("_") for line in ax.lines):
            ax.legend(fontsize=6)
        if not n:
            ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"vllm-w2ext dashboard, run {run} (x: s since first scrape; Prometheus query_range results)")
    fig.tight_layout()
    path = out / f"dashboard_{run}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--dashboard", type=Path, default=HERE / "dashboards" / "vllm-w2ext.json")
    a = ap.parse_args(argv)
    out = a.out or a.run_dir
    panels: dict[str, list[dict]] = {}
    for q in load_queries(a.dashboard):
        if not q["vllm_own"]:
            panels.setdefault(q["panel"], []).append(q)
    for path in sorted(a.run_dir.glob("scrape_*.prom*")):
        run = path.name[len("scrape_"):].split(".")[0]
        with tempfile.TemporaryDirectory(prefix="w2ext-render-") as tmp:
            work = Path(tmp)
            window = backfill(path, work)
            if window is None:
                continue
            port = free_port()
            (work / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
            prom = subprocess.Popen([shutil.which("prometheus") or "prometheus",
                                     f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                                     "--storage.tsdb.retention.time=3650d", f"--web.listen-address=127.0.0.1:{port}"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        if _get(port, "/api/v1/query", {"query": "1"})["status"] == "success":
                            break
                    except OSError:
                        time.sleep(0.3)
                print(render(run, window, port, panels, out))
            finally:
                prom.terminate()
                prom.wait(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
