"""Telemetry layer: the hot path's recorder (timestamps, ids, NVTX), the named wire formats, the
per-process pipeline to the export process, and the export chain with its sinks (OTLP, Prometheus,
Perfetto trace file). Nothing here knows vLLM's classes: the hooks layer feeds it, and the step
semantics it needs on the export side (``steps/``) are handed in by the composition roots."""
