"""vLLM's parallel engines on real vLLM (the CPU build): tensor parallel 2 offline and data parallel 2
served. Every span (its OTLP resource), metric series and trace file says which engine (the DP rank)
and which TP / PP rank it comes from; the one metrics endpoint shows every engine x rank; ``explain``
groups by engine and rank.

Two runs, one each, side by side:
- TP=2 offline (``LLM(tensor_parallel_size=2)``) runs the way vLLM runs a script's ``LLM`` on the GPU:
  the EngineCore and the workers are *forked* (vLLM's default start method there; the CPU build asks
  for spawn, so without this no CPU test would take that path), and at the end the workers are
  SIGKILLed, as vLLM's executor does with workers that do not exit in time (no atexit, no shutdown
  hook). Issue #14 item 5: vLLM 0.26's GPU workers at TP=2 wrote no trace files.
- DP=2 served (``vllm serve --data-parallel-size 2``) runs the CLI's way: spawned processes, two
  EngineCores with a worker each, and two API servers (vLLM's default with DP), started by a main
  process that builds no engine.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, concurrently, run_offline
from prometheus_client.parser import text_string_to_metric_families
from support.vllm_server import free_port, vllm_serve

from vllm_w2ext.analysis.readers.pftrace import read_span_file
from vllm_w2ext.receiver import OTLPReceiver
from vllm_w2ext.vocab import ENGINE, FRONT, WORKER, Attr, Span

BIND = {"VLLM_CPU_OMP_THREADS_BIND": "0|1"}     # one core per rank (TP) / per engine (DP)
SERIES = ("vllm_w2ext_phase_duration_seconds", "vllm_w2ext_engine_steps")


@dataclass
class Run:
    spans: list                 # the plugin's spans (vLLM's own start-up spans left out)
    files: dict                 # pid -> SpanFile
    metrics: str                # the metrics endpoint's text
    trace_dir: Path
    log: str = ""
    killed: tuple = ()
    exported_by_ns: int = 0     # served: spans collected at this time, before the shutdown (0: after exit)
    pause_check: tuple = ()     # offline TP=2: per-process hook calls at each pause/resume switch
    pause_scoped: tuple = ()    # the same with one side paused: the front end, then the engine's processes


def _plugin_spans(spans) -> list:
    return [s for s in spans if s.role]


def _settled(rx, pred, timeout: float = 60.0, quiet_s: float = 2.0) -> list:
    """The plugin's spans once ``pred`` holds and no new span arrived for ``quiet_s`` (the export
    processes of killed or exited processes flush on their own after vLLM is gone)."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        spans = _plugin_spans(rx.spans())
        if len(spans) != last:
            last, since = len(spans), time.monotonic()
        elif pred(spans) and time.monotonic() - since >= quiet_s:
            return spans
        time.sleep(0.25)
    return _plugin_spans(rx.spans())


def _files(trace_dir: Path) -> dict:
    return {sf.pid: sf for sf in map(read_span_file, map(str, sorted(trace_dir.glob("w2ext-*.pftrace"))))}


def _series(text: str) -> dict[str, set]:
    """family -> {(role, engine, rank, tp_rank, pp_rank)} of the samples on the endpoint; fails on a
    duplicate series."""
    out: dict[str, set] = {}
    seen = Counter()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            seen[(s.name, tuple(sorted(s.labels.items())))] += 1
            if "role" in s.labels:
                out.setdefault(fam.name, set()).add(tuple(s.labels[k] for k in ("role", "engine", "rank", "tp_rank",
                                                                                 "pp_rank")))
    dup = [k for k, n in seen.items() if n > 1]
    assert not dup, f"duplicate series on the endpoint: {dup[:3]}"
    return out


def _explain_devices(trace_dir: Path) -> set:
    p = subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", "explain", str(trace_dir), "--format", "json"],
                       capture_output=True, text=True, timeout=120, cwd=str(ROOT), env=clean_env())
    assert p.returncode == 0, p.stderr[-3000:]
    return {(d["engine"], d["rank"], d["pid"]) for d in json.loads(p.stdout)["devices"]}


def _by_pid(spans, role: str) -> dict[int, list]:
    out: dict[int, list] = {}
    for s in spans:
        if s.role == role:
            out.setdefault(s.pid, []).append(s)
    return out


def _resource(spans: list) -> dict:
    """The one resource every span of a process carries (its identity)."""
    keys = {Attr.ENGINE_INDEX, Attr.RANK, Attr.TP_RANK, Attr.PP_RANK, Attr.DP_RANK, "vllm.api_server_index"}
    got = {tuple(sorted((k, v) for k, v in s.resource.items() if k in keys)) for s in spans}
    assert len(got) == 1, got
    return dict(next(iter(got)))


def _check_files_match_otlp(run: Run) -> None:
    """Each process's trace file holds the spans its OTLP resource got, and is named after it."""
    by_pid: dict[int, list] = {}
    for s in run.spans:
        by_pid.setdefault(s.pid, []).append(s)
    for pid, spans in by_pid.items():
        sf = run.files.get(pid)
        assert sf is not None, f"no trace file w2ext-{pid}.pftrace ({spans[0].role}): {sorted(run.files)}"
        assert sf.open_slices == 0 and sf.truncated_bytes == 0
        # served, the files are read after vLLM's shutdown, which may record a last step whose export
        # process it force-kills before OTLP got it: compare what started before the spans were collected
        on_file = [s for s in sf.slices if not run.exported_by_ns or s.start_ns < run.exported_by_ns]
        assert Counter(s.name for s in on_file) == Counter(s.name for s in spans), (pid, sf.process_name)


# -- tensor parallel 2, offline, forked, workers SIGKILLed ------------------------------------------------
def _tp2(tiny_model, otlp_receiver, tmp) -> Run:
    otlp_receiver.clear()
    mport = free_port()
    # every 200 ms: the pause check counts export wakes in intervals (the default auto wait may wait up to 1 s where
    # there is little to send)
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_TRACE_DIR=str(tmp / "traces"), VLLM_W2EXT_METRICS_PORT=str(mport),
                    VLLM_W2EXT_EXPORT_INTERVAL_MS="200", **BIND, **otlp_receiver.env("grpc"))
    result, log = run_offline(tiny_model, env, tmp / "out.json", with_log=True, prompts=4, max_tokens=5,
                              tensor_parallel_size=2, start_method="fork", metrics_port=mport,
                              phases=[{"rounds": 1}], pause_check=True, kill_workers=1.5)
    assert len(result["killed_workers"]) == 2, result
    killed = tuple(result["killed_workers"])
    spans = _settled(otlp_receiver, lambda s: set(_by_pid(s, WORKER)) >= set(killed) and _by_pid(s, ENGINE)
                     and _by_pid(s, FRONT))
    return Run(spans, _files(tmp / "traces"), result["phases"][-1]["metrics"], tmp / "traces", log, killed,
               pause_check=tuple(result["pause_check"]), pause_scoped=tuple(result["pause_scoped"]))


def test_tp2_spans_say_engine_and_ranks(tp2):
    workers = _by_pid(tp2.spans, WORKER)
    assert set(workers) == set(tp2.killed)
    ids = sorted((_resource(sp) for sp in workers.values()), key=lambda r: r[Attr.RANK])
    assert ids == [{Attr.ENGINE_INDEX: 0, Attr.RANK: r, Attr.TP_RANK: r, Attr.PP_RANK: 0, Attr.DP_RANK: 0}
                   for r in (0, 1)]
    (core,) = _by_pid(tp2.spans, ENGINE).values()
    assert _resource(core) == {Attr.ENGINE_INDEX: 0, Attr.DP_RANK: 0}
    (front,) = _by_pid(tp2.spans, FRONT).values()
    assert _resource(front) == {}                  # offline: one front end, no engine of its own
    # both ranks executed every step the EngineCore dispatched to the model
    dispatched = {s.step for s in core if s.name == Span.EXECUTE}
    for sp in workers.values():
        assert {s.step for s in sp if s.name == Span.WORKER_EXECUTE} == dispatched


def test_tp2_trace_files_forked_and_killed_workers(tp2):
    """Forked processes start their own export process (the parent's pipes closed for good, not
    re-closed later under a reused number) and do not inherit the parent's role; a SIGKILLed worker's
    export process still completes its file."""
    assert len(tp2.files) == 4, {p: f.process_name for p, f in tp2.files.items()}
    names = {pid: sf.process_name for pid, sf in tp2.files.items()}
    core_pid, = _by_pid(tp2.spans, ENGINE)
    front_pid, = _by_pid(tp2.spans, FRONT)
    assert names[front_pid] == f"vLLM front end (pid {front_pid})"
    assert names[core_pid] == f"vLLM EngineCore engine 0 (pid {core_pid})"
    for pid in tp2.killed:
        rank = _resource(_by_pid(tp2.spans, WORKER)[pid])[Attr.RANK]
        assert names[pid] == f"vLLM worker engine 0 rank {rank} TP{rank} PP0 DP0 (pid {pid})"
    _check_files_match_otlp(tp2)
    assert "export process" not in tp2.log or "is gone" not in tp2.log


def test_tp2_pause_reaches_every_process(tp2):
    """hooks/control.py at TP=2: paused, no hook runs in the front end, the EngineCore or either worker
    (their call counts stay put over a whole generate); resumed, every one of them runs hooks again. Their export
    threads too: over a paused generate and 1 s (five of the run's 200 ms intervals) each woke at most twice (the
    pause's own flush, and a timer wake that raced it); resumed, over as long, at least three times."""
    checks = tp2.pause_check
    procs = [[c["counts"]["front"], *c["counts"]["engine"]] for c in checks]
    assert len({p["pid"] for p in procs[0]}) == 4, procs[0]          # front end, EngineCore, two workers
    paused, resumed = list(zip(procs[0], procs[1])), list(zip(procs[1], procs[2]))
    assert all(b["calls"] == a["calls"] for a, b in paused), procs
    assert all(b["calls"] > a["calls"] for a, b in resumed), procs
    assert all(b["export_wakes"] - a["export_wakes"] <= 2 for a, b in paused), procs
    assert all(b["export_wakes"] - a["export_wakes"] >= 3 for a, b in resumed), procs


def test_tp2_pause_of_one_side_leaves_the_other_running(tp2):
    """control.set_everywhere's front= / engine= (what toggle_ab.py --flip-scope switches): with the front end
    paused over a generate, its hook calls stay put while the EngineCore's and both workers' grow; with the
    engine's processes paused, theirs stay put while the front end's grow."""
    (front, engine) = tp2.pause_scoped
    assert front["paused"] == "front" and engine["paused"] == "engine"
    for check, stays, grows in ((front, ["front"], ["engine"]), (engine, ["engine"], ["front"])):
        before, after = check["before"], check["after"]
        pair = {"front": [(before["front"], after["front"])],
                "engine": list(zip(before["engine"], after["engine"]))}
        assert len(pair["engine"]) == 3 and len({b["pid"] for b, _ in pair["engine"]}) == 3, check
        assert all(a["pid"] == b["pid"] for side in pair.values() for b, a in side), check
        assert all(a["calls"] == b["calls"] for side in stays for b, a in pair[side]), check
        assert all(a["calls"] > b["calls"] for side in grows for b, a in pair[side]), check


def test_tp2_metrics_every_rank(tp2):
    series = _series(tp2.metrics)
    for fam in SERIES:
        assert {("engine_core", "0", "na", "na", "na")} <= series[fam], (fam, series.get(fam))
    assert {("worker", "0", "0", "0", "0"), ("worker", "0", "1", "1", "0")} <= series["vllm_w2ext_phase_duration_seconds"]


def test_tp2_explain_one_device_per_rank(tp2):
    devices = _explain_devices(tp2.trace_dir)
    assert {(e, r) for e, r, _ in devices} == {("0", "0"), ("0", "1")}
    assert {p for _, _, p in devices} == set(tp2.killed)


# -- data parallel 2, served ----------------------------------------------------------------------------
def _complete(port: int, i: int) -> None:
    body = json.dumps({"model": "tiny", "prompt": f"t{i + 10} t{i + 11} t{i + 12}", "max_tokens": 4,
                       "ignore_eos": True}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert json.loads(r.read())["usage"]["completion_tokens"] == 4


def _scrape_until(mport: int, pred, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
            text = r.read().decode()
        if pred(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def _dp2(tiny_model, otlp_receiver, tmp) -> Run:
    otlp_receiver.clear()
    mport = free_port()
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_TRACE_DIR=str(tmp / "traces"), VLLM_W2EXT_METRICS_PORT=str(mport),
                    **BIND, **otlp_receiver.env("grpc"))
    want = {("engine_core", "0"), ("engine_core", "1"), ("worker", "0"), ("worker", "1")}

    def every_engine(text: str) -> bool:
        got = {(s.labels.get("role"), s.labels.get("engine")) for fam in text_string_to_metric_families(text)
               if fam.name == "vllm_w2ext_phase_duration_seconds" for s in fam.samples}
        return want <= got

    with vllm_serve(tiny_model, env, tmp / "server.log", ROOT, "--data-parallel-size", "2") as port:
        threads = [threading.Thread(target=_complete, args=(port, i)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = _scrape_until(mport, every_engine)
        # everything exported while the server is up: vLLM's process manager force-kills the EngineCores'
        # process trees at once on shutdown, export processes included (a limit stated in the README)
        spans = _settled(otlp_receiver, lambda s: len(_by_pid(s, WORKER)) == 2 and len(_by_pid(s, ENGINE)) == 2)
        exported_by = time.time_ns()
    return Run(spans, _files(tmp / "traces"), metrics, tmp / "traces", (tmp / "server.log").read_text(),
               exported_by_ns=exported_by)


@pytest.fixture(scope="module")
def runs(tiny_model, otlp_receiver, tmp_path_factory) -> tuple[Run, Run]:
    """The TP=2 and DP=2 runs side by side (conftest.concurrently), DP=2 exporting to a receiver of its
    own: what the tests check is identity, files and series, not timing."""
    tp_tmp, dp_tmp = tmp_path_factory.mktemp("tp2"), tmp_path_factory.mktemp("dp2")
    dp_rx = OTLPReceiver().start()
    try:
        return tuple(concurrently(lambda: _tp2(tiny_model, otlp_receiver, tp_tmp),
                                  lambda: _dp2(tiny_model, dp_rx, dp_tmp)))
    finally:
        dp_rx.stop()


@pytest.fixture(scope="module")
def tp2(runs) -> Run:
    return runs[0]


@pytest.fixture(scope="module")
def dp2(runs) -> Run:
    return runs[1]


def test_dp2_spans_say_engine_and_ranks(dp2):
    cores = {_resource(sp)[Attr.ENGINE_INDEX]: pid for pid, sp in _by_pid(dp2.spans, ENGINE).items()}
    assert sorted(cores) == [0, 1]
    for pid, sp in _by_pid(dp2.spans, ENGINE).items():
        e = _resource(sp)[Attr.ENGINE_INDEX]
        assert _resource(sp) == {Attr.ENGINE_INDEX: e, Attr.DP_RANK: e}
    workers = sorted((_resource(sp) for sp in _by_pid(dp2.spans, WORKER).values()),
                     key=lambda r: r[Attr.ENGINE_INDEX])
    assert workers == [{Attr.ENGINE_INDEX: e, Attr.RANK: 0, Attr.TP_RANK: 0, Attr.PP_RANK: 0, Attr.DP_RANK: e}
                       for e in (0, 1)]
    # both engines ran requests; the front ends say which API server they are (vLLM starts two)
    assert all(any(s.name == Span.WORKER_EXECUTE for s in sp) for sp in _by_pid(dp2.spans, WORKER).values())
    fronts = _by_pid(dp2.spans, FRONT)
    assert fronts
    for sp in fronts.values():
        r = _resource(sp)
        assert r["vllm.api_server_index"] in (0, 1) and r[Attr.RANK] == r["vllm.api_server_index"]


def test_dp2_trace_files(dp2):
    names = {pid: sf.process_name for pid, sf in dp2.files.items()}
    for pid, sp in _by_pid(dp2.spans, ENGINE).items():
        assert names[pid] == f"vLLM EngineCore engine {_resource(sp)[Attr.ENGINE_INDEX]} (pid {pid})"
    for pid, sp in _by_pid(dp2.spans, WORKER).items():
        e = _resource(sp)[Attr.ENGINE_INDEX]
        assert names[pid] == f"vLLM worker engine {e} rank 0 TP0 PP0 DP{e} (pid {pid})"
    for pid, sp in _by_pid(dp2.spans, FRONT).items():
        assert names[pid] == f"vLLM front end API server {_resource(sp)['vllm.api_server_index']} (pid {pid})"
    _check_files_match_otlp(dp2)


def test_dp2_one_endpoint_every_engine(dp2):
    """API server 0 serves the instance's endpoint (API server 1 does not try: no port clash); every
    EngineCore and worker writes into the folder the main process chose before starting them."""
    assert "Address already in use" not in dp2.log
    series = _series(dp2.metrics)
    na = ("na", "na", "na")
    assert {("engine_core", "0", *na), ("engine_core", "1", *na)} <= series["vllm_w2ext_engine_steps"]
    assert {("worker", "0", "0", "0", "0"), ("worker", "1", "0", "0", "0"), ("engine_core", "0", *na),
            ("engine_core", "1", *na)} <= series["vllm_w2ext_phase_duration_seconds"]


def test_dp2_explain_one_device_per_engine(dp2):
    devices = _explain_devices(dp2.trace_dir)
    assert {(e, r) for e, r, _ in devices} == {("0", "0"), ("1", "0")}
    assert {p for _, _, p in devices} == set(_by_pid(dp2.spans, WORKER))
