"""The standard ``OTEL_*`` variables of OTLP metric export, read and checked without importing the
OpenTelemetry SDK (``config.load`` checks them at start-up in every vLLM process, so that a typo
stops vLLM with the variable's name instead of being silently replaced by a default later)."""
from __future__ import annotations

import os
from collections.abc import Mapping

from vllm_w2ext.errors import SettingsError

PROTOCOLS = ("grpc", "http/protobuf")
TEMPORALITIES = ("cumulative", "delta", "lowmemory")
DEFAULT_INTERVAL_MS = 60000


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def metrics_protocol(environ: Mapping[str, str] | None = None) -> str:
    env = _env(environ)
    for name in ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        raw = env.get(name)
        if raw:
            v = raw.strip().lower()
            if v not in PROTOCOLS:
                raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(PROTOCOLS)}")
            return v
    return "grpc"


def temporality(environ: Mapping[str, str] | None = None) -> str:
    name = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
    raw = _env(environ).get(name, "")
    v = raw.strip().lower() or "cumulative"
    if v not in TEMPORALITIES:
        raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(TEMPORALITIES)}")
    return v


def interval_ms(environ: Mapping[str, str] | None = None) -> float:
    raw = _env(environ).get("OTEL_METRIC_EXPORT_INTERVAL", "")
    if not raw.strip():
        return float(DEFAULT_INTERVAL_MS)
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not 0 < v <= 86_400_000:
        raise SettingsError(f"OTEL_METRIC_EXPORT_INTERVAL={raw!r}: expected milliseconds in (0, 86400000]")
    return v


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise SettingsError on an OTEL_* metrics variable the exporter would misread."""
    metrics_protocol(environ)
    temporality(environ)
    interval_ms(environ)
