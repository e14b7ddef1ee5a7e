"""Offline analysis of what the plugin recorded (spans, traces, kernels). Never imports vLLM."""
