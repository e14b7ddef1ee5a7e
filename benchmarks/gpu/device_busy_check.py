"""Does the device timeline's "busy" time mean the GPU was busy? Checked against the GPU's own kernel record.

    python3 benchmarks/gpu/device_busy_check.py --model l4 --batch 1 --out DIR/l4_b1.json

The plugin places each step's end event on the wall clock and calls the time from the step's launch (when the GPU
had finished the previous step) to that end *busy* (``hooks/gpu_timing.py``): until commit 576ec4f the launch was
``Worker.execute_model``'s start, since then it is the forward's launch. The known answer here is the GPU's own: the
union of its kernels, copies and memsets as CUPTI records them (``torch.profiler`` with the CUDA activity alone: no
CPU op recording, so vLLM's thread runs as without it), over the same decode. Front end, EngineCore and worker in
ONE process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so that the worker's timer totals (``gpu_timing.MEASURED``) can
be read here. Two generates of one request batch after a warm-up: one without the profiler (the plugin's figures
alone), one under it (both). Per decode step: wall time, the plugin's busy and idle, the GPU's kernel union. A step
whose GPU work is shorter than vLLM's CPU work in ``execute_model`` (input preparation before the forward's launch)
read busy for that CPU time with the old launch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))

import flip_steps  # same folder: the step timing
import overhead_run as orun  # same folder: models

from vllm_w2ext.analysis.explain.intervals import Union

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def gpu_activity(trace: dict) -> dict:
    """The GPU's kernels, copies and memsets of a Chrome trace (µs): their union, count and the span they cover."""
    iv = [(e["ts"], e["ts"] + e["dur"]) for e in trace.get("traceEvents", [])
          if e.get("ph") == "X" and e.get("cat") in GPU_CATS and "dur" in e]
    if not iv:
        return {"kernels": 0}
    return {"kernels": len(iv), "union_us": Union(iv).total(), "span_us": max(e for _, e in iv) - min(s for s, _ in iv)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(orun.MODELS), default="l4")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--out-tokens", type=int, default=400)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models-dir", type=Path, default=Path(os.environ.get("OVERHEAD_MODELS_DIR", "/tmp/w2ext-models")))
    a = ap.parse_args()
    os.environ.update(VLLM_W2EXT="1", VLLM_ENABLE_V1_MULTIPROCESSING="0",
                      VLLM_W2EXT_TRACE_DIR=tempfile.mkdtemp(prefix="w2ext-busy-"))
    folder, layers = orun.model_folder(a.model, a.models_dir.resolve())
    kw = orun.engine_kwargs(a.model, folder, None)

    import numpy as np
    import torch
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from vllm_w2ext.hooks import gpu_timing
    from vllm_w2ext.telemetry import pipeline

    llm = LLM(**kw)
    rng = np.random.default_rng(0)
    prompts = [TokensPrompt(prompt_token_ids=rng.integers(10, 10000, size=a.prompt_len).tolist())
               for _ in range(a.batch)]
    sp = SamplingParams(temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=a.out_tokens, detokenize=False)
    steps_of = flip_steps.Flipper(llm.llm_engine, None)     # step timing only: never switches

    def settled() -> tuple[int, int]:
        """The worker timer's totals once every step so far is resolved (the export thread polls them)."""
        time.sleep(0.5)
        pipeline.get().flush_once()
        time.sleep(0.3)
        return tuple(gpu_timing.MEASURED)

    def run(profiled: bool) -> dict:
        idle0, busy0 = settled()
        t0 = steps_of.begin(0, True, True)
        trace = None
        if profiled:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                llm.generate(prompts, sp, use_tqdm=False)
            path = Path(tempfile.mkdtemp(prefix="w2ext-kineto-")) / "trace.json"
            prof.export_chrome_trace(str(path))
            trace = json.loads(path.read_text())
        else:
            llm.generate(prompts, sp, use_tqdm=False)
        wall_us = (time.perf_counter_ns() - t0) / 1e3
        intervals = steps_of.end(t0)["steps_us"]         # the first from t0: admission and prefill
        idle1, busy1 = settled()
        steps = len(intervals)
        out = {"steps": steps, "wall_us_per_step": wall_us / steps,
               "decode_step_us_median": statistics.median(intervals[5:]),
               "plugin_busy_us_per_step": (busy1 - busy0) / 1e3 / steps,
               "plugin_idle_us_per_step": (idle1 - idle0) / 1e3 / steps}
        b, i = busy1 - busy0, idle1 - idle0
        out["plugin_busy_share"] = b / (b + i) if b + i else None
        if trace is not None:
            g = gpu_activity(trace)
            out["gpu"] = g
            if g.get("kernels"):
                out["gpu_union_us_per_step"] = g["union_us"] / steps
                out["gpu_busy_share_of_wall"] = g["union_us"] / wall_us
        return out

    llm.generate(prompts, SamplingParams(max_tokens=16, ignore_eos=True), use_tqdm=False)    # warm-up
    doc = {"what": "device timeline busy vs the GPU's kernel union (CUPTI)", "model": orun.MODELS[a.model]["model"],
           "layers": layers, "batch": a.batch, "prompt_len": a.prompt_len, "out_tokens": a.out_tokens,
           "engine": {k: v for k, v in kw.items() if k != "model"},
           "vllm": __import__("vllm").__version__, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    doc["plain"] = run(False)
    if torch.cuda.is_available():                  # CUPTI's record: CUDA only (the CPU build checks the plumbing)
        doc["profiled"] = run(True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1))
    for k in [k for k in ("plain", "profiled") if k in doc]:
        print(f"[busy] {a.model} b{a.batch} {k}: " + ", ".join(f"{x}={v:.1f}" if isinstance(v, float) else f"{x}={v}"
                                                            for x, v in doc[k].items() if x != "gpu"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
