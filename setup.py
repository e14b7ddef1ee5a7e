"""The package's metadata is in pyproject.toml; this adds its C extensions: the hooks' front
(``vllm_w2ext/hooks/_cfront.c``), the device timer's poll, its CUDA runtime calls with the GIL released
(``vllm_w2ext/hooks/_event_times.c``), and the export pipe's record encoding (``vllm_w2ext/telemetry/_wire.c``).
Optional: where they cannot be built (no compiler or no Python headers) the install goes on and the plugin uses its Python code (``hooks/runner.py``'s front, ``hooks/gpu_timing.py``'s
per-step ctypes call, ``marshal`` for the pipe's frames), which does the same, slower."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("vllm_w2ext.hooks._cfront", ["vllm_w2ext/hooks/_cfront.c"], optional=True),
                   Extension("vllm_w2ext.hooks._event_times", ["vllm_w2ext/hooks/_event_times.c"], optional=True),
                   Extension("vllm_w2ext.telemetry._wire", ["vllm_w2ext/telemetry/_wire.c"], optional=True)])
