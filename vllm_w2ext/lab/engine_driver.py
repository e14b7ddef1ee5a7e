"""One vLLM engine, several measurements: ``python -m vllm_w2ext.lab.engine_driver SPEC.json``.

Engine starts cost ~80 s on the H100 (imports, EngineCore spawn, compile cache, CUDA graphs), so the lab
runs what vLLM's CLI would give one engine each (``bench throughput`` per dataset, ``bench latency`` per
batch size, a profiled run) in one ``LLM``. Throughput goes through vLLM's own benchmark code
(``vllm.benchmarks.throughput``: its argument parser, ``get_requests`` for the ShareGPT/random datasets
and ``_run_vllm_requests`` for the timed ``LLM.generate``; same on 0.26 and 0.32); latency repeats
``vllm/benchmarks/latency.py``'s loop (random prompt token ids < 10,000, ``ignore_eos``, ``n=1``,
temperature 1, top-p 1, ``perf_counter`` around ``LLM.generate``). SPEC:

    {"engine": {LLM kwargs}, "profiler": {ProfilerConfig fields} | null,
     "tasks": [{"kind": "throughput", "out", "bench_args": [`vllm bench throughput` dataset flags]},
               {"kind": "latency", "out", "batch_size", "input_len", "output_len", "warmup", "iters"},
               {"kind": "profile", "out", "batch_size", "input_len", "output_len"}]}

Each task writes its ``out`` JSON (``bench latency`` / ``bench throughput`` field names) when done."""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def _params(sp_cls, output_len: int):
    return sp_cls(n=1, temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=output_len)


def _prompts(batch: int, input_len: int, rng):
    from vllm.inputs import TokensPrompt
    return [TokensPrompt(prompt_token_ids=ids) for ids in rng.randint(10000, size=(batch, input_len)).tolist()]


def _generate(llm, prompts, sp) -> float:
    t = time.perf_counter()
    llm.generate(prompts, sampling_params=sp, use_tqdm=False)
    return time.perf_counter() - t


def latency(llm, sp_cls, t: dict, rng) -> dict:
    sp = _params(sp_cls, t["output_len"])
    prompts = _prompts(t["batch_size"], t["input_len"], rng)
    for _ in range(t["warmup"]):
        _generate(llm, prompts, sp)
    lat = np.array([_generate(llm, prompts, sp) for _ in range(t["iters"])])
    pct = [10, 25, 50, 75, 90, 99]
    return {"avg_latency": float(lat.mean()), "latencies": lat.tolist(),
            "percentiles": dict(zip(map(str, pct), np.percentile(lat, pct).tolist())),
            "batch_size": t["batch_size"], "input_len": t["input_len"], "output_len": t["output_len"]}


def throughput(llm, t: dict, model: str) -> dict:
    """``vllm bench throughput`` on an engine that is already up: vLLM's parser, dataset sampling and
    timed loop; tokens counted from the outputs as its ``main`` does."""
    import argparse
    import random

    from vllm.benchmarks import throughput as bt
    from vllm.outputs import RequestOutput
    from vllm.tokenizers import get_tokenizer
    from vllm.utils.argparse_utils import FlexibleArgumentParser
    parser = FlexibleArgumentParser()
    bt.add_cli_args(parser)
    args: argparse.Namespace = parser.parse_args(["--model", model, *t["bench_args"]])
    bt.validate_args(args)
    args.seed = 0 if args.seed is None else args.seed
    random.seed(args.seed)
    tok = get_tokenizer(args.tokenizer, tokenizer_mode=args.tokenizer_mode, trust_remote_code=args.trust_remote_code)
    requests = bt.get_requests(args, tok)
    elapsed, outs = bt._run_vllm_requests(llm, requests, args.n, args.disable_detokenize, do_profile=False,
                                          prequeue_requests=False, enable_lora=False)
    outs = [o for o in outs or [] if isinstance(o, RequestOutput)]
    prompt = sum(len(o.prompt_token_ids or []) for o in outs)
    output = sum(len(c.token_ids) for o in outs for c in o.outputs if c is not None and c.token_ids is not None)
    n = len(requests)
    return {"elapsed_time": elapsed, "num_requests": n, "total_num_tokens": prompt + output,
            "requests_per_second": n / elapsed, "tokens_per_second": (prompt + output) / elapsed,
            "prompt_tokens": prompt, "output_tokens": output, "output_tokens_per_second": output / elapsed,
            "bench_args": t["bench_args"], "vllm_bench": "vllm.benchmarks.throughput (get_requests, _run_vllm_requests)"}


def profile(llm, sp_cls, t: dict, rng, prof_dir: str) -> dict:
    """One warm-up generate, then the profiled one; the trace files it adds move to ``t["dir"]``."""
    sp = _params(sp_cls, t["output_len"])
    prompts = _prompts(t["batch_size"], t["input_len"], rng)
    _generate(llm, prompts, sp)
    before = set(os.listdir(prof_dir)) if os.path.isdir(prof_dir) else set()
    t0 = time.time_ns()
    llm.start_profile()
    elapsed = _generate(llm, prompts, sp)
    llm.stop_profile()
    t1 = time.time_ns()
    os.makedirs(t["dir"], exist_ok=True)
    deadline = time.time() + 120           # the trace is written by the worker; wait until it is there
    new = []
    while time.time() < deadline:
        new = sorted(set(os.listdir(prof_dir)) - before) if os.path.isdir(prof_dir) else []
        if any(".pt.trace.json" in f for f in new):
            break
        time.sleep(0.5)
    time.sleep(1.0)
    for f in new:
        os.replace(os.path.join(prof_dir, f), os.path.join(t["dir"], f))
    return {"elapsed_time": elapsed, "start_ns": t0, "end_ns": t1, "files": new, "dir": t["dir"],
            "batch_size": t["batch_size"], "input_len": t["input_len"], "output_len": t["output_len"]}


def main(argv: list[str] | None = None) -> int:
    spec = json.load(open((argv or sys.argv[1:])[0]))
    from vllm import LLM, SamplingParams
    kw = dict(spec["engine"])
    prof = spec.get("profiler")
    if prof:
        from vllm.config import ProfilerConfig
        kw["profiler_config"] = ProfilerConfig(**prof)
    llm = LLM(**kw)
    rng = np.random.RandomState(0)
    for t in spec["tasks"]:
        if t["kind"] == "latency":
            res = latency(llm, SamplingParams, t, rng)
        elif t["kind"] == "throughput":
            res = throughput(llm, t, kw["model"])
        elif t["kind"] == "profile":
            res = profile(llm, SamplingParams, t, rng, prof["torch_profiler_dir"])
        else:
            raise ValueError(f"engine_driver: unknown task kind {t['kind']!r} (latency, throughput, profile)")
        tmp = t["out"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, t["out"])
        print(f"[engine_driver] {t['kind']} -> {t['out']}", flush=True)
    llm.llm_engine.engine_core.shutdown()     # EngineCore + worker flush their spans and trace files
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
