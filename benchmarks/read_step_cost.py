"""``steps.facts.read_step`` (the EngineCore's reading of a step's batch, on vLLM's thread) timed on
SchedulerOutput-shaped batches, this tree's against another commit's, interleaved in one process:

    python benchmarks/read_step_cost.py [--against REV] [--batches 1,64,512] [--out FILE]

Each batch size runs as the steady decode (one token each: answered in O(1)), with two requests in the
middle of a chunked prefill (no output token yet: the per-request lists are scanned for them), and with two
new requests joining the decoding batch (``new 2``: requests finishing and joining all through, as in serving;
the batch is scanned for requests short of their first token too). A case's time is the best of ``--repeat``
rounds of ``--number`` calls, the two versions alternating round by round; both must return the same facts.
This tree's ``read_step`` is called as the EngineCore calls it: with the C scan (``_cfront.zero_positions``)
where the extension was built (``--python-scan``: the Python one). No vLLM: the cost of this function alone,
warm, on this CPU."""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace as NS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vllm_w2ext.steps import facts as current  # noqa: E402


def load_at(rev: str):
    """``vllm_w2ext/steps/facts.py`` as it was at ``rev``, imported as a module of its own."""
    src = subprocess.run(["git", "show", f"{rev}:vllm_w2ext/steps/facts.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "facts_at_rev.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("facts_at_rev", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def batch(n: int, prefilling: int, new: int = 0):
    """A step of ``n`` cached requests decoding one token each, of which ``prefilling`` (at the middle and
    three quarters) are mid-prompt: 256 tokens now, no output token yet; and ``new`` new requests with their whole
    prompt (64 tokens) beside them."""
    ids = [f"req-{i}" for i in range(n)]
    out = [5 + i % 100 for i in range(n)]
    nst = dict.fromkeys(ids, 1)
    for i in (n // 2, 3 * n // 4)[:prefilling]:
        out[i] = 0
        nst[ids[i]] = 256
    reqs = {r: NS(num_prompt_tokens=1024, arrival_time=1.0, trace_headers=None) for r in ids}
    new_reqs = [NS(req_id=f"new-{k}", num_computed_tokens=0) for k in range(new)]
    for r in new_reqs:
        nst[r.req_id] = 64
        reqs[r.req_id] = NS(num_prompt_tokens=64, arrival_time=1.0, trace_headers=None)
    cached = NS(req_ids=ids, num_output_tokens=out, num_computed_tokens=[0] * n, resumed_req_ids=set())
    so = NS(num_scheduled_tokens=nst, scheduled_new_reqs=new_reqs, scheduled_cached_reqs=cached,
            total_num_scheduled_tokens=sum(nst.values()), scheduled_spec_decode_tokens={},
            preempted_req_ids=set(), finished_req_ids=set())
    # the EngineCore passes its set of requests still prefilling: non-empty once one was scheduled short
    return so, reqs, {ids[n // 2]} if prefilling else set()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--against", default="HEAD", help="the commit to compare with (default HEAD)")
    ap.add_argument("--batches", default="1,64,512")
    ap.add_argument("--number", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--python-scan", action="store_true", help="this tree with the Python scan, not the C one")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    other = load_at(a.against)
    scan = current.zero_positions
    if not a.python_scan:
        try:
            from vllm_w2ext.hooks._cfront import zero_positions as scan
        except ImportError:
            print("the C extension has no zero_positions here: this tree's Python scan", file=sys.stderr)
    rows = []
    for n in (int(x) for x in a.batches.split(",")):
        for pre, new in ((0, 0), (2, 0), (0, 2)) if n >= 4 else ((0, 0),):
            so, reqs, prefilling = batch(n, pre, new)
            calls = {"against": lambda: other.read_step(so, reqs, n, 0, False, prefilling, False),
                     "this_tree": lambda: current.read_step(so, reqs, n, 0, False, prefilling, False, scan)}
            assert calls["against"]() == calls["this_tree"](), (n, pre, new)
            best = dict.fromkeys(calls, float("inf"))
            for _ in range(a.repeat):
                for name, f in calls.items():
                    t0 = time.perf_counter()
                    for _ in range(a.number):
                        f()
                    best[name] = min(best[name], (time.perf_counter() - t0) / a.number * 1e6)
            rows.append({"batch": n, "prefilling": pre, "new": new,
                         **{f"{k}_us": round(v, 2) for k, v in best.items()}})
            print(f"batch {n:4d}  prefilling {pre}  new {new}:  {a.against} {best['against']:7.2f} µs   "
                  f"this tree {best['this_tree']:7.2f} µs", flush=True)
    rev = subprocess.run(["git", "rev-parse", "--short", a.against], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    result = {"what": "steps.facts.read_step per call, best of rounds, interleaved", "against": rev,
              "this_tree_scan": "python" if scan is current.zero_positions else "c",
              "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
              "number": a.number, "repeat": a.repeat, "rows": rows}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
