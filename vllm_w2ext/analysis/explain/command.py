"""``vllm-w2ext explain PATH [--metrics SCRAPE] [--profile TRACE] [--format text|json] [--out FILE]``:
where the time of a run went, from its ``VLLM_W2EXT_TRACE_DIR`` folder. Also
``python -m vllm_w2ext.analysis.explain.command PATH``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vllm_w2ext.analysis.explain.render import render
from vllm_w2ext.analysis.explain.report import explain
from vllm_w2ext.analysis.readers.errors import UnreadableTrace


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a VLLM_W2EXT_TRACE_DIR folder (w2ext-<pid>.pftrace files) or one span file")
    p.add_argument("--metrics", help="a Prometheus text scrape of the run (the plugin's /metrics)")
    p.add_argument("--profile", help="a torch-profiler (Kineto) or merged trace of the run: the kernel mix per phase")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--out", help="write here instead of standard output")


def run(args: argparse.Namespace) -> int:
    if not os.path.exists(args.path):
        print(f"vllm-w2ext explain: {args.path}: no such file or folder", file=sys.stderr)
        return 2
    try:
        result = explain(args.path, args.metrics, args.profile)
    except (UnreadableTrace, OSError) as e:
        print(f"vllm-w2ext explain: {e}", file=sys.stderr)
        return 2
    text = render(result, args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vllm-w2ext explain")
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
