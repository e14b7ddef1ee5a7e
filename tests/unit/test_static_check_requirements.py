"""The "what the plugin reads" table (hooks/requirements.py) stays in step with the hook tables; the
Rust front end's start-up line; the `gpu` extra accepts every version of the compatibility table."""
from __future__ import annotations

import inspect
import json
import logging
import re
from pathlib import Path

import pytest
import tomllib

from vllm_w2ext.compat import rust_frontend
from vllm_w2ext.compat.wheels import version_key
from vllm_w2ext.hooks import all_hooks, engine_core, front
from vllm_w2ext.hooks.requirements import ATTRS, INHERITED_BY, ONE_OF, PARAMS, lookup

ROOT = Path(__file__).resolve().parents[2]
HOOKS = {h.name: h for h in all_hooks()}


def test_every_row_names_a_hook():
    for table in (PARAMS, ATTRS, INHERITED_BY):
        for key in table:
            if key.endswith(".*"):
                assert any(n.startswith(key[:-1]) for n in HOOKS), key
            else:
                assert key in HOOKS, key
    named = {n for g in ONE_OF.values() for n in g}
    assert named <= set(HOOKS), named - set(HOOKS)
    for names in ONE_OF.values():
        assert all(HOOKS[n].optional for n in names)       # required hooks fail on their own


def test_declared_parameters_are_the_ones_the_pre_functions_read():
    """Every ``kwargs["x"]`` / ``kwargs.get("x")`` in a hook's pre is declared, and every declared
    parameter is read (by keyword, or as args[position])."""
    for name, hook in HOOKS.items():
        pre = hook.pre
        if inspect.isbuiltin(pre):                     # a C copy (hooks/_cfront.c): its definition's source
            pre = next(getattr(m, "_" + pre.__name__) for m in (engine_core, front) if hasattr(m, "_" + pre.__name__))
        src = inspect.getsource(pre)
        read = set(re.findall(r"""kwargs(?:\.get\(|\[)\s*["'](\w+)["']""", src))
        declared = {p.name for p in lookup(PARAMS, name)}
        positional = {p.position for p in lookup(PARAMS, name) if p.position is not None}
        if name.startswith("engine.execute_model."):      # the executor's pre reads args[0] only
            assert "args[0]" in src and declared == {"scheduler_output"}, name
            continue
        assert read == declared, (name, read, declared)
        for pos in positional:
            assert f"args[{pos}]" in src, (name, pos)


def test_attribute_reads_of_read_step_are_declared():
    """steps.facts.read_step reads these attributes of SchedulerOutput and its parts."""
    from vllm_w2ext.steps import facts
    src = inspect.getsource(facts)
    so = {s for s in re.findall(r"\bso\.(\w+)", src)}
    spec = {a.cls: set(a.names) | set(a.soft) | {n for g in a.any_of for n in g}
            for a in lookup(ATTRS, "engine.schedule")}
    assert so <= spec["SchedulerOutput"], so - spec["SchedulerOutput"]
    cached = set(re.findall(r"\bcached\.(\w+)", src)) | set(re.findall(r"getattr\(cached, \"(\w+)\"", src))
    assert cached <= spec["CachedRequestData"], cached - spec["CachedRequestData"]


@pytest.mark.parametrize("value, on", [(None, False), ("", False), ("0", False), ("1", True), ("2", True),
                                       ("true", True), ("TRUE", True), ("yes", True), ("off", False),
                                       ("false", False), ("junk", False)])
def test_rust_frontend_switch(value, on):
    assert rust_frontend.enabled(value) is on


def test_rust_frontend_line_once(caplog):
    env = {"VLLM_USE_RUST_FRONTEND": "1"}
    with caplog.at_level(logging.WARNING, logger="vllm_w2ext"):
        assert rust_frontend.note_at_startup(env) is True
        assert rust_frontend.note_at_startup(env) is False       # a child process inherits the marker
        assert rust_frontend.note_at_startup({"VLLM_USE_RUST_FRONTEND": "0"}) is False
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    from vllm_w2ext import config
    config.load({**env, "VLLM_W2EXT": "1"})        # the marker the children inherit is no unknown setting
    assert ("front-end spans are missing when VLLM_USE_RUST_FRONTEND=1: vllm.request and front.*" in lines[0]
            and "EngineCore and worker spans still work" in lines[0])


def test_plugin_registration_logs_it(monkeypatch, caplog):
    from vllm_w2ext import config, plugin
    from vllm_w2ext.hooks import INSTRUMENTOR
    from vllm_w2ext.telemetry import export_process
    monkeypatch.setenv("VLLM_W2EXT", "1")
    monkeypatch.setenv("VLLM_USE_RUST_FRONTEND", "1")
    monkeypatch.setenv(rust_frontend._NOTED, "")              # restored (removed) after the test
    for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "VLLM_W2EXT_TRACE_DIR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(config, "_current", None)
    monkeypatch.setattr(INSTRUMENTOR, "instrument", lambda fault="", sampled=False: None)
    monkeypatch.setattr(export_process, "prestart", lambda settings: None)
    with caplog.at_level(logging.WARNING, logger="vllm_w2ext"):
        plugin.register()
        plugin.register()
    assert [r.getMessage() for r in caplog.records if "VLLM_USE_RUST_FRONTEND" in r.getMessage()] == \
           [f"vllm_w2ext: VLLM_USE_RUST_FRONTEND is set: {rust_frontend.MESSAGE}"]


def test_gpu_extra_accepts_every_version_of_the_table():
    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    (spec,) = [s for s in gpu if s.startswith("vllm")]
    bounds = dict(re.findall(r"(>=|<)\s*([\d.]+)", spec))
    reports = [json.loads(p.read_text()) for p in (ROOT / "benchmarks/results/compat").glob("vllm-*.json")]
    versions = sorted((r["vllm_version"] for r in reports), key=version_key)
    assert versions[0] == "0.26.0" and versions[-1] == "0.33.0"
    for v in versions:
        assert version_key(bounds[">="]) <= version_key(v) < version_key(bounds["<"]), (spec, v)
    doc = (ROOT / "COMPATIBILITY.md").read_text()
    assert all(f"| vllm {v} |" in doc for v in versions)
