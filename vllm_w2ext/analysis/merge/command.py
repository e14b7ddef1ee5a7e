"""``vllm-w2ext merge --out FILE [--step-flows bounds|all] [--clip-ms MS] INPUT...``: the command
line of merger.merge, which prints what the merge measured and warns about cut inputs."""
from __future__ import annotations

import argparse

from vllm_w2ext.analysis.merge.inputs import MergeError
from vllm_w2ext.analysis.merge.merger import STEP_FLOWS, merge


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="merged trace to write (.json.gz or .json)")
    p.add_argument("--step-flows", choices=STEP_FLOWS, default="bounds",
                   help="flows from each step to the first and last kernel/op it launched (bounds), or to all")
    p.add_argument("--clip-ms", type=float, default=None, metavar="MS",
                   help="keep only spans within MS ms of the profiled window(s) (an excerpt); default: all spans")
    p.add_argument("inputs", nargs="+", help="span files, profiler traces, or folders searched recursively")


def run(args: argparse.Namespace) -> int:
    try:
        info = merge(args.inputs, args.out, args.step_flows, args.clip_ms)
    except MergeError as e:
        print(f"vllm-w2ext merge: {e}")
        return 2
    for w in info["warnings"]:
        print(f"warning: {w}")
    if "clipped_spans" in info:
        print(f"clipped: {info['clipped_spans']} spans outside the profiled window(s) left out")
    print(f"span files: {len(info['span_files'])}, profiler traces: {len(info['profiler_traces'])}, "
          f"events written: {info['events']} ({info['added_events']} added, {info['flows']} flows)")
    if info["clock_offset_measured"]:
        print(f"clock offset (profiler - time.time_ns): {info['clock_offset_ns'] / 1e3:+.3f} us, spread (IQR) "
              f"{info['offset_spread_ns'] / 1e3:.3f} us, min/max {info['offset_min_ns'] / 1e3:+.3f}/"
              f"{info['offset_max_ns'] / 1e3:+.3f} us over {info['matched_annotations']} matched annotations")
        for t in info["profiler_traces"]:
            if t.get("clock_offset_ns") is not None and len(info["profiler_traces"]) > 1:
                who = f"rank {t['rank']}" if t.get("rank") is not None else t["path"]
                print(f"  {who} alone: {t['clock_offset_ns'] / 1e3:+.3f} us, spread (IQR) {t['offset_spread_ns'] / 1e3:.3f} us "
                      f"over {t['matched_annotations']} annotations")
    else:
        print("clock offset: not measured (" + ("no profiler trace" if not info["profiler_traces"] else
                                                "no span file" if not info["span_files"] else
                                                "no annotation matched") + ")")
    print(f"wrote {args.out}")
    return 0
