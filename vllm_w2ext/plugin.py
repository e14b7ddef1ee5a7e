"""vLLM general-plugin entry point (group ``vllm.general_plugins``), called in every vLLM process.

Disabled (``VLLM_W2EXT`` unset or 0): returns after one environment lookup; nothing else is
imported or patched. Enabled: validates all settings (an invalid value stops start-up with a
message naming the variable) and registers lazy, per-module hooks. With vLLM's Rust front end switched on
(``VLLM_USE_RUST_FRONTEND``), one log line says which spans are missing (``compat.rust_frontend``).
"""
from __future__ import annotations

from vllm_w2ext.config import is_enabled


def register() -> None:
    if not is_enabled():
        return
    from vllm_w2ext import config
    settings = config.current()          # raises SettingsError on bad input
    if settings.otlp_enabled:
        from vllm_w2ext.telemetry.otlp import protocol
        protocol()                       # validates OTEL_EXPORTER_OTLP_*_PROTOCOL
    if settings.trace_dir:
        _check_trace_dir(settings.trace_dir)
    from vllm_w2ext.hooks import INSTRUMENTOR
    INSTRUMENTOR.instrument(fault=settings.fault_inject)
    from vllm_w2ext.compat import rust_frontend
    rust_frontend.note_at_startup()      # VLLM_USE_RUST_FRONTEND=1: one line on the front-end spans missing
    from vllm_w2ext.telemetry import export_process
    export_process.prestart(settings)


def _check_trace_dir(path: str) -> None:
    """A trace folder that cannot be written stops start-up here, not mid-run."""
    import os
    from vllm_w2ext.config import SettingsError
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise SettingsError(f"VLLM_W2EXT_TRACE_DIR={path!r}: cannot create it ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SettingsError(f"VLLM_W2EXT_TRACE_DIR={path!r}: not writable")
