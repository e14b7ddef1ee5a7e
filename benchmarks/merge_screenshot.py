"""Merge the committed H100 lab profile (span files + torch-profiler trace) and screenshot it as
``vllm-w2ext view`` shows it: the tracks named, ordered, expanded, zoomed on three decode steps.

    python benchmarks/merge_screenshot.py      # -> benchmarks/results/h100/merge/merged_lab_bs1.json.gz
                                               #    and merged_lab_bs1_steps12-14_perfetto.png

Needs the test extras' headless Chromium (Debian ``chromium`` + npm ``playwright-core`` in tests/.npm,
as `.ci/setup-extras` installs them); it drives the same launcher as the tests (tests/support)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.perfetto_ui import view_trace  # noqa: E402

from vllm_w2ext.analysis.merge.merger import merge  # noqa: E402

SRC = ROOT / "benchmarks/results/h100/lab/profile/profile_bs1"
OUT = ROOT / "benchmarks/results/h100/merge"
HIDE_SIDEBAR = ("(window.app.sidebar.visible && window.app.sidebar.toggleVisibility(), "
                "window.raf.scheduleFullRedraw(), true)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="12-14", help="engine steps to zoom on (A-B)")
    ap.add_argument("--width", type=int, default=1800)
    ap.add_argument("--height", type=int, default=1000)
    a = ap.parse_args(argv)
    first, last = (int(x) for x in a.steps.split("-"))
    merged = OUT / "merged_lab_bs1.json.gz"
    # --clip-ms 1: the spans of the profiled window only (the lab's earlier sessions ran up to 32
    # requests at once; their request lanes would be empty rows here)
    info = merge([str(SRC)], str(merged), clip_ms=1.0)
    print(f"{merged.relative_to(ROOT)}: {info['events']} events ({info['added_events']} added, {info['flows']} flows), "
          f"clock offset {info['clock_offset_ns'] / 1e3:+.3f} us over {info['matched_annotations']} annotations")
    png = OUT / f"merged_lab_bs1_steps{first}-{last}_perfetto.png"
    r = view_trace(merged, {"tracks": "select count(distinct track_id) n from slice"}, png, steps=(first, last),
                   evals={"sidebar": HIDE_SIDEBAR}, width=a.width, height=a.height)
    if not r.get("ok") or r["import_errors"] or r["evals"].get("arrange_error"):
        print(f"failed: {r.get('error')} import errors {r['import_errors']} {r['evals']}")
        return 1
    print(f"{png.relative_to(ROOT)}: tracks with slices {r['rows']['tracks'][0]['n']}, import errors none; "
          f"process groups top to bottom: {r['evals']['order']['processes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
