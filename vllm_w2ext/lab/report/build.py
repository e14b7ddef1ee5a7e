"""The lab's report from a results folder: ``python -m vllm_w2ext.lab.report DIR [--reference F]``
writes ``DIR/report.md``, ``DIR/report.html`` (static, images relative) and the PNG charts, plus
``DIR/summary.json``; ``DIR/notes.md`` (paragraphs), when present, is placed under the comparison.
Compares with the lab's numbers for the run's GPU (``benchmarks/lab_data/lab_reference_h100.json``: its
H100 table and other-GPU columns) and flags every difference over 10 %; ``--beside DIR`` sets the run
beside another of ours on another GPU (ratios, the lab's ratios, the HBM-bandwidth check for decode).
Never imports vLLM.

The steps: summary.py (the numbers), charts.py (PNGs), blocks.py (the report's sections), markup.py
(markdown and HTML)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vllm_w2ext.lab.report.charts import ALL as ALL_CHARTS
from vllm_w2ext.lab.report.blocks import blocks
from vllm_w2ext.lab.report.markup import to_html, to_markdown
from vllm_w2ext.lab.report.summary import beside, summarise

REFERENCE = Path(__file__).resolve().parents[3] / "benchmarks" / "lab_data" / "lab_reference_h100.json"


def build(out: str, reference: str | Path = REFERENCE, beside_dir: str | None = None) -> dict:
    ref = json.loads(Path(reference).read_text())
    s = summarise(out, ref)
    if beside_dir:
        s["beside"] = beside(s, summarise(beside_dir, ref), ref)
    charts = {}
    for title, fn in ALL_CHARTS.items():
        try:
            charts[title] = fn(s, out)
        except ImportError:                       # matplotlib is in the `lab` extra
            charts[title] = None
    bs = blocks(s, charts)
    Path(out, "report.md").write_text(to_markdown(bs))
    Path(out, "report.html").write_text(to_html(bs, f"vllm-w2ext lab ({s['target']})"))
    s["charts"] = charts
    Path(out, "summary.json").write_text(json.dumps(s, indent=1, default=str))
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vllm_w2ext.lab.report", description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--reference", default=str(REFERENCE))
    ap.add_argument("--beside", metavar="RESULTS_DIR", help="another of our lab runs, on another GPU (e.g. "
                    "benchmarks/results/h100/lab): each measure's ratio, the lab's, and the bandwidth check")
    a = ap.parse_args(argv)
    if a.beside and not Path(a.beside, "raw").is_dir():
        ap.error(f"--beside {a.beside!r} has no raw/ folder")
    if not Path(a.results, "raw").is_dir():
        ap.error(f"RESULTS_DIR {a.results!r} has no raw/ folder (run benchmarks/lab.py --out {a.results} first)")
    s = build(a.results, a.reference, a.beside)
    print(f"wrote {a.results}/report.md, report.html, summary.json and charts: "
          + ", ".join(c for c in s["charts"].values() if c))
    return 0
