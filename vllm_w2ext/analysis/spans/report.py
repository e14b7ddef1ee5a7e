"""``python -m vllm_w2ext.analysis.spans.report SPANS.jsonl[.gz]``: span counts per name and process
role, tree checks and an excerpt of consecutive engine steps, as JSON."""
from __future__ import annotations

import argparse
import json

from vllm_w2ext.analysis.spans.records import load_jsonl
from vllm_w2ext.analysis.spans.tree import SpanSet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("spans")
    ap.add_argument("--out")
    ap.add_argument("--excerpt-from", type=int, default=1)
    ap.add_argument("--excerpt-steps", type=int, default=5)
    a = ap.parse_args(argv)
    raw = load_jsonl(a.spans)
    ss = SpanSet(raw)
    vllm_own = sorted({s.name for s in raw if not s.role})
    report = {"summary": ss.summary(), "vllm_own_spans": vllm_own,
              "step_excerpt": ss.step_excerpt(a.excerpt_from, a.excerpt_steps)}
    text = json.dumps(report, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
