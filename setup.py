"""The package's metadata is in pyproject.toml; this adds its one C extension, the hooks' front
(``vllm_w2ext/hooks/_cfront.c``). Optional: where it cannot be built (no compiler or no Python headers) the
install goes on and the hooks use the Python front (``hooks/runner.py``), which does the same, slower."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("vllm_w2ext.hooks._cfront", ["vllm_w2ext/hooks/_cfront.c"], optional=True)])
