"""``vllm-w2ext merge``: the plugin's span files and the torch-profiler traces of one run as one
Chrome/Kineto JSON trace on the profiler's clock."""
