"""What wearing out vLLM's classes' version tags costs a real engine, without the plugin (issue #19).

``type_version_check.py`` shows the mechanism on a stand-in class: every assignment to a class attribute
invalidates the attribute loads CPython specialized for that class, and from Python 3.12 a class given about
a thousand version tags gets none again, so its instances' ``self.x`` loads stay unspecialized for the rest
of the process. Up to 9c4fbd0 the plugin's step gate did exactly that to vLLM's Scheduler,
Worker and V2 model runner (two swaps per hook per gate cycle, a few cycles per request with
``VLLM_W2EXT_SAMPLE``). Here: stock vLLM, engine in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
the TP=1 layout: scheduler, worker and runner all here), ``bench latency``-shaped batch-1 generate calls in
blocks; then ``--wear real`` assigns to those three classes ``--swaps`` times (a harmless attribute, the
class looked up after each) or ``--wear dummy`` to an unrelated class (the control for drift), and the same
blocks run again. The control's change is the drift a ``real`` run has to exceed to show anything.

    python3 benchmarks/gpu/type_version_engine.py --wear real|dummy --out FILE [--model l4] [--blocks 8]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
import overhead_run as orun  # noqa: E402  same folder: models, engine kwargs


def hot_classes() -> list[type]:
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.worker.gpu_worker import Worker
    try:
        from vllm.v1.worker.gpu.model_runner import GPUModelRunner      # the V2 runner (0.26 on the GPU)
    except ImportError:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    return [Scheduler, Worker, GPUModelRunner]


def wear(classes: list[type], swaps: int) -> None:
    for i in range(swaps):
        for cls in classes:
            cls._w2ext_probe = i                # a new version tag is needed ...
            getattr(cls, "_w2ext_probe")        # ... and assigned at the next lookup


def quantile(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[int(q * (len(v) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wear", choices=("real", "dummy"), required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="l4", choices=sorted(orun.MODELS))
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--swaps", type=int, default=1200)
    ap.add_argument("--models-dir", type=Path, default=Path(os.environ.get("OVERHEAD_MODELS_DIR", "/tmp/w2ext-models")))
    a = ap.parse_args()
    import numpy as np
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    folder, layers = orun.model_folder(a.model, a.models_dir.resolve())
    llm = LLM(**orun.engine_kwargs(a.model, folder, None))
    ps = [TokensPrompt(prompt_token_ids=np.random.default_rng(0).integers(10, 10000, size=512).tolist())]
    sp = SamplingParams(n=1, temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=128, detokenize=False)

    def block() -> list[float]:
        out = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            llm.generate(ps, sp, use_tqdm=False)
            out.append(time.perf_counter() - t0)
        return out

    block()                                             # warm-up
    before = [t for _ in range(a.blocks) for t in block()]
    classes = hot_classes() if a.wear == "real" else [type("Unrelated", (), {})]
    t0 = time.perf_counter()
    wear(classes, a.swaps)
    wear_s = time.perf_counter() - t0
    after = [t for _ in range(a.blocks) for t in block()]
    summary = {f"{name}_{k}": round(f(v), 5) for name, v in (("before", before), ("after", after))
               for k, f in (("p10", lambda v: quantile(v, .1)), ("p25", lambda v: quantile(v, .25)),
                            ("median", statistics.median))}
    for k in ("p10", "p25", "median"):
        summary[f"change_{k}_pct"] = round((summary[f"after_{k}"] / summary[f"before_{k}"] - 1) * 100, 2)
    doc = {"wear": a.wear, "classes": [f"{c.__module__}.{c.__qualname__}" for c in classes], "swaps": a.swaps,
           "wear_s": round(wear_s, 4), "model": orun.MODELS[a.model]["model"], "layers": layers,
           "python": sys.version.split()[0], "before": before, "after": after, "summary": summary}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1))
    print(f"[type_version_engine] wear={a.wear} {json.dumps(summary)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
