"""``vllm-w2ext analyze``: where a torch-profiler trace's GPU time went, by kernel category, step and
phase (name rules, then the GEMM split by position in the layer)."""
