"""vLLM's optional Rust front end (``VLLM_USE_RUST_FRONTEND=1 vllm serve``): the ``vllm-rs`` binary
replaces the Python API server, ``AsyncLLM`` and its ``OutputProcessor``, so no Python front-end hook
runs. EngineCore and worker processes are still Python: their spans, metrics and trace files work.

``note_at_startup`` (called by ``plugin.register``) logs one line when it is switched on; ``detect``
(``vllm-w2ext doctor --vllm-source``) says whether a vLLM tree or wheel ships it. Imports no vLLM."""
from __future__ import annotations

import logging
import os

from vllm_w2ext.vocab import Span

log = logging.getLogger("vllm_w2ext")

ENV = "VLLM_USE_RUST_FRONTEND"
BINARY = "vllm/vllm-rs"                     # where the wheels put the binary (vllm/envs.py: "auto")
# Set in the environment once the line is logged, so that the processes vLLM starts from this one
# (EngineCore, workers: they inherit the environment) do not repeat it.
_NOTED = "W2EXT_RUST_FRONTEND_NOTED"          # not VLLM_W2EXT_*: config rejects unknown ones

# Spans recorded only by Python front-end hooks used by `vllm serve` (hooks/front.py).
MISSING_SPANS = (Span.REQUEST, Span.ADD_REQUEST, Span.PROCESS_OUTPUTS)
MESSAGE = (f"front-end spans are missing when {ENV}=1: {MISSING_SPANS[0]} and front.* "
           f"({', '.join(MISSING_SPANS[1:])}): vLLM's Rust front end replaces AsyncLLM and its OutputProcessor, "
           "so the VLLM_W2EXT_METRICS_PORT endpoint they start is not served either; "
           "EngineCore and worker spans still work")


def enabled(value: str | None) -> bool:
    """vLLM reads the variable as ``bool(int(value))``; words such as ``true`` count too."""
    if value is None:
        return False
    v = value.strip().lower()
    if v in ("true", "yes", "on"):
        return True
    try:
        return int(v) != 0
    except ValueError:
        return False


def note_at_startup(environ=None) -> bool:
    """Log the one line if the Rust front end is switched on (once per vLLM instance). True if logged."""
    environ = os.environ if environ is None else environ
    if not enabled(environ.get(ENV)) or environ.get(_NOTED):
        return False
    environ[_NOTED] = "1"
    log.warning("vllm_w2ext: %s is set: %s", ENV, MESSAGE)
    return True


def detect(source) -> dict:
    """Does this vLLM (a ``static_check`` source: tree or wheel) have the Rust front end?"""
    envs = source.read("vllm/envs.py") or ""
    utils = source.read("vllm/v1/utils.py") or ""
    env_var = ENV in envs
    binary = source.exists(BINARY)
    launcher = "RustFrontendProcessManager" in utils
    present = env_var
    if present and binary:
        state = f"present ({ENV} in vllm/envs.py, {BINARY} shipped)"
    elif present:
        state = (f"switch only ({ENV} in vllm/envs.py; no {BINARY} binary in this {source.kind}: with the "
                 "switch on, vLLM needs VLLM_RUST_FRONTEND_PATH to name one)")
    else:
        state = "absent"
    return {"present": present, "env_var": env_var, "binary": binary, "launcher": launcher, "state": state,
            "missing_spans": list(MISSING_SPANS) if present else [], "message": MESSAGE if present else ""}
