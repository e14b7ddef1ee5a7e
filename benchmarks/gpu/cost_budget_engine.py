"""One offline engine (``LLM``: front end here, EngineCore in a process of its own, as users run it) generating one
request of TOKENS tokens three times, for ``cost_budget_runs.sh`` (issue #19, ``VLLM_W2EXT_COST_BUDGET``): the plugin
on as the environment says; prints the wall time. Model folder in $M (the Llama-3.1-8B-shaped one, dummy weights).

    python3 benchmarks/gpu/cost_budget_engine.py NAME LAYERS TOKENS      # LAYERS 0: the model's own (32)
"""
import json, os, sys, time
from vllm import LLM, SamplingParams
name, layers, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kw = {"hf_overrides": {"num_hidden_layers": layers}} if layers else {}
llm = LLM(os.environ["M"], load_format="dummy", max_model_len=4096, enable_prefix_caching=False, seed=0, **kw)
sp = SamplingParams(max_tokens=tokens, ignore_eos=True, temperature=0)
t0 = time.time()
for _ in range(3):
    llm.generate(["hello " * 64], sp, use_tqdm=False)
print(json.dumps({"name": name, "layers": layers, "tokens": tokens, "wall_s": time.time() - t0}), flush=True)
