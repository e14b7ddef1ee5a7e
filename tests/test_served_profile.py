"""vLLM's own torch profiler in a SERVED run (`vllm serve --profiler-config ...`, `POST /start_profile`,
`/stop_profile`; real vLLM CPU) with the plugin on and span files: the worker's step ranges appear in
the profiler's trace as user annotations, and `vllm-w2ext merge` puts the served run on one clock
(offset measured from those annotations) with the front end's requests, the EngineCore's steps and the
profiler's CPU ops. One server start serves every test of the module."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, clean_env
from support.vllm_server import tracebacks, vllm_serve

from vllm_w2ext.analysis.readers.kineto_raw import KinetoRawReader

MAX_TOKENS = 4
PROMPTS = ["t1 t2 t3", "t4 t5", "t6 t7 t8 t9"]


def post(port: int, path: str, body: dict | None = None, timeout: float = 180) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body or {}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def complete(port: int, prompt: str) -> dict:
    status, raw = post(port, "/v1/completions", {"model": "tiny", "prompt": prompt, "max_tokens": MAX_TOKENS,
                                                 "ignore_eos": True, "temperature": 0})
    assert status == 200, raw
    return json.loads(raw)


def readable(path: Path) -> bool:
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
            json.load(f)
        return True
    except (OSError, EOFError, ValueError):
        return False


def wait_profiler_traces(folder: Path, timeout: float = 120) -> list[Path]:
    """The worker's trace (rank*) and the front end's (*.async_llm.*), complete JSON."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        traces = sorted(folder.glob("*.pt.trace.json*"))
        if any("async_llm" not in t.name for t in traces) and all(readable(t) for t in traces):
            return traces
        time.sleep(0.5)
    raise AssertionError(f"no complete worker profiler trace in {folder}: {list(folder.rglob('*'))}")


def wait_span_files(folder: Path, n: int, requests: int, timeout: float = 60) -> None:
    """``n`` span files holding both sides' request spans of ``requests`` requests and a worker span for
    each of their steps (a file with something in it says nothing of its last packets)."""
    from vllm_w2ext.analysis.readers.pftrace import read_span_file
    deadline = time.monotonic() + timeout
    names: Counter = Counter()
    while time.monotonic() < deadline:
        files = [f for f in folder.glob("w2ext-*.pftrace") if f.stat().st_size > 0]
        if len(files) >= n:
            names = Counter(s.name for f in files for s in read_span_file(str(f)).slices)
            if names["vllm.request"] >= requests and names["engine.request"] >= requests and \
                    names["worker.execute_model"] >= requests * MAX_TOKENS:
                return
        time.sleep(0.5)
    raise AssertionError(f"span files did not catch up in {timeout} s: {len(files)} files, {dict(names)}")


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served_profile")
    torch_dir = tmp / "torch"
    profiler = {"profiler": "torch", "torch_profiler_dir": str(torch_dir), "torch_profiler_with_stack": False}
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_TRACE_DIR=str(tmp / "spans"))
    log = tmp / "server.log"
    t0 = time.monotonic()
    with vllm_serve(tiny_model, env, log, ROOT, "--max-num-seqs", "8",
                    "--profiler-config", json.dumps(profiler)) as port:
        answers = [complete(port, "t0 t0")]                     # one request before the profiled window
        assert post(port, "/start_profile")[0] == 200
        answers += [complete(port, p) for p in PROMPTS]
        assert post(port, "/stop_profile")[0] == 200
        traces = wait_profiler_traces(torch_dir)
        # Span files are written by each process's export process, a little behind vLLM; vLLM's
        # shutdown kills the EngineCore's process tree (workers and their export processes with it),
        # so let the three files catch up before stopping the server.
        wait_span_files(tmp / "spans", 3, len(answers))
    served_s = time.monotonic() - t0
    out = tmp / "merged.json.gz"
    p = subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", "merge", "--out", str(out), str(tmp)],
                       capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert p.returncode == 0, p.stdout + p.stderr
    with gzip.open(out, "rt") as f:
        doc = json.load(f)
    return {"answers": answers, "traces": traces, "log": log.read_text(), "merge": p, "doc": doc,
            "served_s": served_s, "spans": sorted((tmp / "spans").glob("w2ext-*.pftrace"))}


def test_served_requests_complete(served):
    answers = served["answers"]
    assert len(answers) == 1 + len(PROMPTS)
    assert all(a["usage"]["completion_tokens"] == MAX_TOKENS for a in answers)
    assert all(a["choices"][0]["finish_reason"] == "length" for a in answers)
    assert not tracebacks(served["log"])


def test_worker_step_annotations_in_the_served_profiler_trace(served):
    worker = [t for t in served["traces"] if "async_llm" not in t.name]
    assert worker and any("async_llm" in t.name for t in served["traces"])    # worker's and front end's
    names = [e["name"] for t in worker for _, e in KinetoRawReader(str(t)) if e.get("cat") == "user_annotation"]
    steps = {int(n.rsplit("#", 1)[1]) for n in names if n.startswith("worker.execute_model #")}
    # 3 requests of 4 tokens, one at a time: a prefill and 3 decode steps each, all inside the window
    assert len(steps) >= len(PROMPTS) * MAX_TOKENS, names[:30]
    assert any(n.startswith("worker.forward #") for n in names)
    assert any(n.startswith("execute_context_") for n in names)   # vLLM's own step annotations beside ours


def test_merge_of_the_served_run_measures_the_clock_offset(served):
    info = served["doc"]["w2extMerge"]
    assert info["clock_offset_measured"] and info["matched_annotations"] >= len(PROMPTS) * MAX_TOKENS
    assert abs(info["clock_offset_ns"]) < 5_000_000, info            # one host: clocks agree within 5 ms
    assert 0 <= info["offset_spread_ns"] < 5_000_000
    assert info["warnings"] == []
    assert len(info["span_files"]) == len(served["spans"]) >= 2      # front end + EngineCore (+ worker)
    roles = {r for sf in info["span_files"] for r in sf["roles"]}
    assert {"frontend", "engine_core", "worker"} <= roles, roles
    assert len(info["profiler_traces"]) == len(served["traces"])
    out = served["merge"].stdout
    assert f"clock offset (profiler - time.time_ns): {info['clock_offset_ns'] / 1e3:+.3f} us" in out


def test_merged_served_trace_holds_spans_requests_and_cpu_ops(served):
    events = served["doc"]["traceEvents"]
    ours = Counter(e["name"] for e in events if e.get("cat") == "w2ext" and e.get("ph") == "X")
    assert ours["vllm.request"] == len(served["answers"])            # front end (API server process)
    assert ours["engine.request"] == len(served["answers"])
    assert ours["engine.step"] >= len(served["answers"]) * MAX_TOKENS
    assert ours["worker.execute_model"] >= ours["engine.step"] - 1
    assert any(e.get("cat") == "cpu_op" and e["name"].startswith("aten::") for e in events)
    flows = Counter(e["name"] for e in events if e.get("cat") == "w2ext.flow" and e.get("ph") == "s")
    assert flows["front->engine"] == len(served["answers"])          # same request across processes
    assert flows["step->profiler"] >= len(PROMPTS) * MAX_TOKENS
    assert flows["step->op"] >= len(PROMPTS) * MAX_TOKENS
    # after the measured shift each profiled engine.step encloses its worker's profiler annotation
    steps = {e["args"]["step"]: e for e in events
             if e.get("cat") == "w2ext" and e.get("name") == "engine.step"}
    annots = [e for e in events if e.get("cat") == "user_annotation"
              and e["name"].startswith("worker.execute_model #")]
    inside = 0
    for a in annots:
        st = steps.get(int(a["name"].rsplit("#", 1)[1]))
        if st is not None and st["ts"] <= a["ts"] and a["ts"] + a["dur"] <= st["ts"] + st["dur"]:
            inside += 1
    assert annots and inside == len(annots), (inside, len(annots))
