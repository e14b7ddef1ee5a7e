"""Driver of the planted-cause runs (tests/test_explain_planted.py): one small engine run that plants
one known cause of lost time, for ``vllm-w2ext explain`` to find. The planting lives here and in
tests/drivers/slow_scheduler.py, never in the product.

usage: planted.py MODEL OUT_JSON PARAMS_JSON
params: case (below), engine (extra engine arguments), and the case's knobs:
- schedule      LLM.generate with Scheduler.schedule slowed by ``sleep_s`` per call (slow_scheduler.py
                through vLLM's scheduler_cls; stepping is synchronous on the CPU build)
- arrivals      LLMEngine: one request at a time, each served to the end, ``gap_s`` of sleep before the
                next arrives (requests arrive slower than the engine serves them)
- interference  LLMEngine: ``decoders`` requests decoding, then one long prompt (``long_len`` tokens)
                added every ``every`` steps, ``long_prompts`` of them
- preemption    LLM.generate of ``prompts`` requests whose KV cache (``engine.num_gpu_blocks_override``
                blocks) cannot hold the batch as it grows
- slow_outputs  LLM.generate with OutputProcessor.process_outputs slowed by ``sleep_s`` per call
                (patched in this process before the engine exists, so the plugin's span wraps it)
- prepare       LLM.generate with the worker's input preparation slowed by ``sleep_s`` per step
                (slow_prepare.py through vLLM's worker_cls: before each forward, inside execute_model)
The result: what was planted (counts, seconds) and the driver's own wall time.
"""
import json
import os
import sys
import time


def prompt(n: int, seed: int):
    from vllm.inputs import TokensPrompt
    return TokensPrompt(prompt_token_ids=[(seed * 7919 + 31 * i) % 9000 + 10 for i in range(n)])


def sampling(n: int):
    from vllm import SamplingParams
    return SamplingParams(max_tokens=n, ignore_eos=True, temperature=0)


def engine_kwargs(model: str, p: dict) -> dict:
    kw = dict(model=model, dtype="float32", enforce_eager=True, seed=0, max_model_len=p.get("max_model_len", 512),
              max_num_seqs=p.get("max_num_seqs", 8), enable_prefix_caching=False)
    kw.update(p.get("engine", {}))
    return kw


def llm(model: str, p: dict):
    from vllm import LLM
    return LLM(**engine_kwargs(model, p))


def llm_engine(model: str, p: dict):
    from vllm import EngineArgs, LLMEngine
    return LLMEngine.from_engine_args(EngineArgs(**engine_kwargs(model, p)))


def shutdown(obj) -> None:
    eng = getattr(obj, "llm_engine", obj)
    eng.engine_core.shutdown()          # EngineCore + worker flush their spans on shutdown


def generate(model: str, p: dict, out: dict) -> None:
    m = llm(model, p)
    prompts = [prompt(p.get("prompt_len", 16) + i, i) for i in range(p.get("prompts", 4))]
    t0 = time.time()
    outs = m.generate(prompts, sampling(p.get("max_tokens", 16)), use_tqdm=False)
    out.update(wall_s=time.time() - t0, tokens=[len(o.outputs[0].token_ids) for o in outs])
    shutdown(m)


def generate_slowed(model: str, p: dict, out: dict, engine_arg: str, cls: str) -> None:
    """``generate`` with one of vLLM's classes replaced through its engine argument by a test class (this
    folder) that sleeps ``sleep_s`` per call while a flag file exists; the sleep per call goes in the result."""
    flag = out["_dir"] + "/slow.flag"
    open(flag, "w").close()
    os.environ.update(W2EXT_TEST_SLOW_FLAG=flag, W2EXT_TEST_SLOW_S=str(p["sleep_s"]))
    p.setdefault("engine", {})[engine_arg] = cls
    generate(model, p, out)
    out["sleep_s_per_call"] = p["sleep_s"]


def case_schedule(model: str, p: dict, out: dict) -> None:
    generate_slowed(model, p, out, "scheduler_cls", "slow_scheduler.SlowScheduler")


def case_prepare(model: str, p: dict, out: dict) -> None:
    generate_slowed(model, p, out, "worker_cls", "slow_prepare.SlowPrepareWorker")


def case_arrivals(model: str, p: dict, out: dict) -> None:
    eng = llm_engine(model, p)
    n, gap = p.get("requests", 4), p["gap_s"]
    t0 = time.time()
    for i in range(n):
        eng.add_request(f"a{i}", prompt(p.get("prompt_len", 16), i), sampling(p.get("max_tokens", 8)))
        while eng.has_unfinished_requests():
            eng.step()
        if i < n - 1:
            time.sleep(gap)
    out.update(wall_s=time.time() - t0, planted_s=gap * (n - 1), requests=n)
    shutdown(eng)


def case_interference(model: str, p: dict, out: dict) -> None:
    eng = llm_engine(model, p)
    t0 = time.time()
    for i in range(p.get("decoders", 8)):
        eng.add_request(f"d{i}", prompt(8, i), sampling(p.get("decode_tokens", 64)))
    steps, added = 0, 0
    while eng.has_unfinished_requests():
        if steps >= p.get("first_at", 4) and steps % p.get("every", 6) == 0 and added < p.get("long_prompts", 4):
            eng.add_request(f"long{added}", prompt(p["long_len"], 1000 + added), sampling(2))
            added += 1
        eng.step()
        steps += 1
    out.update(wall_s=time.time() - t0, long_prompts=added, steps=steps)
    shutdown(eng)


def case_preemption(model: str, p: dict, out: dict) -> None:
    generate(model, p, out)


def case_slow_outputs(model: str, p: dict, out: dict) -> None:
    from vllm.v1.engine.output_processor import OutputProcessor
    original, calls, delay = OutputProcessor.process_outputs, [0], p["sleep_s"]

    def slow_process_outputs(self, *args, **kwargs):
        calls[0] += 1
        time.sleep(delay)
        return original(self, *args, **kwargs)

    OutputProcessor.process_outputs = slow_process_outputs
    generate(model, p, out)
    out.update(process_outputs_calls=calls[0], planted_s=calls[0] * delay)


CASES = {"schedule": case_schedule, "arrivals": case_arrivals, "interference": case_interference,
         "preemption": case_preemption, "slow_outputs": case_slow_outputs, "prepare": case_prepare}

if __name__ == "__main__":
    model, out_path, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    result = {"case": params["case"], "_dir": os.path.dirname(os.path.abspath(out_path))}
    CASES[params["case"]](model, params, result)
    result.pop("_dir")
    with open(out_path, "w") as f:
        json.dump(result, f)
