"""The metrics-meet-traces stack of grafana/: Prometheus with exemplar storage, an OTel Collector
handing traces to Tempo and Jaeger, Grafana's datasources linking an exemplar's trace_id to both, and
the dashboard's histogram panels asking for exemplars.

Checked with the checkers that run here: `docker-compose config` (Debian's docker-compose 1.29 validates
the file against the Compose schema without a Docker engine), promtool (tests/test_grafana_files.py)
and the dashboard schema check (same file). Tempo's and the Collector's own `validate` commands need
their binaries, which no registry this project uses packages: those files are checked for the
wiring the stack depends on (ports, endpoints, uids) as YAML. A missing docker-compose skips its tests
(.ci/setup-extras installs it)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vllm_w2ext.telemetry.instruments import EXEMPLAR_TRACE_ID, HISTOGRAM, INSTRUMENTS

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
COMPOSE = GRAFANA / "docker-compose.yml"


def load(name: str) -> dict:
    return yaml.safe_load((GRAFANA / name).read_text())


def compose_cmd() -> list[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose; .ci/setup-extras)")
    return [exe]


def test_compose_file_validates(tmp_path):
    r = subprocess.run(compose_cmd() + ["-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                       timeout=120, cwd=GRAFANA)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_check_is_not_vacuous(tmp_path):
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["tempo"]["ports"] = "3200"              # must be a list
    broken["services"]["prometheus"]["restart_policy"] = "x"   # no such key on a service
    f = tmp_path / "docker-compose.yml"
    f.write_text(yaml.safe_dump(broken))
    r = subprocess.run(compose_cmd() + ["-f", str(f), "config", "-q"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode != 0
    assert "restart_policy" in r.stderr and "ports" in r.stderr


def test_stack_wiring():
    compose = load("docker-compose.yml")
    svc = compose["services"]
    assert set(svc) >= {"vllm", "prometheus", "grafana", "jaeger", "tempo", "otel-collector"}
    assert "--enable-feature=exemplar-storage" in svc["prometheus"]["command"]
    env = svc["vllm"]["environment"]
    assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://otel-collector:4317"
    assert env.get("VLLM_W2EXT_EXEMPLARS", "on") == "on"
    assert svc["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    # the Collector takes OTLP on 4317 and hands traces to Tempo and Jaeger on theirs
    col = load("otel-collector.yaml")
    assert col["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    exporters = col["service"]["pipelines"]["traces"]["exporters"]
    assert {col["exporters"][e]["endpoint"] for e in exporters} == {"tempo:4317", "jaeger:4317"}
    assert all(col["exporters"][e]["tls"]["insecure"] for e in exporters)
    assert "./otel-collector.yaml:/etc/otelcol/config.yaml:ro" in svc["otel-collector"]["volumes"]
    assert svc["otel-collector"]["command"] == ["--config=/etc/otelcol/config.yaml"]
    tempo = load("tempo.yaml")
    assert tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert "./tempo.yaml:/etc/tempo.yaml:ro" in svc["tempo"]["volumes"]
    assert svc["tempo"]["command"] == ["-config.file=/etc/tempo.yaml"]
    # Grafana: Tempo on Tempo's HTTP port, and the exemplar label the plugin writes linked to both
    ds = {d["uid"]: d for d in load("provisioning/datasources/datasources.yml")["datasources"]}
    assert ds["tempo"]["type"] == "tempo"
    assert ds["tempo"]["url"] == f"http://tempo:{tempo['server']['http_listen_port']}"
    dest = ds["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert {d["name"] for d in dest} == {EXEMPLAR_TRACE_ID}
    assert {d["datasourceUid"] for d in dest} == {"tempo", "jaeger"}
    assert all(ds[d["datasourceUid"]]["type"] == d["datasourceUid"] for d in dest)


def test_histogram_panels_show_exemplars():
    dash = json.loads((GRAFANA / "dashboards" / "vllm-w2ext.json").read_text())
    targets = [(p["title"], t) for p in dash["panels"] if p["type"] != "row" for t in p.get("targets", [])]
    none_kept = [i.prom for i in INSTRUMENTS if i.kind == HISTOGRAM and not i.exemplars]   # (a flush has no trace)
    for title, t in targets:
        if "vllm_w2ext_" in t["expr"] and "_bucket" in t["expr"] and "histogram_quantile" in t["expr"] \
                and "batch_requests" not in t["expr"] and not any(n in t["expr"] for n in none_kept):
            assert t.get("exemplar") is True, title
    with_ex = {title for title, t in targets if t.get("exemplar")}
    assert {"Device idle by cause (share of wall time)", "Request phase time p50 / p90",
            "Device idle before a forward p50 / p90"} <= with_ex
