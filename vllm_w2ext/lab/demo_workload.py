"""The demo's workload, on one vLLM engine: ``python -m vllm_w2ext.lab.demo_workload SPEC.json``.

Three phases, each of which shows something else in the panels and in ``vllm-w2ext explain``:

1. ``burst``: ``vllm bench throughput`` (vLLM's own benchmark code, as the lab runs it:
   ``engine_driver.throughput``) on random prompts: the batch fills up, requests queue for capacity.
2. ``trickle``: requests arriving one by one (Poisson, ``trickle_rate`` per second): small batches and
   the device idle between them for want of work (``no_work``).
3. ``long prompts``: ``decoders`` requests decoding while a long prompt arrives every
   ``long_every_s``: decode steps that carry a prefill take longer (prefill interference).

Phases 2 and 3 drive ``LLMEngine.add_request`` / ``step`` themselves (the loop ``LLM.generate`` runs),
so requests arrive while others run. SPEC: {"model", "out": folder, "engine": {LLM kwargs},
"burst_prompts", "input_len", "output_len", "trickle_s", "trickle_rate", "long_s", "decoders",
"long_len", "long_every_s"}. Writes ``out/throughput.json`` (phase 1, ``bench throughput``'s fields)
and ``out/phases.json`` (per phase: unix start and end, requests finished, output tokens)."""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def _loop(engine, tag: str, until: float, arrive, stats: dict) -> None:
    """Step the engine; ``arrive(now, active)`` returns the new (kind, prompt ids, params) to add now
    (request ids ``<tag>-<kind>-<n>``). Stops adding at the monotonic time ``until`` and returns once
    every request has finished."""
    from vllm.inputs import TokensPrompt
    n = 0
    active: set[str] = set()
    while True:
        now = time.monotonic()
        if now < until:
            for kind, ids, sp in arrive(now, active):
                rid = f"{tag}-{kind}-{n}"
                n += 1
                engine.add_request(rid, TokensPrompt(prompt_token_ids=ids), sp)
                active.add(rid)
        elif not active:
            return
        if active:
            for out in engine.step():
                if out.finished:
                    active.discard(out.request_id)
                    stats["requests"] += 1
                    stats["output_tokens"] += sum(len(c.token_ids) for c in out.outputs)
        else:
            time.sleep(0.002)


def trickle(engine, spec: dict, rng, params) -> dict:
    """Poisson arrivals at ``trickle_rate`` per second for ``trickle_s``."""
    stats = {"requests": 0, "output_tokens": 0}
    state = {"next": time.monotonic()}

    def arrive(now, active):
        out = []
        while state["next"] <= now:
            out.append(("req", rng.randint(10000, size=spec["input_len"]).tolist(), params(spec["output_len"])))
            state["next"] += rng.exponential(1.0 / spec["trickle_rate"])
        return out
    _loop(engine, "trickle", time.monotonic() + spec["trickle_s"], arrive, stats)
    return stats


def long_prompts(engine, spec: dict, rng, params) -> dict:
    """``decoders`` requests kept decoding (topped up as they finish), and a ``long_len``-token prompt
    every ``long_every_s``, for ``long_s``."""
    stats = {"requests": 0, "output_tokens": 0}
    state = {"next_long": time.monotonic() + spec["long_every_s"]}

    def arrive(now, active):
        decoding = sum(1 for r in active if "-dec-" in r)
        out = [("dec", rng.randint(10000, size=spec["input_len"]).tolist(), params(4 * spec["output_len"]))
               for _ in range(max(0, spec["decoders"] - decoding))]
        if now >= state["next_long"]:
            out.append(("prompt", rng.randint(10000, size=spec["long_len"]).tolist(), params(4)))
            state["next_long"] = now + spec["long_every_s"]
        return out
    _loop(engine, "long", time.monotonic() + spec["long_s"], arrive, stats)
    return stats


def main(argv: list[str] | None = None) -> int:
    spec = json.load(open((argv or sys.argv[1:])[0]))
    from vllm import LLM, SamplingParams

    from vllm_w2ext.lab.engine_driver import throughput

    def params(n):
        return SamplingParams(n=1, temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=n)
    out = spec["out"]
    llm = LLM(model=spec["model"], **spec["engine"])
    rng = np.random.RandomState(0)
    phases = []
    t = time.time()
    res = throughput(llm, {"bench_args": ["--dataset-name", "random", "--random-input-len", str(spec["input_len"]),
                                          "--random-output-len", str(spec["output_len"]),
                                          "--num-prompts", str(spec["burst_prompts"])]}, spec["model"])
    with open(os.path.join(out, "throughput.json"), "w") as f:
        json.dump(res, f, indent=1)
    phases.append({"phase": "burst", "start": t, "end": time.time(), "requests": res["num_requests"],
                   "output_tokens": res["output_tokens"]})
    print(f"[demo] burst: {res['num_requests']} requests, {res['tokens_per_second']:.0f} tok/s", flush=True)
    engine = llm.llm_engine
    for name, fn in (("trickle", trickle), ("long prompts", long_prompts)):
        time.sleep(0.5)                    # a quiet gap between phases, as the panels show it
        t = time.time()
        stats = fn(engine, spec, rng, params)
        phases.append({"phase": name, "start": t, "end": time.time(), **stats})
        print(f"[demo] {name}: {stats['requests']} requests in {time.time() - t:.1f} s", flush=True)
    with open(os.path.join(out, "phases.json"), "w") as f:
        json.dump(phases, f, indent=1)
    llm.llm_engine.engine_core.shutdown()     # EngineCore + worker flush their spans and trace files
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
