"""The ``requests`` section: what the finished requests' spans say, in sum (counts, phase times,
preemptions, the plugin's prefill-interference estimate, finish reasons)."""
from __future__ import annotations

import statistics

from vllm_w2ext.analysis.explain.timeline import Timeline
from vllm_w2ext.vocab import Attr


def _dist(xs: list[float]) -> dict | None:
    if not xs:
        return None
    xs = sorted(xs)
    return {"mean": round(statistics.fmean(xs), 6), "p50": round(xs[len(xs) // 2], 6),
            "p90": round(xs[int(0.9 * (len(xs) - 1))], 6), "max": round(xs[-1], 6)}


def _vals(slices, key: str) -> list[float]:
    return [float(v) for v in (s.args.get(key) for s in slices) if isinstance(v, (int, float))]


def summary(tl: Timeline) -> dict:
    eng = [s for _, s in tl.requests]
    out = {"finished": len(eng), "front_end_requests": len(tl.front_requests),
           "queue_s": _dist(_vals(eng, Attr.QUEUE_S)), "prefill_s": _dist(_vals(eng, Attr.PREFILL_S)),
           "decode_s": _dist(_vals(eng, Attr.DECODE_S)),
           "e2e_s": _dist([(s.end_ns - s.start_ns) / 1e9 for s in tl.front_requests]),
           "preemptions": int(sum(_vals(eng, Attr.REQUEST_PREEMPTIONS))),
           "preempted_requests": sum(1 for v in _vals(eng, Attr.REQUEST_PREEMPTIONS) if v > 0),
           "steps_with_prefill": int(sum(_vals(eng, Attr.STEPS_WITH_PREFILL))),
           "prefill_interference_s": round(sum(_vals(eng, Attr.PREFILL_INTERFERENCE_S)), 6),
           "output_tokens": int(sum(_vals(eng, Attr.OUTPUT_TOKENS))),
           "prompt_tokens": int(sum(_vals(eng, Attr.REQUEST_PROMPT_TOKENS)))}
    reasons: dict[str, int] = {}
    for s in eng:
        r = s.args.get(Attr.FINISH_REASON)
        if r is not None:
            reasons[str(r)] = reasons.get(str(r), 0) + 1
    out["finish_reasons"] = reasons
    engines = sorted({e for e, _ in tl.requests})
    if len(engines) > 1:
        out["by_engine"] = {e: sum(1 for x, _ in tl.requests if x == e) for e in engines}
    return out
