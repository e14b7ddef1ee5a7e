"""Offline driver for the tests: LLM.generate on a model, then a clean engine shutdown.

usage: offline.py MODEL OUT_JSON PARAMS_JSON   (params: prompts, max_tokens, ...)"""
import json
import sys
import time

if __name__ == "__main__":
    model, out, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    from vllm import LLM, SamplingParams

    llm = LLM(model, dtype="float32", max_model_len=512, enforce_eager=True,
              max_num_seqs=params.get("max_num_seqs", 8), seed=0)
    n, max_tokens = params.get("prompts", 6), params.get("max_tokens", 6)
    prompts = [" ".join(f"t{(7 * i + j) % 9000 + 10}" for j in range(5 + i)) for i in range(n)]
    t0 = time.time()
    outs = llm.generate(prompts, SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0))
    elapsed = time.time() - t0
    result = {"num_outputs": len(outs), "tokens": [len(o.outputs[0].token_ids) for o in outs],
              "elapsed_s": elapsed}
    llm.llm_engine.engine_core.shutdown()      # EngineCore + worker flush their spans on shutdown
    with open(out, "w") as f:
        json.dump(result, f)
