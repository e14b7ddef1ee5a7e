"""Static checks of grafana/: the dashboard JSON type-checks against @grafana/schema, the Prometheus
config/rules pass promtool (incl. rule unit tests), every PromQL expression of the dashboard parses,
docker-compose mounts only files that exist, and the dashboard's queries are all there.

Tools: promtool (Debian `prometheus`), node/npm (check_dashboard.sh installs its npm packages into
grafana/.npm), grafana-foundation-sdk for the up-to-date check; `.ci/setup-extras` installs them.
A missing tool skips its test locally and fails it when the CI environment variable is set.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "vllm-w2ext.json"
CHECK = GRAFANA / "check_dashboard.sh"


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


dq = _load_module("w2ext_dashboard_queries", GRAFANA / "dashboard_queries.py")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed (CI is set: run .ci/setup-extras)")
    pytest.skip(f"{name} is not installed (run .ci/setup-extras)")


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


# --- (a) schema type check ---------------------------------------------------------------------

def test_dashboard_type_checks_against_grafana_schema():
    require_tool("node"), require_tool("npm")
    r = run([str(CHECK)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"OK {DASHBOARD}" in r.stdout


def test_type_check_rejects_a_broken_dashboard(tmp_path):
    """The check is not vacuous: wrong value types in a copy are reported, exit status 1."""
    require_tool("node"), require_tool("npm")
    d = dashboard()
    next(p for p in d["panels"] if p["type"] == "timeseries")["gridPos"]["h"] = "eight"
    d["refresh"] = 10
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(d, indent=2))
    r = run([str(CHECK), str(broken)])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Type 'string' is not assignable to type 'number'" in r.stderr
    assert "Type 'number' is not assignable to type 'string'" in r.stderr


# --- (b) promtool ---------------------------------------------------------------------------------

def test_promtool_check_config():
    promtool = require_tool("promtool")
    r = run([promtool, "check", "config", "prometheus.yml"], cwd=GRAFANA)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_rules():
    promtool = require_tool("promtool")
    r = run([promtool, "check", "rules", "rules.yml"], cwd=GRAFANA)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_test_rules():
    promtool = require_tool("promtool")
    assert (GRAFANA / "rules_test.yml").exists()
    r = run([promtool, "test", "rules", "rules_test.yml"], cwd=GRAFANA)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_dashboard_expression_parses(tmp_path):
    """promtool parses each query (as a recording rule expression): no server needed."""
    promtool = require_tool("promtool")
    queries = dq.load_queries(DASHBOARD)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": q["expr"]} for i, q in enumerate(queries)]}]}
    f = tmp_path / "dashboard_rules.yml"
    f.write_text(yaml.safe_dump(rules))
    r = run([promtool, "check", "rules", str(f)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(queries)} rules found" in r.stdout


def test_recording_rules_match_the_dashboard_fallbacks():
    """Each rule is read by the dashboard as `<record>{$engine} or on (engine, rank) (<same expr>)`."""
    rules = yaml.safe_load((GRAFANA / "rules.yml").read_text())
    strip = lambda e: re.sub(r'\{engine=~"\$engine"\}|, engine=~"\$engine"', "", e)  # noqa: E731
    exprs = {strip(q["raw_expr"]) for q in dq.load_queries(DASHBOARD)}
    recorded = [r for g in rules["groups"] for r in g["rules"] if "record" in r]
    assert recorded
    for r in recorded:
        assert f"{r['record']} or on (engine, rank) ({r['expr']})" in exprs, r["record"]


# --- (c) docker-compose mounts ----------------------------------------------------------------------

def test_compose_mounts_exist():
    compose = yaml.safe_load((GRAFANA / "docker-compose.yml").read_text())
    named = set(compose.get("volumes") or {})
    assert set(compose["services"]) >= {"vllm", "prometheus", "grafana", "jaeger"}
    binds = []
    for name, svc in compose["services"].items():
        for v in svc.get("volumes") or []:
            if isinstance(v, dict):
                src, target = v.get("source", ""), v.get("target", "")
                if v.get("type") == "volume":
                    assert src in named, (name, v)
                    continue
            else:
                src, target = v.split(":")[0], v.split(":")[1]
            if not src.startswith((".", "/", "~")):
                assert src in named, f"{name}: named volume {src} is not declared"
                continue
            assert src.startswith("."), f"{name}: {src} is outside the repository"
            path = (GRAFANA / src).resolve()
            assert path.exists(), f"{name} mounts {src} -> {target}: {path} does not exist"
            assert ROOT in path.parents or path == ROOT, path
            binds.append((name, path, target))
    targets = {(n, t) for n, _, t in binds}
    assert ("prometheus", "/etc/prometheus/prometheus.yml") in targets
    assert ("prometheus", "/etc/prometheus/rules.yml") in targets
    assert ("grafana", "/etc/grafana/provisioning") in targets
    assert ("grafana", "/var/lib/grafana/dashboards") in targets
    assert any(n == "vllm" and p == ROOT / "vllm_w2ext" for n, p, _ in binds)


def test_compose_and_provisioning_agree():
    compose = yaml.safe_load((GRAFANA / "docker-compose.yml").read_text())
    vllm = compose["services"]["vllm"]
    assert vllm["image"] == "vllm/vllm-openai:v0.26.0"
    env = vllm["environment"]
    assert env["VLLM_W2EXT"] == "1" and env["VLLM_W2EXT_METRICS_PORT"] == "9464"
    assert env["VLLM_W2EXT_METRICS_HOST"] == "0.0.0.0"
    assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://otel-collector:4317"   # -> Tempo and Jaeger
    assert compose["services"]["grafana"]["image"] == "grafana/grafana:11.6.0"
    assert compose["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"

    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/datasources.yml").read_text())
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["jaeger"]["type"] == "jaeger" and by_uid["jaeger"]["url"] == "http://jaeger:16686"
    prov = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    assert [p["options"]["path"] for p in prov["providers"]] == ["/var/lib/grafana/dashboards"]

    prom = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert jobs == {"vllm-w2ext": ["vllm:9464"], "vllm": ["vllm:8000"]}
    assert prom["rule_files"] == ["rules.yml"]
    # vLLM's job: w2ext series dropped, `vllm_x` renamed back to `vllm:x` (client_python#1177).
    relabel = next(j for j in prom["scrape_configs"] if j["job_name"] == "vllm")["metric_relabel_configs"]
    assert [r.get("action", "replace") for r in relabel] == ["drop", "replace"]


# --- (d) queries ------------------------------------------------------------------------------------

def test_load_queries():
    queries = dq.load_queries(DASHBOARD)
    assert len(queries) >= 15
    for q in queries:
        assert set(q) >= {"panel", "expr", "cuda_only", "vllm_own"}
        assert q["panel"] and q["expr"].strip(), q
        assert "$" not in q["expr"], q                 # variables expanded for a raw Prometheus
        assert isinstance(q["cuda_only"], bool) and isinstance(q["vllm_own"], bool)
        if q["vllm_own"]:
            assert "vllm:" in q["expr"] and "vllm_w2ext_" not in q["expr"], q
        else:
            assert "vllm_w2ext_" in q["expr"] and "vllm:" not in q["expr"], q
    assert any(q["cuda_only"] for q in queries) and any(q["vllm_own"] for q in queries)
    assert all("gpu" in q["expr"] for q in queries if q["cuda_only"])
    assert not any("gpu" in q["expr"] for q in queries if not q["cuda_only"])


def test_every_panel_has_prometheus_targets():
    d = dashboard()
    panels = [p for _, p in dq.panels(DASHBOARD)]
    assert panels and len(panels) == len([p for p in d["panels"] if p["type"] != "row"])
    for p in panels:
        targets = p.get("targets") or []
        assert len(targets) >= 1, p["title"]
        ref_ids = [t.get("refId") for t in targets]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), (p["title"], ref_ids)
        for t in targets:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert t["expr"].strip(), p["title"]
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert dq.GPU_ROW in rows and dq.VLLM_ROW in rows
    assert [v["name"] for v in d["templating"]["list"]] == ["datasource", "engine"]
    # Trace links: a dashboard link and panel links to Explore on the Jaeger datasource.
    assert any("jaeger" in link["url"] and "/explore" in link["url"] for link in d["links"])
    assert any(p.get("links") for p in panels)


def test_committed_dashboard_is_up_to_date():
    if importlib.util.find_spec("grafana_foundation_sdk") is None:
        if os.environ.get("CI"):
            pytest.fail("grafana-foundation-sdk is not installed (CI is set: run .ci/setup-extras)")
        pytest.skip("grafana-foundation-sdk is not installed (run .ci/setup-extras)")
    r = run([sys.executable, str(GRAFANA / "build_dashboard.py"), "--check"])
    assert r.returncode == 0, r.stdout + r.stderr
