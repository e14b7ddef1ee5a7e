"""Installed but not enabled: nothing of vLLM is wrapped and nothing beyond the entry point imported.
Enabled: every hook of the table that exists in this vLLM is wrapped on its original class."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import clean_env, concurrently

PROBE = r"""
import importlib, importlib.metadata as md, json, sys
eps = [e.value for e in md.entry_points(group="vllm.general_plugins") if e.name == "w2ext"]
from vllm.plugins import load_general_plugins
load_general_plugins()                       # what every vLLM process does
loaded = sorted(m for m in sys.modules if m.startswith("vllm_w2ext"))
from vllm_w2ext.hooks import all_hooks       # only now, to read the table
from vllm_w2ext.hooks.wrapping import is_wrapped, resolve
rows = []
for h in all_hooks():
    mod = importlib.import_module(h.module)
    cls = getattr(mod, h.cls_name, None)
    fn = vars(cls).get(h.method) if cls is not None else None
    rows.append({"hook": h.name, "exists": fn is not None, "optional": h.optional,
                 "wrapped": fn is not None and is_wrapped(cls, h.method)})
print(json.dumps({"entry_points": eps, "loaded_before_table": loaded, "rows": rows}))
"""


def probe(**env):
    p = subprocess.run([sys.executable, "-c", PROBE], env=clean_env(**env), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probes() -> dict:
    """Both probes at once (each is one process importing vLLM: ~8 s of one core)."""
    disabled, enabled = concurrently(probe, lambda: probe(VLLM_W2EXT="1"))
    return {"disabled": disabled, "enabled": enabled}


def test_disabled_wraps_nothing(probes):
    out = probes["disabled"]
    assert out["entry_points"] == ["vllm_w2ext.plugin:register"]
    # the entry point, the settings it reads the switch from, and their error type (a leaf, no imports)
    assert out["loaded_before_table"] == ["vllm_w2ext", "vllm_w2ext.config", "vllm_w2ext.errors", "vllm_w2ext.plugin"]
    assert [r["hook"] for r in out["rows"] if r["wrapped"]] == []
    assert len([r for r in out["rows"] if r["exists"]]) >= 20


def test_enabled_wraps_every_present_target(probes):
    out = probes["enabled"]
    missing = [r["hook"] for r in out["rows"] if not r["exists"] and not r["optional"]]
    assert missing == []
    assert [r["hook"] for r in out["rows"] if r["exists"] and not r["wrapped"]] == []
