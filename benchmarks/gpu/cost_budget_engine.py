"""One offline engine (``LLM``: front end here, EngineCore in a process of its own, as users run it) generating BATCH
requests (default 1; above 1 the engine runs up to 512 at once) of TOKENS tokens three times, for
``cost_budget_runs.sh`` (issue #19, ``VLLM_W2EXT_COST_BUDGET``): the plugin on as the environment says;
prints the wall time. Model folder in $M (the Llama-3.1-8B-shaped one, dummy weights).

    python3 benchmarks/gpu/cost_budget_engine.py NAME LAYERS TOKENS [BATCH]    # LAYERS 0: the model's own (32)
"""
import json, os, sys, time
from vllm import LLM, SamplingParams
name, layers, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
batch = int(sys.argv[4]) if len(sys.argv) > 4 else 1
kw = {"hf_overrides": {"num_hidden_layers": layers}} if layers else {}
if batch > 1:
    kw["max_num_seqs"] = 512
llm = LLM(os.environ["M"], load_format="dummy", max_model_len=4096, enable_prefix_caching=False, seed=0, **kw)
sp = SamplingParams(max_tokens=tokens, ignore_eos=True, temperature=0)
t0 = time.time()
for _ in range(3):
    llm.generate([f"{i} " + "hello " * 64 for i in range(batch)], sp, use_tqdm=False)
print(json.dumps({"name": name, "layers": layers, "tokens": tokens, "batch": batch, "wall_s": time.time() - t0}),
      flush=True)
