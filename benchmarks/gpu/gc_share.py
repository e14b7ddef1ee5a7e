"""Python's cyclic collections in a real engine, with the plugin on and off (issue #19): how many of the collections
on vLLM's thread the plugin's records add.

    VLLM_W2EXT=0|1 [VLLM_W2EXT_SAMPLE=N | VLLM_W2EXT_COST_BUDGET=P] \
        python3 benchmarks/gpu/gc_share.py MODEL_FOLDER --batch 512 --rounds 2 --max-tokens 128 --out FILE.json

Front end, EngineCore and worker in one process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, the ``uni`` executor), the
model with dummy weights and the 4-layer override by default. Each round generates ``--batch`` requests at once, after
one warm-up call. ``gc.callbacks`` times every collection on the thread it runs on; engine steps are counted by a
plain counter around ``EngineCore.step`` / ``step_with_batch_queue``, set before the engine is built, the same with
the plugin on or off. A collection's count is set by allocations, not by the host's speed, so one run per arm
compares; its time moves with the host. With the plugin on, its trace folder is a temporary one (span files, as
``hook_cost_engine.py``)."""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gc_by_thread import CollectionTimer  # noqa: E402  (benchmarks/, beside hook_cost_engine.py)


def count_steps() -> list:
    """A counter of engine steps around both of EngineCore's step functions (whichever vLLM binds)."""
    from vllm.v1.engine import core
    n = [0]
    for name in ("step", "step_with_batch_queue"):
        fn = getattr(core.EngineCore, name, None)
        if fn is None:
            continue

        def counted(self, *a, _fn=fn, **k):
            n[0] += 1
            return _fn(self, *a, **k)
        setattr(core.EngineCore, name, counted)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--engine-json", default='{"hf_overrides": {"num_hidden_layers": 4}}')
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    trace_dir = tempfile.mkdtemp(prefix="w2ext-gc-share-")
    os.environ.update(VLLM_ENABLE_V1_MULTIPROCESSING="0")
    plugin = os.environ.get("VLLM_W2EXT", "0") not in ("", "0")
    if plugin:
        os.environ.setdefault("VLLM_W2EXT_TRACE_DIR", trace_dir)
    steps = count_steps()
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    kw = {"model": a.model, "max_model_len": 2048, "enable_prefix_caching": False,
          "distributed_executor_backend": "uni", "load_format": "dummy", "max_num_seqs": max(a.batch, 1),
          **json.loads(a.engine_json)}
    llm = LLM(**kw)
    sp = SamplingParams(max_tokens=a.max_tokens, ignore_eos=True, temperature=1.0)
    prompt = TokensPrompt(prompt_token_ids=[10 + (i * 31) % 9000 for i in range(a.prompt_len)])
    llm.generate([prompt], sp, use_tqdm=False)
    timer = CollectionTimer()
    timer.start()
    steps[0] = 0
    t0 = time.perf_counter()
    for _ in range(a.rounds):
        llm.generate([prompt] * a.batch, sp, use_tqdm=False)
    wall = time.perf_counter() - t0
    timer.stop()
    n = steps[0]
    by_generation = timer.by_generation(n)
    total = {t: {"collections": v["collections"], "us_per_step": v["us_per_step"]} for t, v in timer.by_thread(n).items()}
    import vllm
    doc = {"what": __doc__.split("\n\n")[0], "plugin": plugin,
           "settings": {k: v for k, v in os.environ.items() if k.startswith("VLLM_W2EXT") and k != "VLLM_W2EXT_TRACE_DIR"},
           "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                       "vllm": vllm.__version__, "cores": os.cpu_count()},
           "model": Path(a.model).name, "engine": {k: v for k, v in kw.items() if k != "model"}, "batch": a.batch,
           "rounds": a.rounds, "max_tokens": a.max_tokens, "engine_steps": n, "wall_s": round(wall, 3),
           "step_ms": round(wall / n * 1e3, 3) if n else None, "gc_total_by_thread": total, "gc_by_thread": by_generation,
           "gc_threshold": gc.get_threshold(), "gc_frozen": gc.get_freeze_count()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(f"plugin {'on' if plugin else 'off'} {doc['settings']}: {n} steps, {doc['step_ms']} ms per step; "
          f"collections {total}", flush=True)
    shutil.rmtree(trace_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
