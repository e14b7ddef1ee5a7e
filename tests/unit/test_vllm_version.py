"""The vLLM version on every export's resource is read without importing vLLM: the export thread asks for it,
and importing vLLM there (seconds, and torch with it) in a process that has not loaded it was what an export
thread of a unit test did until the unit tier's own check caught it."""
import sys
import types

from vllm_w2ext.telemetry import identity


def _fresh(monkeypatch):
    identity.vllm_version.cache_clear()
    monkeypatch.setattr(identity, "_adopted", {})


def test_metadata_without_importing_vllm(monkeypatch):
    _fresh(monkeypatch)
    try:
        assert "vllm" not in sys.modules
        found = identity.installed_vllm()              # (dist, version) in the e2e venv; None in .venv-unit
        assert identity.vllm_version() == (found[1] if found else "unknown")
        assert "vllm" not in sys.modules
    finally:
        identity.vllm_version.cache_clear()


def test_a_loaded_vllm_and_an_adopted_process_come_first(monkeypatch):
    _fresh(monkeypatch)
    try:
        monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(__version__="9.9.9"))
        assert identity.vllm_version() == "9.9.9"
        identity.vllm_version.cache_clear()
        monkeypatch.setattr(identity, "_adopted", {"pid": 1, "version": "0.26.0"})    # an export process
        assert identity.vllm_version() == "0.26.0"
    finally:
        identity.vllm_version.cache_clear()
