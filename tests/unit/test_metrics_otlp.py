"""OTLP metrics and exemplars without vLLM: synthetic ranges shaped like a real run's go through the
export side's MetricsSink (the same code the export process runs) to the bundled OTLP receiver over
real gRPC and HTTP, in both temporalities; the Prometheus side's snapshots and the merged endpoint
carry the same exemplars. The real-vLLM runs are in tests/test_otlp_metrics.py."""
from __future__ import annotations

import bisect
import glob
import os
import time
import urllib.request
from pathlib import Path

import pytest
from metrics_ranges import adopt_identity, run_ranges
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text
from support.collectors import BlackHole

from vllm_w2ext import config
from vllm_w2ext.lab import free_port
from vllm_w2ext.receiver import OTLPReceiver
from vllm_w2ext.telemetry import identity, metrics_server
from vllm_w2ext.telemetry.exporters import ExportChain
from vllm_w2ext.telemetry.instruments import (
    COUNTER,
    CUDA,
    GAUGE,
    HISTOGRAM,
    INSTRUMENTS,
    LABELS,
    markdown_table,
    prometheus_name,
)
from vllm_w2ext.telemetry.metrics import MetricsSink, StepMetrics
from vllm_w2ext.telemetry.wire import ZERO_COST

ROOT = Path(__file__).resolve().parents[2]
OTEL_KEYS = ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
             "OTEL_EXPORTER_OTLP_METRICS_INSECURE", "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
             "OTEL_METRIC_EXPORT_INTERVAL", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_ENDPOINT",
             "OTEL_EXPORTER_OTLP_PROTOCOL")


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch):
    for k in OTEL_KEYS:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def as_export_process():
    """Speak for a made-up vLLM process with all three roles; restore the identity afterwards."""
    saved = (identity.roles(), dict(identity._adopted))
    adopt_identity()
    yield
    identity._role_attrs.clear()
    identity._role_attrs.update(saved[0])
    identity._adopted.clear()
    identity._adopted.update(saved[1])
    identity._resources.clear()


@pytest.fixture(scope="module")
def receiver():
    rx = OTLPReceiver().start()
    yield rx
    rx.stop()


def cost():
    return ZERO_COST._replace(recorded=10, hook_errors={"engine_core.step": 1}, export_flushes=3,
                              export_holds=(1e-4, 2e-4, 1e-3), hook_direct_s=2e-3, hook_direct_calls=100,
                              hook_direct_by_hook={"engine.step": 1.5e-3, "engine.schedule": 5e-4}, gc_s=4e-3,
                              gc_collections=3), \
        time.process_time()


def feed(sink: MetricsSink, ranges, batch: int = 64) -> None:
    for i in range(0, len(ranges), batch):
        sink.consume(ranges[i:i + batch])
        sink.tick()


# --- names ------------------------------------------------------------------------------------------

def test_otel_names_translate_to_the_prometheus_names():
    """OpenTelemetry's Prometheus translation of each OTel name + unit gives the endpoint's name."""
    assert len({i.otel for i in INSTRUMENTS}) == len({i.prom for i in INSTRUMENTS}) == len(INSTRUMENTS)
    for i in INSTRUMENTS:
        assert prometheus_name(i.otel, i.unit, i.kind) == i.prom_samples, i
        assert i.otel.startswith("vllm_w2ext.") and i.otel == i.otel.lower()
        assert (i.kind == HISTOGRAM) == (i.buckets is not None)
        assert not i.exemplars or i.kind in (HISTOGRAM, COUNTER)


def test_translation_rules():
    assert prometheus_name("http.server.request.duration", "s", HISTOGRAM) == "http_server_request_duration_seconds"
    assert prometheus_name("a.b", "{request}", COUNTER) == "a_b_total"
    assert prometheus_name("a.busy_ratio", "1", GAUGE) == "a_busy_ratio"
    assert prometheus_name("a.x", "1", GAUGE) == "a_x_ratio"
    assert prometheus_name("a.x_seconds", "s", COUNTER) == "a_x_seconds_total"


def test_registry_is_the_instrument_table():
    m = StepMetrics()
    fams = {f.name: f for f in m.registry.collect()}
    for i in INSTRUMENTS:
        assert fams[i.prom].type == i.kind and fams[i.prom].documentation == i.doc


def test_metrics_md_has_the_current_table():
    text = (ROOT / "METRICS.md").read_text()
    assert markdown_table() in text, "METRICS.md name table is stale: paste instruments.markdown_table()"


# --- settings --------------------------------------------------------------------------------------

def test_otlp_metrics_auto_follows_the_endpoint_variables(monkeypatch):
    assert not config.load({"VLLM_W2EXT": "1"}).otlp_metrics_enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert config.load({"VLLM_W2EXT": "1"}).otlp_metrics_enabled
    assert not config.load({"VLLM_W2EXT": "1", "VLLM_W2EXT_OTLP_METRICS": "off"}).otlp_metrics_enabled
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://127.0.0.1:4317")
    assert config.load({"VLLM_W2EXT": "1"}).otlp_metrics_enabled
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4317")   # traces only
    assert not config.load({"VLLM_W2EXT": "1"}).otlp_metrics_enabled
    assert config.load({"VLLM_W2EXT": "1", "VLLM_W2EXT_OTLP_METRICS": "on"}).otlp_metrics_enabled
    assert config.load({}).exemplars == "on"


@pytest.mark.parametrize("name,value,accepted", [
    ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "deltas", "expected one of cumulative, delta, lowmemory"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "soon", "expected milliseconds"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "0", "expected milliseconds"),
    ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "thrift", "expected one of grpc, http/protobuf"),
    ("VLLM_W2EXT_OTLP_METRICS", "yes", "expected one of auto, on, off"),
    ("VLLM_W2EXT_EXEMPLARS", "some", "expected one of on, off"),
])
def test_bad_metrics_variables_stop_start_up(name, value, accepted):
    env = {"VLLM_W2EXT": "1", "VLLM_W2EXT_OTLP_METRICS": "on", name: value}
    with pytest.raises(config.SettingsError) as e:
        config.load(env)
    assert name in str(e.value) and accepted in str(e.value)


def test_otel_variables_unchecked_when_otlp_metrics_off():
    config.load({"VLLM_W2EXT": "1", "OTEL_METRIC_EXPORT_INTERVAL": "soon"})     # auto, no endpoint: off


# --- OTLP: every instrument, both protocols, both temporalities --------------------------------------

@pytest.mark.parametrize("protocol,temporality", [("grpc", "cumulative"), ("http", "delta"),
                                                  ("grpc", "delta"), ("http", "cumulative")])
def test_every_instrument_reaches_the_receiver(receiver, monkeypatch, as_export_process, protocol, temporality,
                                               tmp_path):
    receiver.clear()
    for k, v in receiver.metrics_env(protocol, temporality, 200).items():
        monkeypatch.setenv(k, v)
    ranges = run_ranges(96, cuda=True)          # GPU attributes, finished and preempted requests
    sink = MetricsSink(0.2, cost, lambda: str(tmp_path), write_front=True, otlp=True)
    feed(sink, ranges)
    time.sleep(0.3)
    sink.snapshot()
    sink.shutdown(10)
    points = receiver.metrics()
    assert {p["transport"] for p in points} == {"grpc" if protocol == "grpc" else "http"}
    by_name = {}
    for p in points:
        by_name.setdefault(p["name"], []).append(p)
    assert set(by_name) == {i.otel for i in INSTRUMENTS}
    kind = {COUNTER: "sum", HISTOGRAM: "histogram", GAUGE: "gauge"}
    for i in INSTRUMENTS:
        pts = by_name[i.otel]
        assert {p["kind"] for p in pts} == {kind[i.kind]} and {p["unit"] for p in pts} == {i.unit}, i.otel
        for p in pts:
            assert set(p["attributes"]) == set(i.all_labels), (i.otel, p["attributes"])
        if i.kind != GAUGE:
            assert {p["temporality"] for p in pts} == {temporality}, i.otel
        if i.kind == COUNTER:
            assert all(p["monotonic"] for p in pts)
        if i.kind == HISTOGRAM:
            assert all(p["bounds"] == [float(b) for b in i.buckets] for p in pts), i.otel
    res = points[0]["resource"]
    assert res["service.name"] == "vllm" and res["process.pid"] == 4242 and "vllm.process_role" not in res
    # the values: steps counted once each, whatever the temporality (delta points add up)
    steps = sum(p["value"] for p in by_name["vllm_w2ext.engine.steps"]) if temporality == "delta" else \
        max(p["value"] for p in by_name["vllm_w2ext.engine.steps"])
    assert steps == 96
    ids = {(f"{r.trace_id:032x}", f"{r.span_id:016x}") for r in ranges}
    traces = {t for t, _ in ids}
    ex = [(p, e) for i in INSTRUMENTS if i.exemplars for p in by_name[i.otel] for e in p["exemplars"]]
    assert {p["name"] for p, _ in ex} == {i.otel for i in INSTRUMENTS if i.exemplars}
    assert all((e["trace_id"], e["span_id"]) in ids for _, e in ex)
    assert not [e for i in INSTRUMENTS if not i.exemplars for p in by_name[i.otel] for e in p["exemplars"]]
    assert traces


def _bucket(bounds, v):
    return next((k for k, b in enumerate(bounds) if v <= b), len(bounds))


def test_exemplars_at_most_one_per_bucket_per_export(receiver, monkeypatch, as_export_process, tmp_path):
    """Many observations per bucket between two exports: each exported histogram point has at most one
    exemplar per bucket, lying in that bucket; the Prometheus snapshot likewise."""
    receiver.clear()
    for k, v in receiver.metrics_env("grpc", "delta", 100_000).items():     # one export: at shutdown
        monkeypatch.setenv(k, v)
    ranges = run_ranges(400)
    sink = MetricsSink(0.2, cost, lambda: str(tmp_path), write_front=True, otlp=True)
    feed(sink, ranges, batch=400)
    sink.snapshot()
    sink.shutdown(10)
    hist = [p for p in receiver.metrics() if p["kind"] == "histogram"]
    assert hist and sum(len(p["exemplars"]) for p in hist) > 20
    for p in hist:
        buckets = [_bucket(p["bounds"], e["value"]) for e in p["exemplars"]]
        assert len(buckets) == len(set(buckets)), p["name"]
        assert all(p["bucket_counts"][b] > 0 for b in buckets)
        assert len(p["exemplars"]) <= sum(1 for c in p["bucket_counts"] if c)
    text = Path(glob.glob(str(tmp_path / "*.prom"))[0]).read_text()
    n = 0
    for fam in parse_openmetrics(text):
        for s in fam.samples:
            if s.exemplar is not None:
                n += 1
                assert set(s.exemplar.labels) == {"trace_id", "span_id"}
                if s.name.endswith("_bucket"):
                    assert s.exemplar.value <= float(s.labels["le"])
    assert n > 20


def test_exemplar_window_bounds_offers():
    """Within one window a bucket takes one exemplar; a new window takes a new one."""
    m = StepMetrics()
    lab = ("worker", "0", "0", "0", "0")
    for k in range(100):
        m.gap.observe(lab, 0.003, (k + 1, k + 1))
    assert len(m.exemplar_seen) == 1
    ex = [s.exemplar for f in m.registry.collect() if f.name == "vllm_w2ext_scheduler_gap_seconds"
          for s in f.samples if s.exemplar is not None]
    assert len(ex) == 1 and ex[0].labels["span_id"] == f"{1:016x}"
    m.new_exemplar_window()
    m.gap.observe(lab, 0.003, (7, 7))
    ex = [s.exemplar for f in m.registry.collect() if f.name == "vllm_w2ext_scheduler_gap_seconds"
          for s in f.samples if s.exemplar is not None]
    assert len(ex) == 1 and ex[0].labels["trace_id"] == f"{7:032x}"


def test_exemplars_off(receiver, monkeypatch, as_export_process, tmp_path):
    receiver.clear()
    for k, v in receiver.metrics_env("http", "cumulative", 100_000).items():
        monkeypatch.setenv(k, v)
    sink = MetricsSink(0.2, cost, lambda: str(tmp_path), write_front=True, otlp=True, exemplars=False)
    feed(sink, run_ranges(64))
    sink.snapshot()
    sink.shutdown(10)
    points = receiver.metrics()
    assert points and not any(p["exemplars"] for p in points)
    assert " # {" not in Path(glob.glob(str(tmp_path / "*.prom"))[0]).read_text()


# --- the merged endpoint -----------------------------------------------------------------------------

def test_merged_endpoint_serves_every_process_exemplars(as_export_process, tmp_path):
    """Two processes' OpenMetrics snapshots merged at one endpoint: an OpenMetrics scrape gets both
    processes' exemplars, a plain scrape the same samples without them."""
    ranges = run_ranges(48)
    texts = []
    for pid, roles, exemplars in ((111, ("engine_core",), True), (222, ("worker",), True),
                                  (333, ("frontend",), False)):      # exemplars off: text format
        m = StepMetrics(exemplars=exemplars)
        m.consume([r for r in ranges if r.role in roles])
        texts.append(m.exposition())
        (tmp_path / f"{pid}.prom").write_bytes(texts[-1])
    assert [b"# EOF" in t for t in texts] == [True, True, False]
    port = free_port()
    metrics_server.serve(port, "127.0.0.1", str(tmp_path))
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                     headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            om = r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            plain = r.read().decode()
    finally:
        metrics_server._state["server"][0].shutdown()
    roles_with_ex = {s.labels["role"] for f in parse_openmetrics(om) for s in f.samples if s.exemplar}
    assert roles_with_ex == {"engine_core", "worker"}
    span_ids = {f"{r.span_id:016x}" for r in ranges}
    assert all(s.exemplar.labels["span_id"] in span_ids for f in parse_openmetrics(om) for s in f.samples
               if s.exemplar)
    assert " # {" not in plain
    n_plain = sum(len(f.samples) for f in parse_text(plain))
    n_om = sum(len(f.samples) for f in parse_openmetrics(om))
    assert n_plain == n_om > 100
    assert {s.labels["role"] for f in parse_text(plain) for s in f.samples if "role" in s.labels} == \
        {"engine_core", "worker", "frontend"}


# --- collector down ------------------------------------------------------------------------------------

class Passthrough:
    """The export chain's assembly step, doing nothing (the ranges are already assembled)."""

    def __call__(self, ranges):
        return ranges

    def drain(self):
        return []


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_collector_down_is_counted_and_shutdown_bounded(monkeypatch, as_export_process, tmp_path, protocol):
    hole = BlackHole()
    try:
        url = f"http://127.0.0.1:{hole.port}" + ("" if protocol == "grpc" else "/v1/metrics")
        for k, v in {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": url, "OTEL_EXPORTER_OTLP_METRICS_INSECURE": "true",
                     "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc" if protocol == "grpc" else "http/protobuf",
                     "OTEL_METRIC_EXPORT_INTERVAL": "100", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "0.3"}.items():
            monkeypatch.setenv(k, v)
        chain = ExportChain(config.load({"VLLM_W2EXT": "1", "VLLM_W2EXT_OTLP_METRICS": "on"}), Passthrough(),
                            lambda: str(tmp_path), lambda: 4242, in_export_process=True)
        sink = chain.metrics
        assert sink is not None and sink._otlp_wanted
        chain.each("consume", run_ranges(64))
        deadline = time.monotonic() + 20
        while sink.failed_batches < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.failed_batches >= 2
        sink.snapshot()                          # the Prometheus side goes on, and counts the failures
        text = Path(glob.glob(str(tmp_path / "*.prom"))[0]).read_text()
        errors = sum(s.value for f in parse_openmetrics(text) for s in f.samples
                     if s.name == "vllm_w2ext_export_errors_total")
        assert errors >= 2
        t0 = time.monotonic()
        chain.shutdown(1.0)
        assert time.monotonic() - t0 < 2.0
    finally:
        hole.close()


def test_labels_are_the_prometheus_labels():
    for i in INSTRUMENTS:
        assert i.all_labels[:len(LABELS)] == LABELS == ("role", "engine", "rank", "tp_rank", "pp_rank")
    assert {i.when for i in INSTRUMENTS} >= {"", CUDA}


def test_no_snapshot_folder_no_files(monkeypatch, receiver, as_export_process, tmp_path):
    """OTLP metrics alone (no Prometheus endpoint): nothing is written."""
    for k, v in receiver.metrics_env("grpc", "cumulative", 100_000).items():
        monkeypatch.setenv(k, v)
    sink = MetricsSink(0.2, cost, lambda: None, write_front=True, otlp=True)
    feed(sink, run_ranges(8))
    sink.shutdown(5)
    assert not os.listdir(tmp_path)


def test_forked_child_never_resends_the_parents_numbers(receiver, monkeypatch, as_export_process):
    """In-process export (no export process) in a process that forks: the SDK restarts the periodic
    reader's thread in the child; the child's copy of the sink is muted (its exit status: how many
    exports the child's copy sent)."""
    receiver.clear()
    for k, v in receiver.metrics_env("grpc", "cumulative", 100).items():
        monkeypatch.setenv(k, v)
    sink = MetricsSink(0.2, cost, lambda: None, otlp=True)
    feed(sink, run_ranges(8))
    pid = os.fork()
    if pid == 0:                                  # the child: what pipeline._after_fork_in_child does
        exporter = sink.otlp.exporter
        before = exporter.exports
        sink.close_in_forked_child()
        time.sleep(0.6)
        os._exit(min(exporter.exports - before, 100))
    _, status = os.waitpid(pid, 0)
    sink.shutdown(5)
    assert os.waitstatus_to_exitcode(status) == 0
    assert receiver.metrics()                      # the parent's exports went on


# --- histogram points read from the Prometheus model -------------------------------------------------

class NoSdk:
    """What ``StepMetrics.attach_otel`` needs of OtlpMetrics (``bind``): the model's histograms ``keys`` go to
    ``points`` (an ``otlp_metrics.HistogramPoints``), with no SDK and no exporter."""
    def __init__(self, points, *keys):
        self.points, self.keys = points, keys

    def bind(self, model):
        self.points.instruments += [model[k] for k in self.keys]


def test_histogram_points_from_the_model_planted():
    """Known observations, two collections: counts per bucket, sum, min and max, exemplars, in both
    temporalities; delta leaves out a series with nothing new and starts where the last point ended."""
    from vllm_w2ext.telemetry.otlp_metrics import HistogramPoints

    for delta in (False, True):
        m = StepMetrics(exemplars=True)
        points = HistogramPoints(delta)
        m.attach_otel(NoSdk(points, "gap", "batch"))
        a, b = ("worker", "0", "0", "0", "0"), ("worker", "0", "1", "1", "0")
        for v, ids in ((0.003, (1, 11)), (0.02, (2, 12)), (0.02, (3, 13))):
            m.gap.observe(a, v, ids)
        m.gap.observe(b, 0.5, (4, 14))
        first = {tuple(sorted(p.attributes.items())): p for x in points.metrics() for p in x.data.data_points}
        pa = first[tuple(sorted(m.gap.attrs(a).items()))]
        assert pa.count == 3 and abs(pa.sum - 0.043) < 1e-12 and (pa.min, pa.max) == (0.003, 0.02)
        bounds = list(pa.explicit_bounds)
        assert pa.bucket_counts[bounds.index(5e-3)] == 1 and pa.bucket_counts[bounds.index(2.5e-2)] == 2
        assert sum(pa.bucket_counts) == 3 and len(pa.bucket_counts) == len(bounds) + 1
        # one exemplar per bucket offered in the window: the first of each bucket (ids 1 and 2)
        assert sorted((e.trace_id, e.span_id) for e in pa.exemplars) == [(1, 11), (2, 12)]
        m.new_exemplar_window()
        m.gap.observe(a, 1.0, (5, 15))
        second = [x for x in points.metrics() if x.name == "vllm_w2ext.scheduler.gap"][0]
        by = {p.attributes["rank"]: p for p in second.data.data_points}
        if delta:
            assert set(by) == {"0"}                      # series b had nothing new
            p = by["0"]
            assert p.count == 1 and abs(p.sum - 1.0) < 1e-12 and (p.min, p.max) == (1.0, 1.0)   # a difference of sums
            assert p.start_time_unix_nano == pa.time_unix_nano
            assert [(e.trace_id, e.value) for e in p.exemplars] == [(5, 1.0)]
            assert second.data.aggregation_temporality == 1      # DELTA
        else:
            p = by["0"]
            assert p.count == 4 and abs(p.sum - 1.043) < 1e-12 and (p.min, p.max) == (0.003, 1.0)
            assert p.start_time_unix_nano == pa.start_time_unix_nano and set(by) == {"0", "1"}
            assert by["1"].count == 1 and not by["1"].exemplars  # exemplars go out once
            assert second.data.aggregation_temporality == 2      # CUMULATIVE


def test_a_collection_racing_an_observation_has_its_count_and_range_together():
    """Planted race: the OTLP reader collects while an observation sits between Prometheus's count and the
    range the OTLP side keeps. The collection waits for it, so its point has both the count and the range
    of that value, and the next collection has neither (without ``otel_lock`` the first point had the
    count with no range and the second the range without the count: CI saw a min above its bucket)."""
    import threading

    from vllm_w2ext.telemetry.otlp_metrics import HistogramPoints

    m = StepMetrics(exemplars=False)
    points = HistogramPoints(delta=True)
    m.attach_otel(NoSdk(points, "gap"))
    lab = ("worker", "0", "0", "0", "0")
    child = m.gap.child(lab)
    collected: list = []
    reader = threading.Thread(target=lambda: collected.extend(points.metrics()))
    counted = child.observe

    def count_then_let_the_reader_in(value, *a):
        counted(value, *a)
        reader.start()
        reader.join(0.3)                  # the reader's turn, between the count and the range

    child.observe = count_then_let_the_reader_in
    m.gap.observe(lab, 7e-4)
    reader.join(10)
    (first,) = [p for x in collected for p in x.data.data_points]
    assert (first.count, first.min, first.max) == (1, 7e-4, 7e-4)
    bounds = list(first.explicit_bounds)
    assert first.bucket_counts[bisect.bisect_left(bounds, 7e-4)] == 1
    assert points.metrics() == []        # delta: nothing new, no point


@pytest.mark.parametrize("temporality", ["cumulative", "delta"])
def test_exported_histograms_equal_the_prometheus_side(receiver, monkeypatch, as_export_process, tmp_path,
                                                       temporality):
    """Every histogram series over several exports: its count and sum over OTLP (delta points added up)
    equal the Prometheus snapshot's, and min / max lie in the first / last non-empty bucket."""
    receiver.clear()
    for k, v in receiver.metrics_env("grpc", temporality, 150).items():
        monkeypatch.setenv(k, v)
    sink = MetricsSink(0.2, cost, lambda: str(tmp_path), write_front=True, otlp=True)
    for i in range(4):
        feed(sink, run_ranges(48, cuda=True))
        time.sleep(0.25)
    sink.snapshot()
    sink.shutdown(10)
    prom = {}
    for fam in parse_openmetrics(Path(glob.glob(str(tmp_path / "*.prom"))[0]).read_text()):
        for s in fam.samples:
            if s.name.endswith(("_count", "_sum")) and fam.type == "histogram":
                key = (fam.name, tuple(sorted(s.labels.items())))
                prom.setdefault(key, {})[s.name.rsplit("_", 1)[1]] = s.value
    otlp: dict = {}
    for p in receiver.metrics():
        if p["kind"] != "histogram":
            continue
        assert p["min"] is not None and p["max"] is not None and p["min"] <= p["max"]
        nz = [i for i, c in enumerate(p["bucket_counts"]) if c]
        bounds = [float("-inf"), *p["bounds"], float("inf")]
        assert bounds[nz[0]] < p["min"] <= bounds[nz[0] + 1] and bounds[nz[-1]] < p["max"] <= bounds[nz[-1] + 1]
        name = prometheus_name(p["name"], p["unit"], HISTOGRAM)
        key = (name, tuple(sorted(p["attributes"].items())))
        o = otlp.setdefault(key, {"count": 0, "sum": 0.0, "points": 0})
        if temporality == "delta":
            o["count"] += p["count"]
            o["sum"] += p["sum"]
        else:
            o["count"], o["sum"] = max(o["count"], p["count"]), max(o["sum"], p["sum"])
        o["points"] += 1
    assert set(otlp) == set(prom) and len(prom) > 5
    for key, v in prom.items():
        assert otlp[key]["count"] == v["count"] and abs(otlp[key]["sum"] - v["sum"]) < 1e-9 * max(1, v["sum"]), key
    assert max(o["points"] for o in otlp.values()) >= 2          # several exports, not just the last
