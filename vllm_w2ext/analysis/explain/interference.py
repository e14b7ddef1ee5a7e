"""Decode slowed by co-batched prefill: steps whose forward carried decodes and other requests' fresh
prefill (not the recompute of a resumed request, see preemption.py). The time lost is the device time
that prefill added to those steps over a decode-only step of the same size (batches.Baseline): for
that long, every decoding request of the step waited. The plugin's own per-request estimate
(``vllm.request.prefill_interference_s``) is given beside it as evidence."""
from __future__ import annotations

import statistics

from vllm_w2ext.analysis.explain.batches import StepRow
from vllm_w2ext.analysis.explain.findings import Finding, secs
from vllm_w2ext.analysis.explain.timeline import Timeline
from vllm_w2ext.vocab import Attr, Span

TOP = 5


def finding(tl: Timeline, rows: dict[str, list[StepRow]]) -> Finding | None:
    allrows = [r for rs in rows.values() for r in rs]
    mixed = [r for r in allrows if r.mixed]
    if not mixed:
        return None
    lost = sum(r.fresh_extra_s for r in mixed)
    dec = [r.busy_s for r in allrows if r.prefill == 0 and r.decode > 0 and r.busy_s is not None]
    mix = [r.busy_s for r in mixed if r.busy_s is not None]
    top = sorted(mixed, key=lambda r: -r.fresh_extra_s)[:TOP]
    reqs = [s for _, s in tl.requests if (s.args.get(Attr.STEPS_WITH_PREFILL) or 0) > 0]
    est = [(float(s.args.get(Attr.PREFILL_INTERFERENCE_S) or 0.0), s) for s in reqs]
    ev = {"mixed_steps": len(mixed), "decode_only_steps": len(dec),
          "decode_only_step_s": round(statistics.median(dec), 9) if dec else None,
          "mixed_step_s": round(statistics.median(mix), 9) if mix else None,
          "prefill_tokens_per_mixed_step": {"mean": round(statistics.fmean(r.fresh for r in mixed), 1),
                                            "max": max(r.fresh for r in mixed)},
          "decode_tokens_per_mixed_step": round(statistics.fmean(r.decode for r in mixed), 1),
          "requests_slowed": len(reqs),
          "plugin_estimate_s": {"total": round(sum(e for e, _ in est), 6),
                                "max": round(max((e for e, _ in est), default=0.0), 6)},
          "top_steps": [{"step": r.step, "engine": r.engine, "extra_s": round(r.fresh_extra_s, 6),
                         "prefill_tokens": r.fresh, "decode_tokens": r.decode, "pid": r.pid} for r in top]}
    text = f"{len(mixed)} steps carried {ev['prefill_tokens_per_mixed_step']['mean']:.0f} prefill tokens on " \
           f"average next to {ev['decode_tokens_per_mixed_step']:.0f} decodes"
    if dec and mix:
        text += f"; such a step took {secs(ev['mixed_step_s'])} (median) against {secs(ev['decode_only_step_s'])} " \
                f"for a decode-only step"
    if est:
        e, s = max(est, key=lambda x: x[0])
        ev["most_slowed_request"] = {"id": s.args.get(Attr.REQUEST_ID), "estimate_s": round(e, 6)}
        text += f"; {len(reqs)} requests slowed, most {s.args.get(Attr.REQUEST_ID)} (+{secs(e)}, the plugin's estimate)"
    if top and top[0].fresh_extra_s > 0:
        r = top[0]
        text += f"; open engine.step #{r.step} in Perfetto (+{secs(r.fresh_extra_s)})"
        ev["open_in_perfetto"] = {"span": Span.STEP, "step": r.step, "pid": r.pid}
    ev["text"] = text
    share = lost / tl.wall_s if tl.wall_s else 0.0
    suggestion = None
    if share >= 0.02 and dec and mix and statistics.median(mix) > 1.5 * statistics.median(dec):
        suggestion = (f"prefill chunks of up to {ev['prefill_tokens_per_mixed_step']['max']} tokens rode in decode "
                      "steps: a smaller --max-num-batched-tokens cuts them into smaller chunks so each decode step "
                      "waits less (at some prefill throughput); prefill/decode disaggregation removes the wait")
    return Finding("prefill_interference", "prefill_interference",
                   "decode slowed by co-batched prefill (other requests' prefill in the same forward)",
                   lost, share, ev, suggestion)
