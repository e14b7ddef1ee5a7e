"""Settings are parsed in one place; invalid values stop start-up naming the variable."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, clean_env, concurrently

from vllm_w2ext import config


def test_defaults():
    s = config.load({})
    assert not s.enabled and s.nvtx and s.step_links == "boundary" and not s.capture_content
    assert not config.load({"VLLM_W2EXT": "1"}).otlp_enabled


@pytest.mark.parametrize("name,value,accepted", [
    ("VLLM_W2EXT", "maybe", "expected one of 1, true"),
    ("VLLM_W2EXT_QUEUE_SIZE", "lots", "expected an integer in [1024, 10000000]"),
    ("VLLM_W2EXT_QUEUE_SIZE", "10", "expected an integer in [1024, 10000000]"),
    ("VLLM_W2EXT_STEP_LINKS", "some", "expected one of boundary, all, none"),
    ("VLLM_W2EXT_OTLP", "yes", "expected one of auto, on, off"),
    ("VLLM_W2EXT_SHUTDOWN_TIMEOUT_S", "-1", "expected a number in [0.0, 600.0]"),
    ("VLLM_W2EXT_NVTXX", "1", "unknown setting(s) VLLM_W2EXT_NVTXX"),
])
def test_invalid_values_name_the_variable(name, value, accepted):
    with pytest.raises(config.SettingsError) as e:
        config.load({"VLLM_W2EXT": "1", name: value})
    assert name in str(e.value) and accepted in str(e.value)


def test_otlp_auto_follows_standard_endpoint_variables(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert config.load({"VLLM_W2EXT": "1"}).otlp_enabled
    assert not config.load({"VLLM_W2EXT": "1", "VLLM_W2EXT_OTLP": "off"}).otlp_enabled


def test_readme_documents_every_setting():
    """The settings reference lives next to the code (vllm_w2ext/README.md), linked from the top README."""
    readme = (ROOT / "vllm_w2ext" / "README.md").read_text()
    for s in config.SETTINGS:
        assert f"`{config.env_name(s.key)}`" in readme, config.env_name(s.key)
    assert config.markdown_table() in readme, \
        "vllm_w2ext/README.md settings table is stale: paste config.markdown_table()"
    assert "vllm_w2ext/README.md" in (ROOT / "README.md").read_text()


REFUSED = [
    ({"VLLM_W2EXT_QUEUE_SIZE": "lots"}, "VLLM_W2EXT_QUEUE_SIZE='lots': expected an integer"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift"},
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='thrift': expected one of grpc, http/protobuf"),
]


def serve(tiny_model, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vllm_w2ext.lab.vllm_cli", "serve", str(tiny_model)],
                          env=clean_env(VLLM_W2EXT="1", **env), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def refused(tiny_model) -> list[subprocess.CompletedProcess]:
    """Every `vllm serve` of REFUSED at once (each stops while importing: ~8 s of one core)."""
    return concurrently(*[lambda env=env: serve(tiny_model, env) for env, _ in REFUSED])


@pytest.mark.parametrize("env,needle", REFUSED)
def test_vllm_serve_refuses_to_start(refused, env, needle):
    p = refused[REFUSED.index((env, needle))]
    assert p.returncode != 0
    assert needle in p.stderr
