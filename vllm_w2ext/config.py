"""All settings of the plugin: ``VLLM_W2EXT_*`` environment variables, parsed and validated once.

Invalid values raise :class:`SettingsError` naming the variable and the accepted values, so a
misconfigured server stops at start-up instead of running half-instrumented.
OTLP export itself is configured with the standard ``OTEL_*`` variables (read by the OpenTelemetry SDK).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Callable, Mapping

from vllm_w2ext.errors import SettingsError

PREFIX = "VLLM_W2EXT_"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _flag(name: str, raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(_TRUE + _FALSE[:-1])}")


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        v = raw.strip().lower()
        if v not in allowed:
            raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
        return v
    return parse


def _int_range(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            v = int(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected an integer in [{lo}, {hi}]") from None
        if not lo <= v <= hi:
            raise SettingsError(f"{name}={raw!r}: expected an integer in [{lo}, {hi}]")
        return v
    return parse


def _float_range(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            v = float(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected a number in [{lo}, {hi}]") from None
        if not lo <= v <= hi:
            raise SettingsError(f"{name}={raw!r}: expected a number in [{lo}, {hi}]")
        return v
    return parse


def _nvtx_mode(name: str, raw: str) -> str:
    v = raw.strip().lower()
    v = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}.get(v, v)
    return _choice("auto", "on", "off")(name, v)


# VLLM_W2EXT_EXPORT_INTERVAL_MS=auto: the export thread's shortest and longest wait (ms), and the records a wake aims
# at (``telemetry.pipeline.next_wait``; benchmarks/results/cpu/export_wait says why)
AUTO_EXPORT_MS = (200, 1000)
EXPORT_FILL = 1024


def _export_interval(name: str, raw: str) -> int:
    """``auto`` (0) or a fixed interval in ms."""
    if raw.strip().lower() == "auto":
        return 0
    try:
        return _int_range(10, 60_000)(name, raw)
    except SettingsError:
        raise SettingsError(f"{name}={raw!r}: expected auto or an integer in [10, 60000] (ms)") from None


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _port(name: str, raw: str) -> int:
    if not raw.strip():
        return 0
    return _int_range(1, 65535)(name, raw)


@dataclass(frozen=True)
class Setting:
    key: str            # suffix after VLLM_W2EXT_
    default: str
    parse: Callable[[str, str], object]
    doc: str


# What an EngineCore or worker process waits for the exporters in all at its shutdown (hooks/lifecycle.py says why),
# within SHUTDOWN_TIMEOUT_S
EXIT_BUDGET_S = 3.5

SETTINGS: tuple[Setting, ...] = (
    Setting("", "0", _flag, "Master switch (`VLLM_W2EXT`). Unset or 0: nothing is patched or started."),
    Setting("OTLP", "auto", _choice("auto", "on", "off"),
            "Span export over OTLP. `auto`: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or "
            "`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. Protocol, endpoint, headers, compression and "
            "timeouts come from the standard `OTEL_EXPORTER_OTLP_*` variables (`grpc` or `http/protobuf`)."),
    Setting("OTLP_METRICS", "auto", _choice("auto", "on", "off"),
            "Metric export over OTLP (the instruments of the Prometheus endpoint, same names mapped one to one: "
            "METRICS.md), from each process's export process. `auto`: on when "
            "`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Protocol, endpoint, "
            "headers, timeout: the standard `OTEL_EXPORTER_OTLP_*` variables; interval "
            "`OTEL_METRIC_EXPORT_INTERVAL` (ms, default 60000); temporality "
            "`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` (`cumulative`, `delta`, `lowmemory`)."),
    Setting("EXEMPLARS", "on", _choice("on", "off"),
            "Histograms (and device idle by cause) carry exemplars: the `trace_id`/`span_id` of a step or "
            "request observed in that bucket, at most one per bucket per metrics interval, on the "
            "Prometheus endpoint scraped as OpenMetrics and in OTLP histogram points."),
    Setting("NVTX", "auto", _nvtx_mode,
            "Emit every span as an NVTX range too (domain `vllm_w2ext`). `auto`: when an NVTX tool is attached "
            "(Nsight Systems/Compute or another injection library; without one NVTX calls are no-ops and are "
            "skipped); `on`/`1`: always; `off`/`0`: never."),
    Setting("NVTX_DOMAIN", "vllm_w2ext", _text, "NVTX domain name of the plugin's ranges."),
    Setting("DEVICE_TIMING", "on", _choice("on", "off"),
            "CUDA events around each step on GPU workers: the GPU's busy and idle time (device idle by cause). "
            "With vLLM's V2 runner the plugin borrows the event vLLM records at each step's end (made a timing "
            "event); elsewhere it records its own. `off`: no events (on the H200 host, 4-5 us per step less on "
            "vLLM's thread with the V2 runner, about 11 with an event of the plugin's own); the device "
            "timeline is then the workers' forward spans (CPU clock) where the runner's forward is hooked (the V1 "
            "runner, as on the CPU build), and there is none with the V2 runner (vLLM 0.26 on the GPU)."),
    Setting("QUEUE_SIZE", "65536", _int_range(1024, 10_000_000),
            "Finished ranges buffered per process before export; beyond it ranges are dropped and counted."),
    Setting("EXPORT_INTERVAL_MS", "auto", _export_interval,
            "How often each vLLM process's export thread hands its buffered ranges on (to its export process). "
            f"`auto`: every {AUTO_EXPORT_MS[0]} ms while there is much to send, stretched up to every "
            f"{AUTO_EXPORT_MS[1]} ms while there is little (it aims at {EXPORT_FILL} records a wake): each wake "
            "costs vLLM's process a fixed share of CPU and GIL whatever it sends, so at long or few steps fewer "
            "wakes cost less; a killed process loses at most its last interval. A number (ms, 10-60000): every "
            "that many ms."),
    Setting("EXPORT_PROCESS", "on", _choice("on", "off"),
            "`on`: OTLP encoding/sending and Prometheus aggregation run in a separate export process per "
            "vLLM process (fed through a pipe), so they never hold the GIL of vLLM's threads; `off`: they run "
            "on the in-process export thread (measured cost at batch 1 on the H100: see README, Measured)."),
    Setting("STEP_LINKS", "boundary", _choice("boundary", "all", "none"),
            "Which request spans an `engine.step` span links. `boundary`: the requests that were first "
            "scheduled in that step (each `engine.request` span links back to its first and last step), "
            "so links grow with requests, not requests x steps. `all`: every request in the batch "
            "(costs about 5 us of export-thread CPU per link; see benchmarks/results). `none`."),
    Setting("SAMPLE", "1", _int_range(1, 1_000_000),
            "Engine steps recorded in full: `1` every step (full tracing); N: two consecutive steps in every N "
            "(so 2 is also every step). A step that starts, preempts, resumes or finishes a request or runs a "
            "prefill is recorded too, as its `engine.step` span with its batch facts alone (no phases, no worker "
            "spans), so request lifecycles stay complete. Other steps are only counted (the step and token "
            "counters stay exact); phases, scheduler gaps and device idle come from the pairs. Decided by the "
            "EngineCore and carried to the workers on the step's stamp."),
    Setting("COST_BUDGET", "0", _float_range(0.0, 100.0),
            "Opt-in cost cap, in percent of the EngineCore process's wall time (e.g. `1`). `0` (default): off, "
            "`VLLM_W2EXT_SAMPLE` as set. Above 0: the EngineCore measures the plugin's cost in its process every "
            "second (its hooks' time, sampled, plus its export thread's CPU; with the worker in the process, no more "
            "than the GPU's idle share, since time the GPU does not wait for costs no throughput) and, while it "
            "is over the budget, "
            "doubles `VLLM_W2EXT_SAMPLE`'s N (4, 8, ... up to 1024; the setting is the floor), halving it again "
            "once under 0.4x the budget: full tracing where it is cheap (GPU-bound models), a thinner sample "
            "where it is not (CPU-bound ones). Each step span carries the N in effect "
            "(`vllm_w2ext.sample.every`); a log line names each change."),
    Setting("MAX_LINKS", "512", _int_range(0, 100_000),
            "Most request links one step span carries."),
    Setting("METRICS_PORT", "", _port,
            "Serve the Prometheus metrics of ALL vLLM processes (front end, EngineCore, workers) on this "
            "port of the front-end process, offline and served. Unset: no metrics endpoint."),
    Setting("METRICS_HOST", "127.0.0.1", _text,
            "Bind address of the metrics endpoint. Loopback by default; use 0.0.0.0 only behind a firewall "
            "or a scraping sidecar."),
    Setting("METRICS_DIR", "", _text,
            "Where each process drops its metric snapshot for the front end to merge. Unset: a private "
            "temporary folder made by the front end and handed to its children."),
    Setting("METRICS_INTERVAL_MS", "1000", _int_range(100, 60_000),
            "How often each process refreshes its metric snapshot."),
    Setting("TRACE_DIR", "", _text,
            "Write each process's spans to `<dir>/w2ext-<pid>.pftrace` (Perfetto), appended as they are "
            "exported, so a killed process leaves a valid file."),
    Setting("TRACE_MAX_MB", "512", _int_range(1, 1_000_000),
            "Size cap of one process's trace file; beyond it ranges are dropped and counted."),
    Setting("SHUTDOWN_TIMEOUT_S", "5", _float_range(0.0, 600.0),
            "Upper bound on flushing exporters when a process exits, all waits together; an EngineCore or "
            f"worker waits at most {EXIT_BUDGET_S:g} s (vLLM force-kills it 5 s after its SIGTERM)."),
    Setting("CAPTURE_CONTENT", "0", _flag,
            "Opt-in: attach the prompt text to request spans. Off by default: prompts may hold personal "
            "data. Token counts are always attached; token ids and completions never are."),
    Setting("FAULT_INJECT", "", _text, "Test-only: hooks that raise on their first call, comma-separated hook "
            "names (see `vllm-w2ext doctor`) or `all`, to test that a faulty hook disables itself."),
)


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    otlp: str = "auto"
    otlp_metrics: str = "auto"
    exemplars: str = "on"
    nvtx: str = "auto"
    nvtx_domain: str = "vllm_w2ext"
    device_timing: str = "on"
    queue_size: int = 65536
    export_interval_ms: int = 0            # 0: auto (``export_waits_ms``)
    export_process: str = "on"
    step_links: str = "boundary"
    sample: int = 1
    cost_budget: float = 0.0
    max_links: int = 512
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_dir: str = ""
    metrics_interval_ms: int = 1000
    trace_dir: str = ""
    trace_max_mb: int = 512
    shutdown_timeout_s: float = 5.0
    capture_content: bool = False
    fault_inject: str = ""

    @property
    def export_waits_ms(self) -> tuple[int, int]:
        """The export thread's shortest and longest wait between wakes (ms): equal for a fixed interval."""
        v = self.export_interval_ms
        return AUTO_EXPORT_MS if v == 0 else (v, v)

    @property
    def otlp_enabled(self) -> bool:
        if self.otlp == "auto":
            return bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        return self.otlp == "on"

    @property
    def otlp_metrics_enabled(self) -> bool:
        return _otlp_metrics_on(self.otlp_metrics, os.environ)


def _otlp_metrics_on(mode: str, env: Mapping[str, str]) -> bool:
    if mode == "auto":
        return bool(env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    return mode == "on"


_FIELD_OF = {s.key: (s.key.lower() or "enabled") for s in SETTINGS}
assert set(_FIELD_OF.values()) == {f.name for f in fields(Settings)}, "SETTINGS and Settings disagree"


def env_name(key: str) -> str:
    return (PREFIX + key) if key else PREFIX.rstrip("_")


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every setting; raise :class:`SettingsError` on the first invalid one."""
    env = os.environ if environ is None else environ
    values = {}
    for s in SETTINGS:
        name = env_name(s.key)
        values[_FIELD_OF[s.key]] = s.parse(name, env.get(name, s.default))
    known = {env_name(s.key) for s in SETTINGS}
    unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known)
    if unknown:
        raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if values["enabled"] and _otlp_metrics_on(values["otlp_metrics"], env):
        from vllm_w2ext.telemetry.otel_env import check_environment   # the OTEL_* metrics variables
        check_environment(env)
    return Settings(**values)


def is_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Cheap check used by the entry point: only the master switch, no other parsing."""
    env = os.environ if environ is None else environ
    return env.get("VLLM_W2EXT", "0").strip().lower() not in _FALSE


_current: Settings | None = None


def current() -> Settings:
    global _current
    if _current is None:
        _current = load()
    return _current


def markdown_table() -> str:
    """The README's settings table, generated from SETTINGS so docs and code cannot drift."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{env_name(s.key)}` | {f'`{s.default}`' if s.default else '(unset)'} | {s.doc} |"
             for s in SETTINGS]
    return "\n".join(rows)
