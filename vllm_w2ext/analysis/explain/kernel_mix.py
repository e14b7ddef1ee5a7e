"""The kernel mix per phase from a torch-profiler (or merged) trace, through ``vllm-w2ext analyze``
(analysis/kernels): GEMM and attention shares of each phase's GPU time, and the launch-bound steps,
those whose GPU sat idle inside the step for at least LAUNCH_BOUND of the step's GPU span (it waited
for the CPU to launch the next kernel). The time lost counted is that in-step idle."""
from __future__ import annotations

from vllm_w2ext.analysis.explain.findings import Finding, pct, secs
from vllm_w2ext.analysis.kernels.analyzer import analyze
from vllm_w2ext.analysis.kernels.rules import GEMM_CATEGORIES

LAUNCH_BOUND = 0.3
TOP = 5


def mix(result: dict) -> dict:
    """Per phase: steps, GPU time and the GEMM / attention shares."""
    out = {}
    for ph, p in result.get("phases", {}).items():
        cats = p["categories"]
        out[ph] = {"steps": p["steps"], "gpu_time_s": round(p["time_us"] / 1e6, 6),
                   "gemm_share": round(sum(cats[c]["share"] for c in GEMM_CATEGORIES if c in cats), 4),
                   "attention_share": round(cats.get("attention", {}).get("share", 0.0), 4),
                   "mean_step_idle_in_step_s": round(p.get("mean_step_idle_in_step_us", 0.0) / 1e6, 9)}
    return out


def launch_bound(result: dict) -> list[dict]:
    return [r for r in result.get("steps", [])
            if r["gpu_span_us"] > 0 and r["idle_in_step_us"] >= LAUNCH_BOUND * r["gpu_span_us"]]


def finding(profile: str, wall_s: float) -> tuple[Finding | None, dict, list[str]]:
    result = analyze(profile, top=0)
    notes = [f"profile: {n}" for n in result.get("notes", [])]
    m = mix(result)
    if not result.get("has_gpu_kernels"):
        return None, m, notes
    lb = launch_bound(result)
    lost = sum(r["idle_in_step_us"] for r in lb) / 1e6
    top = sorted(lb, key=lambda r: -r["idle_in_step_us"])[:TOP]
    by_phase: dict[str, int] = {}
    for r in lb:
        by_phase[r["phase"]] = by_phase.get(r["phase"], 0) + 1
    parts = [f"{ph}: GEMM {pct(v['gemm_share'])}, attention {pct(v['attention_share'])} of {secs(v['gpu_time_s'])}"
             for ph, v in m.items()]
    text = "; ".join(parts)
    if lb:
        text += (f"; {len(lb)} of {len(result['steps'])} steps launch-bound (GPU idle >= {LAUNCH_BOUND:.0%} of the "
                 f"step inside it: " + ", ".join(f"{k} {v}" for k, v in by_phase.items())
                 + f"), the worst step {top[0]['step']} ({secs(top[0]['idle_in_step_us'] / 1e6)} idle)")
    ev = {"phases": m, "launch_bound_steps": len(lb), "steps": len(result["steps"]),
          "launch_bound_by_phase": by_phase,
          "top_steps": [{"step": r["step"], "phase": r["phase"], "idle_in_step_s": round(r["idle_in_step_us"] / 1e6, 9),
                         "gpu_span_s": round(r["gpu_span_us"] / 1e6, 9)} for r in top],
          "profile": result["trace"]["file"], "text": text}
    if top:
        ev["open_in_perfetto"] = {"span": "worker.execute_model", "step": top[0]["step"]}
    suggestion = None
    if lb and lost / max(wall_s, 1e-9) >= 0.02:
        suggestion = ("steps wait for kernel launches: CUDA graphs (no --enforce-eager; "
                      "compilation_config.cudagraph_capture_sizes covering these batch sizes) launch a step at once")
    title = "kernel mix per phase from the profile" + (" (launch-bound steps)" if lb else "")
    return Finding("kernel_mix", "launch_bound" if lb else "kernel_mix", title, lost,
                   lost / wall_s if wall_s else 0.0, ev, suggestion), m, notes
