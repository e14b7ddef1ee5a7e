"""``explain``'s text output: the verdict, the findings by time lost (number, share, evidence, what to
try), the device idle by cause, the requests in one line, and the notes."""
from __future__ import annotations

import json

from vllm_w2ext.analysis.explain.findings import pct, secs

MIN_SHARE = 0.005         # findings below this share are counted, not printed (text only)


def _req_line(r: dict) -> str:
    parts = [f"{r['finished']} finished"]
    for key, label in (("queue_s", "queue"), ("prefill_s", "prefill"), ("decode_s", "decode"), ("e2e_s", "end to end")):
        d = r.get(key)
        if d:
            parts.append(f"{label} {secs(d['mean'])} mean / {secs(d['p90'])} p90")
    parts.append(f"{r['preemptions']} preemptions")
    if r.get("finish_reasons"):
        parts.append("finished: " + ", ".join(f"{k} {v}" for k, v in sorted(r["finish_reasons"].items())))
    return " · ".join(parts)


def text(result: dict) -> str:
    w = result["wall"]
    lines = [f"vllm-w2ext explain {result['path']}",
             f"wall time {w['seconds']:.3f} s ({w['source']}); "
             + (", ".join(f"{d['device']}: {d['steps']} steps, busy {pct(d['busy_share_of_stepping'])} of the "
                          f"stepping time" for d in result["devices"]) or "no device steps"),
             "", result["verdict"], ""]
    shown = [f for f in result["findings"] if f["share"] >= MIN_SHARE or f["id"] == "kernel_mix"]
    if shown:
        lines.append("Findings, by time lost (seconds, share of the wall time):")
        for i, f in enumerate(shown, 1):
            label = f"{f['title']} [{f['cause']}]"
            lines.append(f"{i:>2}. {secs(f['seconds']):>9}  {pct(f['share']):>7}  {label}")
            lines.append(f"    evidence: {f['evidence'].get('text', '')}")
            if f["suggestion"]:
                lines.append(f"    try: {f['suggestion']}")
        hidden = len(result["findings"]) - len(shown)
        if hidden:
            lines.append(f"    (+{hidden} smaller, under {pct(MIN_SHARE)} each: --format json lists them)")
    else:
        lines.append("No findings.")
    causes = {c: v for c, v in result["device_idle_by_cause"].items() if v["seconds"] > 0}
    if causes:
        lines += ["", "Device idle by cause (mean per device): " + " · ".join(
            f"{c} {secs(v['seconds'])} ({pct(v['share'])})" for c, v in sorted(causes.items(), key=lambda x: -x[1]["seconds"]))]
    if result["requests"]["finished"]:
        lines += ["", "Requests: " + _req_line(result["requests"])]
    if result.get("kernel_mix"):
        lines += ["", "Kernel mix (profile): " + " · ".join(
            f"{ph} GEMM {pct(v['gemm_share'])} attention {pct(v['attention_share'])}"
            for ph, v in result["kernel_mix"].items())]
    for n in result["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines) + "\n"


def render(result: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(result, indent=2) + "\n"
    return text(result)
