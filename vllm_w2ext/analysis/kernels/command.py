"""``vllm-w2ext analyze TRACE [--format text|json|csv] [--out PATH] [--top N]``: the command line of
the kernel-time breakdown (analyzer.py reads, result.py sums up, report.py renders). Also
``python -m vllm_w2ext.analysis.kernels.command TRACE``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vllm_w2ext.analysis.kernels.analyzer import analyze
from vllm_w2ext.analysis.kernels.report import render
from vllm_w2ext.analysis.readers.errors import UnreadableTrace


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", help="Kineto / Chrome JSON trace (.json, .json.gz, .json.xz) or a merged trace")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("--out", help="write here instead of standard output")
    p.add_argument("--top", type=int, default=20, help="how many kernels in the top-N table (default 20)")


def run(args: argparse.Namespace) -> int:
    if args.top < 0:
        print("vllm-w2ext analyze: --top must be >= 0", file=sys.stderr)
        return 2
    try:
        result = analyze(args.trace, top=args.top)
    except UnreadableTrace as e:
        print(f"vllm-w2ext analyze: {e}", file=sys.stderr)
        return 2
    text = render(result, args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vllm-w2ext analyze")
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
