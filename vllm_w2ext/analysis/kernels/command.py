"""``vllm-w2ext analyze TRACE [TRACE ...] [--format text|json|csv] [--out PATH] [--top N]``: the command
line of the kernel-time breakdown (analyzer.py reads, result.py sums up, report.py renders). Several
traces are the ranks of one tensor-parallel run (one torch-profiler trace per rank): each rank's
breakdown, its communication share, and the skew between the ranks at each collective (ranks.py).
Also ``python -m vllm_w2ext.analysis.kernels.command TRACE``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vllm_w2ext.analysis.kernels.analyzer import analyze
from vllm_w2ext.analysis.kernels.ranks import analyze_ranks
from vllm_w2ext.analysis.kernels.report import render, render_ranks
from vllm_w2ext.analysis.readers.errors import UnreadableTrace


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", nargs="+",
                   help="Kineto / Chrome JSON trace (.json, .json.gz, .json.xz) or a merged trace; several: the "
                        "ranks of one tensor-parallel run (one profiler trace per rank), compared")
    p.add_argument("--format", choices=("text", "json", "csv"), default="text")
    p.add_argument("--out", help="write here instead of standard output")
    p.add_argument("--top", type=int, default=20, help="how many kernels in the top-N table (default 20)")


def run(args: argparse.Namespace) -> int:
    if args.top < 0:
        print("vllm-w2ext analyze: --top must be >= 0", file=sys.stderr)
        return 2
    traces = args.trace if isinstance(args.trace, list) else [args.trace]
    try:
        if len(traces) == 1:
            result = analyze(traces[0], top=args.top)
            text = render(result, args.format)
            notes = result["notes"]
        else:
            result = analyze_ranks(traces, top=args.top)
            text = render_ranks(result, args.format)
            notes = result["tensor_parallel"]["notes"] + [
                f"rank {r['rank']}: {n}" for r, t in zip(result["tensor_parallel"]["ranks"], result["traces"])
                for n in t["notes"]]
    except UnreadableTrace as e:
        print(f"vllm-w2ext analyze: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vllm-w2ext analyze")
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
