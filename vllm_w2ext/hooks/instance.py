"""What the first process of a vLLM instance settles for every process it starts: the metrics folder.

With ``VLLM_W2EXT_METRICS_PORT``, every process's export process writes its metrics snapshot into one
folder, which the instance's one endpoint merges (``telemetry/metrics_server.py``). Processes learn the
folder by inheritance (``VLLM_W2EXT_METRICS_DIR`` in the environment of every process started after it
is set). The front end used to set it when its engine is built, before it starts its EngineCore; but
``vllm serve --data-parallel-size N`` starts the N EngineCores, and then N API servers, from its main
process, which builds no engine: the EngineCores never learnt the folder and their metrics never
reached the endpoint. So the folder is chosen as soon as a process imports vLLM's engine launcher
(``vllm.v1.engine.utils``: ``vllm serve``'s main process, an API server, an ``LLM``'s front end),
before anything is launched. Processes that already have a folder (an explicit
``VLLM_W2EXT_METRICS_DIR``, or inherited) keep it.
"""
from __future__ import annotations

import logging

import wrapt

from vllm_w2ext import config

log = logging.getLogger("vllm_w2ext")
LAUNCHER = "vllm.v1.engine.utils"       # launch_core_engines / CoreEngineProcManager (0.26 to 0.33)
_installed = [False]


def share_metrics_dir() -> str | None:
    """The instance's metrics folder, created and exported to child processes if none is set yet
    (None without ``VLLM_W2EXT_METRICS_PORT``)."""
    if not config.current().metrics_port:
        return None
    from vllm_w2ext.telemetry import metrics_server
    return metrics_server.shared_dir()


def _on_launcher_import(module) -> None:
    try:
        share_metrics_dir()
    except Exception as e:          # never break vLLM's import; the endpoint then shows the front end only
        log.warning("vllm_w2ext: could not prepare the shared metrics folder: %r", e)


def install() -> None:
    if not _installed[0]:
        _installed[0] = True
        wrapt.register_post_import_hook(_on_launcher_import, LAUNCHER)
