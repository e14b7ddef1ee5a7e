"""Preemptions: the KV cache ran out and running requests were pushed back to the waiting queue; when
resumed they recompute their prompt and outputs. The time lost counted is the device time of that
recompute (batches.py: the resumed tokens' part of their steps' prefill time), which delays every
request in those steps. Where requests also queued for a place in the batch while those preemptions
happened (queueing.py, limit kind ``kv_cache``), the same small KV cache kept them waiting: absorb()
adds that mean wait per request to the finding (one cause, one finding), its parts in the evidence."""
from __future__ import annotations

from vllm_w2ext.analysis.explain.batches import StepRow
from vllm_w2ext.analysis.explain.findings import Finding, secs
from vllm_w2ext.analysis.explain.timeline import Timeline
from vllm_w2ext.vocab import Attr, Span

TOP = 5


def finding(tl: Timeline, rows: dict[str, list[StepRow]]) -> Finding | None:
    allrows = [r for rs in rows.values() for r in rs]
    n = sum(r.preemptions for r in allrows)
    reqs = [s for _, s in tl.requests if (s.args.get(Attr.REQUEST_PREEMPTIONS) or 0) > 0]
    if n == 0 and not reqs:
        return None
    n = n or sum(int(s.args.get(Attr.REQUEST_PREEMPTIONS) or 0) for s in reqs)
    lost = sum(r.recompute_s for r in allrows)
    with_p = [r for r in allrows if r.preemptions > 0]
    first = min(with_p, key=lambda r: r.slice.start_ns) if with_p else None
    resumed = sum(r.resumed for r in allrows)
    top = sorted(with_p, key=lambda r: -r.preemptions)[:TOP]
    ev = {"preemptions": n, "steps_with_preemptions": len(with_p), "resumed_tokens": resumed,
          "recompute_s": round(lost, 6), "requests_preempted": len(reqs),
          "top_requests": [{"id": s.args.get(Attr.REQUEST_ID), "preemptions": s.args.get(Attr.REQUEST_PREEMPTIONS)}
                           for s in sorted(reqs, key=lambda s: -(s.args.get(Attr.REQUEST_PREEMPTIONS) or 0))[:TOP]],
          "top_steps": [{"step": r.step, "engine": r.engine, "preemptions": r.preemptions, "running": r.running,
                         "waiting": r.waiting, "pid": r.pid} for r in top]}
    text = f"{n} preemptions in {len(with_p)} steps; {resumed} tokens recomputed ({secs(lost)} of device time)"
    if reqs:
        text += f"; {len(reqs)} requests preempted"
    if first is not None:
        ev["first_preemption"] = {"step": first.step, "running": first.running, "waiting": first.waiting}
        ev["open_in_perfetto"] = {"span": Span.STEP, "step": first.step, "pid": first.pid}
        text += f"; the first in step {first.step} with {first.running} running, {first.waiting} waiting " \
                f"(open engine.step #{first.step} in Perfetto)"
    ev["text"] = text
    suggestion = ("the KV cache is too small for this batch: give it more memory (--gpu-memory-utilization or "
                  "--kv-cache-memory-bytes; CPU build: VLLM_CPU_KVCACHE_SPACE) or admit fewer sequences at once ("
                  + (f"--max-num-seqs below {first.running}" if first is not None and first.running > 2
                     else "--max-num-seqs") + ")")
    return Finding("preemption", "preemption", "requests preempted (KV cache full) and recomputed",
                   lost, lost / tl.wall_s if tl.wall_s else 0.0, ev, suggestion)


def absorb(pre: Finding, capacity: Finding | None, wall_s: float) -> bool:
    """Fold a capacity-queueing finding limited by the KV cache into the preemption finding; True if done."""
    if capacity is None or capacity.evidence.get("limit_kind") != "kv_cache":
        return False
    wait = capacity.seconds
    pre.evidence["kv_wait_mean_s"] = round(wait, 6)
    pre.evidence["kv_wait"] = {k: v for k, v in capacity.evidence.items() if k != "text"}
    pre.evidence["text"] = (f"requests waited {secs(wait)} on average for room in the KV cache "
                            f"({capacity.evidence['requests_waited']} of {capacity.evidence['requests']} waited); "
                            + pre.evidence["text"])
    pre.title = "KV cache too small for the batch: requests kept waiting, preempted and recomputed"
    pre.seconds += wait
    pre.share = pre.seconds / wall_s if wall_s else 0.0
    return True
