"""SIGKILL of the EngineCore and the worker of a real offline vLLM run in the middle of generating: their
export processes write what they had received and exit; the per-process Perfetto files open in the real
Perfetto UI with every slice on file before the kill still there and none left open, and ``vllm-w2ext
merge`` turns the partial run into one trace."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
from conftest import ROOT, TESTS, clean_env
from support.perfetto_ui import PerfettoUI

from vllm_w2ext.analysis.readers.pftrace import read_span_file

STEPS_BEFORE_KILL = 40        # engine steps on file (spans are appended every VLLM_W2EXT_EXPORT_INTERVAL_MS)
MIN_BYTES = 24_000            # about that many steps' slices in the EngineCore and worker files


def _by_role(traces):
    out = {}
    for f in traces.glob("w2ext-*.pftrace"):
        sf = read_span_file(str(f))
        for role in sf.roles:
            out[role] = sf
    return out


def test_sigkill_engine_core_and_worker_mid_run(tiny_model, tmp_path):
    traces = tmp_path / "traces"
    # generates until killed, pausing between rounds so that the export processes keep up on 2 cores
    # (what they hold at the kill is drained before the files are read: less backlog, a shorter test)
    params = {"prompts": 4, "max_tokens": 8, "phases": [{"rounds": 10**6, "pause_s": 0.1}]}
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen([sys.executable, str(TESTS / "drivers" / "offline.py"), str(tiny_model),
                               str(tmp_path / "out.json"), json.dumps(params)],
                              env=clean_env(VLLM_W2EXT="1", VLLM_W2EXT_TRACE_DIR=str(traces)),
                              stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True)
    try:
        deadline = time.time() + 400
        while True:
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            assert time.time() < deadline, "the run never reached the kill point"
            time.sleep(0.2)
            if sum(f.stat().st_size >= MIN_BYTES for f in traces.glob("w2ext-*.pftrace")) < 2:
                continue                                          # cheap check first: files still small
            roles = _by_role(traces)
            eng, wrk = roles.get("engine_core"), roles.get("worker")
            if eng and wrk and min(sum(s.name == "engine.step" for s in eng.slices),
                                   sum(s.name == "worker.execute_model" for s in wrk.slices)) >= STEPS_BEFORE_KILL:
                break
        children = {c.pid: c for c in psutil.Process(driver.pid).children(recursive=True)}
        assert {eng.pid, wrk.pid} <= children.keys()              # the files name the driver's own children
        procs = [children[eng.pid], children[wrk.pid]]
        exporters = [c for p in procs for c in p.children() if "vllm_w2ext.export_child" in " ".join(c.cmdline())]
        assert len(exporters) == 2, exporters                      # one export process each
        before = {sf.pid: len(read_span_file(sf.path).slices) for sf in (eng, wrk)}
        for p in (wrk, eng):
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:       # the EngineCore may exit on its own the moment its worker dies
                pass
        gone, alive = psutil.wait_procs(procs, timeout=30)
        assert not alive
        # their export processes write what they had received, then exit on end of input
        gone, alive = psutil.wait_procs(exporters, timeout=120)
        assert not alive, alive
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)                # the front end and anything left of the run
        except ProcessLookupError:
            pass
        driver.wait(timeout=60)
        log.close()

    after = {sf.pid: read_span_file(sf.path) for sf in (eng, wrk)}
    for pid, sf in after.items():
        assert len(sf.slices) >= before[pid] and sf.open_slices == 0, (pid, before[pid], len(sf.slices))

    out = tmp_path / "merged.json.gz"
    p = subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", "merge", "--out", str(out), str(traces)],
                       capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "not measured (no profiler trace)" in p.stdout

    q = {"names": "select name, count(*) n from slice group by name",
         "procs": "select distinct p.pid from slice s join thread_track tt on s.track_id = tt.id "
                  "join thread using(utid) join process p using(upid)"}
    with PerfettoUI() as ui:
        for pid, sf in after.items():
            r = ui.load(sf.path, {"n": "select count(*) n from slice"}, tmp_path / f"killed-{pid}.png")
            assert r["ok"] and r["import_errors"] == [], (pid, r.get("error"), r.get("import_errors"))
            assert r["rows"]["n"][0]["n"] == len(sf.slices) >= before[pid]   # everything flushed before the kill
        m = ui.load(out, q, tmp_path / "merged.png")
    assert m["ok"] and m["import_errors"] == [], (m.get("error"), m.get("import_errors"))
    names = {r["name"]: r["n"] for r in m["rows"]["names"]}
    assert names["engine.step"] >= STEPS_BEFORE_KILL and names["worker.execute_model"] >= STEPS_BEFORE_KILL
    assert {eng.pid, wrk.pid} <= {r["pid"] for r in m["rows"]["procs"]}
