"""Queueing: the time from a request's arrival to its first scheduled step (``vllm.request.queue_s``),
split by what the engine was doing meanwhile.

- capacity: the engine was running steps after whose scheduling requests were left waiting
  (``vllm.scheduler.waiting`` > 0): the batch had no room. Why it had none comes from those steps:
  preemptions (the KV cache), the running count pinned at its maximum (``--max-num-seqs``) or the
  step's tokens pinned at their maximum (``--max-num-batched-tokens``).
- the step in flight: the engine was running a step that left nobody waiting; the request arrived
  after that step was scheduled and joins the next one (a wait bounded by the step's length).
- not stepping: the engine ran no step (the request had not reached the scheduler yet: front end,
  IPC); the device's idle by cause covers the same time.

A step's time runs from its start to the next step's start (at most to its end plus twice the usual
gap between steps). Seconds are per request (the mean wait), so the share says how much of the wall
time an average request spent waiting. The queue window ends at the start of the request's first step
(``vllm.request.first_step``) or, without it, at its ``engine.request`` span's start plus the wait
(the span starts at arrival)."""
from __future__ import annotations

import statistics

from vllm_w2ext.analysis.explain.batches import StepRow
from vllm_w2ext.analysis.explain.findings import Finding, secs
from vllm_w2ext.analysis.explain.intervals import Union
from vllm_w2ext.analysis.explain.timeline import Timeline
from vllm_w2ext.vocab import Attr

TOP = 5
MIN_MEAN_S = 1e-3        # below this mean wait a queueing finding says nothing useful


def _step_time(rs: list[StepRow]) -> tuple[Union, Union]:
    """(steps that left requests waiting, other scheduled steps) as wall-clock unions."""
    sched = [r for r in rs if r.num_reqs > 0]
    gaps = [b.slice.start_ns - a.slice.end_ns for a, b in zip(sched, sched[1:]) if b.slice.start_ns > a.slice.end_ns]
    bridge = max(1_000_000, 2 * int(statistics.median(gaps))) if gaps else 1_000_000
    full, other = [], []
    for i, r in enumerate(sched):
        end = r.slice.end_ns + bridge
        if i + 1 < len(sched):
            end = min(end, sched[i + 1].slice.start_ns)
        (full if r.waiting > 0 else other).append((r.slice.start_ns, max(end, r.slice.end_ns)))
    return Union(full), Union(other)


def windows(tl: Timeline, rows: dict[str, list[StepRow]]) -> list[dict]:
    """Per finished request that waited: its queue window and its parts."""
    starts = {(r.engine, r.step): r.slice.start_ns for rs in rows.values() for r in rs}
    unions = {engine: _step_time(rs) for engine, rs in rows.items()}
    out = []
    for engine, s in tl.requests:
        q = s.args.get(Attr.QUEUE_S)
        if not isinstance(q, (int, float)) or q <= 0:
            continue
        first = s.args.get(Attr.FIRST_STEP)
        end = starts.get((engine, first)) if isinstance(first, int) else None
        if end is None:
            end = s.start_ns + int(q * 1e9)
        start = end - int(q * 1e9)
        full, other = unions.get(engine, (Union(()), Union(())))
        cap = min(q, full.overlap(start, end) / 1e9)
        flight = min(q - cap, other.overlap(start, end) / 1e9)
        out.append({"id": s.args.get(Attr.REQUEST_ID), "engine": engine, "queue_s": float(q), "capacity_s": cap,
                    "step_in_flight_s": flight, "not_stepping_s": q - cap - flight, "start_ns": start, "end_ns": end})
    return out


def _limit(rs: list[StepRow]) -> tuple[str, str, str | None]:
    """(kind, why, suggestion): what held requests back, from the steps that left some waiting. Kinds:
    kv_cache (preemptions in those steps), max_num_seqs (the running count pinned at its maximum),
    token_budget (the step's tokens pinned at their maximum), or "" (the spans do not say)."""
    during = [r for r in rs if r.num_reqs > 0 and r.waiting > 0]
    if not during:
        return "", "", None
    if any(r.preemptions for r in during):
        return "kv_cache", "preemptions in those steps: the KV cache was full", (
            "more KV cache memory (--gpu-memory-utilization, --kv-cache-memory-bytes; CPU build: "
            "VLLM_CPU_KVCACHE_SPACE)")
    top_running = max(r.running for r in rs)
    pinned = sum(1 for r in during if r.running >= top_running) / len(during)
    top_tokens = max(r.prefill + r.decode for r in rs)
    full = sum(1 for r in during if r.prefill + r.decode >= top_tokens) / len(during)
    if pinned >= 0.8 and top_running > 1:
        return "max_num_seqs", f"the running batch stayed at {top_running} requests in {pinned:.0%} of those steps", (
            f"the batch was full at {top_running} sequences: a larger --max-num-seqs (if the KV cache holds "
            "them) or more replicas")
    if full >= 0.5 and top_tokens > 0:
        return "token_budget", f"the steps were at their token maximum ({top_tokens}) in {full:.0%} of them", (
            f"the token budget per step ({top_tokens}) was spent: a larger --max-num-batched-tokens admits "
            "prefills sooner (longer steps for the decodes)")
    return "", "", None


def findings(tl: Timeline, rows: dict[str, list[StepRow]]) -> list[Finding]:
    win = windows(tl, rows)
    n_req = len(tl.requests)
    if not win or not n_req:
        return []
    wall = tl.wall_s
    out = []
    cap = sum(w["capacity_s"] for w in win) / n_req
    if cap >= MIN_MEAN_S:
        kind, why, suggestion = "", "", None
        for rs in rows.values():
            kind, why, suggestion = _limit(rs)
            if kind:
                break
        top = sorted(win, key=lambda w: -w["capacity_s"])[:TOP]
        waits = sorted([w["capacity_s"] for w in win] + [0.0] * (n_req - len(win)))
        ev = {"requests": n_req, "requests_waited": sum(1 for w in win if w["capacity_s"] > 0),
              "mean_s": round(cap, 6), "p90_s": round(waits[int(0.9 * (len(waits) - 1))], 6),
              "max_s": round(waits[-1], 6), "limit": why, "limit_kind": kind,
              "top_requests": [{"id": w["id"], "capacity_wait_s": round(w["capacity_s"], 6)} for w in top]}
        text = (f"{ev['requests_waited']} of {n_req} requests waited for a place in the batch, {secs(cap)} on "
                f"average (max {secs(ev['max_s'])}, request {top[0]['id']})")
        ev["text"] = text + (f"; {why}" if why else "")
        out.append(Finding("queueing.capacity", "capacity",
                           "requests queued while the batch was full (capacity)", cap,
                           cap / wall if wall else 0.0, ev, suggestion))
    flight = sum(w["step_in_flight_s"] for w in win) / n_req
    idle = sum(w["not_stepping_s"] for w in win) / n_req
    if flight + idle >= MIN_MEAN_S:
        top = sorted(win, key=lambda w: w["capacity_s"] - w["queue_s"])[:TOP]
        ev = {"requests": n_req, "step_in_flight_mean_s": round(flight, 6), "not_stepping_mean_s": round(idle, 6),
              "top_requests": [{"id": w["id"], "wait_s": round(w["queue_s"] - w["capacity_s"], 6)} for w in top],
              "text": f"requests waited {secs(flight + idle)} on average for their first step with room in the "
                      f"batch: {secs(flight)} for the step in flight to end, {secs(idle)} before the engine stepped "
                      f"(front end, IPC); longest: {top[0]['id']}"}
        out.append(Finding("queueing.next_step", "queue_next_step",
                           "requests waited for the next step (not for room in the batch)", flight + idle,
                           (flight + idle) / wall if wall else 0.0, ev, None))
    return out
