"""Which sinks a process's pipeline feeds, from the settings."""
from __future__ import annotations

from vllm_w2ext import config


def build(settings: config.Settings, pipeline) -> list:
    out = []
    if settings.otlp_enabled:
        from vllm_w2ext.telemetry.otlp import OtlpSink
        out.append(OtlpSink(delay_ms=settings.export_interval_ms))
    return out
