"""The README's first command, ``python -m vllm_w2ext.lab.demo``, at its default size on real vLLM (CPU):
long enough for at least 20 metric scrapes, every panel drawn with data (on the CPU the device panels
read the worker's forwards), ``report.html`` with explain's findings and the panels (rendered in
headless Chromium), a merged Perfetto trace, and what to open printed at the end."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

import pytest
from conftest import ROOT, clean_env
from support.perfetto_ui import screenshot


@pytest.fixture(scope="module")
def demo(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "vllm_w2ext.lab.demo", "--out", str(out), "--model", str(tiny_model)],
                       env=clean_env(), capture_output=True, text=True, timeout=900, cwd=str(ROOT))
    wall = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:] + (out / "workload.log").read_text()[-3000:]
    return {"out": out, "stdout": p.stdout, "wall": wall}


def test_demo_runs_long_enough_and_every_panel_has_data(demo):
    out = demo["out"]
    scrapes = (out / "scrape_demo.prom").read_text().count("# SCRAPE ")
    assert scrapes >= 20, scrapes
    panels = json.loads((out / "panels_demo.json").read_text())["panels"]
    assert len(panels) == 6
    for p in panels:
        assert p["note"] is None and p["lines"] + p["areas"] > 0, p        # drawn, not "no data"
    assert any("no CUDA" in p["title"] for p in panels)                    # the device panel says what it reads
    phases = json.loads((out / "phases.json").read_text())
    assert [p["phase"] for p in phases] == ["burst", "trickle", "long prompts"]
    assert all(p["requests"] > 0 for p in phases)


def test_demo_report_has_explain_and_panels(demo, tmp_path):
    out = demo["out"]
    explain = (out / "explain.txt").read_text()
    assert "Findings, by time lost" in explain
    assert "requests outside it" in explain               # the wall window covers the engine-driven phases
    html = (out / "report.html").read_text()
    assert "Findings, by time lost" in html and "panels_demo.png" in html and "vllm-w2ext view" in html
    # the plugin's cost in words: per engine step, and the EngineCore export thread's stall per flush
    assert "µs per executed engine step" in html and "ms per flush at the median" in html
    shot = screenshot(out / "report.html", tmp_path / "report.png", width=1400, height=900)
    assert shot["title"] == "vllm-w2ext demo"
    with gzip.open(out / "trace.json.gz", "rt") as f:
        doc = json.load(f)
    assert len(doc["w2extMerge"]["span_files"]) == 3                        # front end, EngineCore, worker


def test_demo_prints_what_to_open(demo):
    s = demo["stdout"]
    assert "What to open:" in s and "report.html" in s
    assert "vllm-w2ext view" in s and "trace.json.gz" in s and "vllm-w2ext explain" in s
