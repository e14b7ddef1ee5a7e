"""``vllm-w2ext analyze``: where a torch-profiler trace's GPU time went, by kernel category, step and
phase (name rules, then the GEMM split by position in the layer); with one trace per tensor-parallel rank,
each rank's communication share and the skew between the ranks at each collective (ranks.py)."""
