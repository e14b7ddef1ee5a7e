"""Planted causes on a real engine, for ``vllm-w2ext explain`` to find (issue #12, the H200 runs).

    python benchmarks/gpu/explain_planted.py CASE --model FOLDER --out DIR [--layers N] [--cpu]

CASE:
- ``schedule``: synchronous stepping (async scheduling off) and ``Scheduler.schedule`` slowed by a
  known sleep per call (tests/drivers/slow_scheduler.py through vLLM's ``scheduler_cls``): explain
  must name ``schedule`` first, its share near the planted sleep x scheduled steps / wall time.
- ``prepare``: synchronous stepping and the worker's input preparation slowed by a known sleep per call
  (tests/drivers/slow_prepare.py through vLLM's ``worker_cls``: the V2 runner's ``prepare_inputs``, inside
  ``Worker.execute_model`` before the forward's launch): explain must name ``prepare_inputs`` first, its share
  near the planted sleep x model executions / wall time.
- ``prefill``: decode requests running, then one long prompt added every few steps (through
  ``LLMEngine.add_request`` + ``step``): explain must name decode slowed by co-batched prefill.
- ``default``: batch-1 decode, no plant (what a healthy run looks like).

The plugin runs with ``VLLM_W2EXT_TRACE_DIR=DIR/traces``; DIR/run.json says what was planted. The
planting lives in this script and the test driver, never in the product.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def engine(args, **extra):
    from vllm import EngineArgs, LLMEngine
    kw = dict(model=args.model, load_format="dummy", max_model_len=args.max_model_len, seed=0,
              enable_prefix_caching=False, **extra)
    if args.layers:
        kw["hf_overrides"] = {"num_hidden_layers": args.layers}
    if args.cpu:
        kw.update(dtype="float32", enforce_eager=True)
    return LLMEngine.from_engine_args(EngineArgs(**kw))


def prompt(n: int, seed: int):
    from vllm.inputs import TokensPrompt
    return TokensPrompt(prompt_token_ids=[(seed * 7919 + 31 * i) % 9000 + 10 for i in range(n)])


def drain(eng, done: dict) -> None:
    """One engine step; finished requests' output lengths into ``done``."""
    for out in eng.step():
        if out.finished:
            done[out.request_id] = len(out.outputs[0].token_ids)


def run(eng, requests: list, done: dict) -> None:
    """Add ``(id, prompt, params)`` requests and step until every request is finished."""
    for rid, p, sp in requests:
        eng.add_request(rid, p, sp)
    while eng.has_unfinished_requests():
        drain(eng, done)


def params(n: int):
    from vllm import SamplingParams
    return SamplingParams(max_tokens=n, ignore_eos=True, temperature=1.0)


def run_slowed(args, planted: str, sleep_key: str, **engine_arg) -> dict:
    """Synchronous stepping (async scheduling off) with one of vLLM's classes replaced through its engine argument
    by a test class of tests/drivers that sleeps ``--sleep-s`` per call while a flag file exists (slow_flag.py;
    the folder is on the path of this process and of the ones vLLM starts); the sleep per call goes in the result
    under ``sleep_key``. The GPU twin of tests/drivers/planted.py's ``generate_slowed``."""
    flag = Path(args.out) / "slow.flag"
    flag.touch()
    drivers = str(ROOT / "tests" / "drivers")
    os.environ.update(W2EXT_TEST_SLOW_FLAG=str(flag), W2EXT_TEST_SLOW_S=str(args.sleep_s),
                      PYTHONPATH=os.pathsep.join(filter(None, (drivers, os.environ.get("PYTHONPATH")))))
    sys.path.insert(0, drivers)
    eng = engine(args, async_scheduling=False, **engine_arg)
    done: dict = {}
    t0 = time.time()
    run(eng, [(f"r{i}", prompt(args.prompt_len, i), params(args.output_len)) for i in range(args.requests)], done)
    return {"planted": planted, sleep_key: args.sleep_s, "wall_s": time.time() - t0, "requests": len(done)}


def case_schedule(args) -> dict:
    return run_slowed(args, "schedule", "sleep_s_per_schedule", scheduler_cls="slow_scheduler.SlowScheduler")


def case_prepare(args) -> dict:
    worker = "SlowPrepareWorker" if args.cpu else "SlowPrepareGPUWorker"
    return run_slowed(args, "prepare", "sleep_s_per_call", worker_cls=f"slow_prepare.{worker}")


def case_prefill(args) -> dict:
    eng = engine(args)
    done: dict = {}
    t0 = time.time()
    for i in range(args.requests):
        eng.add_request(f"d{i}", prompt(32, i), params(args.output_len))
    steps, long_added = 0, 0
    while eng.has_unfinished_requests():
        if steps >= 10 and steps % args.every == 0 and long_added < args.long_prompts:
            eng.add_request(f"p{long_added}", prompt(args.long_len, 1000 + long_added), params(4))
            long_added += 1
        drain(eng, done)
        steps += 1
    return {"planted": "prefill", "long_prompts": long_added, "long_len": args.long_len, "every_steps": args.every,
            "decoding_requests": args.requests, "wall_s": time.time() - t0, "requests": len(done)}


def case_default(args) -> dict:
    eng = engine(args)
    done: dict = {}
    t0 = time.time()
    for rep in range(args.reps):
        run(eng, [(f"r{rep}", prompt(args.prompt_len, rep), params(args.output_len))], done)
    return {"planted": None, "batch": 1, "reps": args.reps, "wall_s": time.time() - t0, "requests": len(done)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case", choices=("schedule", "prepare", "prefill", "default"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=0)
    ap.add_argument("--cpu", action="store_true", help="the CPU build (fp32, eager)")
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--sleep-s", type=float, default=0.005)
    ap.add_argument("--long-len", type=int, default=3000)
    ap.add_argument("--long-prompts", type=int, default=8)
    ap.add_argument("--every", type=int, default=12)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    out = Path(a.out)
    (out / "traces").mkdir(parents=True, exist_ok=True)
    os.environ.update(VLLM_W2EXT="1", VLLM_W2EXT_TRACE_DIR=str(out / "traces"))
    res = {"schedule": case_schedule, "prepare": case_prepare, "prefill": case_prefill, "default": case_default}[a.case](a)
    res.update(case=a.case, model=Path(a.model).name, layers=a.layers or None)
    (out / "run.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
