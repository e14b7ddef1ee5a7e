"""vllm-w2ext: where the time goes inside vLLM (spans, NVTX, scheduler gaps, Perfetto, Prometheus)."""
__version__ = "0.1.0"
