"""While vLLM's own torch profiler records (LLM.start_profile / stop_profile, real vLLM CPU), the
plugin's worker ranges also appear in the profiler's trace as user annotations carrying step ids. The run
is the session's profiled run (conftest.profiled_run), shared with test_merge_perfetto."""
from __future__ import annotations

import gzip
import json


def test_worker_ranges_appear_in_the_torch_profiler_trace(profiled_run):
    prof = profiled_run / "prof"               # conftest.profiled_run: 4 prompts x 5 tokens, plugin on
    traces = list(prof.rglob("*.pt.trace.json*"))
    assert traces, list(prof.rglob("*"))
    names = []
    for t in traces:
        opener = gzip.open if t.suffix == ".gz" else open
        with opener(t, "rt") as f:
            events = json.load(f)["traceEvents"]
        names += [e["name"] for e in events if e.get("cat") == "user_annotation"]
    ours = [n for n in names if n.startswith(("worker.execute_model #", "worker.sample_tokens #", "worker.forward #"))]
    steps = {int(n.rsplit("#", 1)[1]) for n in ours if n.startswith("worker.execute_model")}
    assert len(steps) >= 4, names[:20]          # 1 prefill + 3 decode steps, each with its step id
    assert any(n.startswith("worker.forward #") for n in ours)
