"""Telemetry layer: ranges (span + NVTX + timing), the per-process pipeline and its exporters.
Nothing here knows vLLM's classes; the hooks layer feeds it."""
