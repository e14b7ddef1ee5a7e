"""The export pipe's encoding of what a REAL engine records: ``marshal`` against the C encoding (``_wire.pack``).

    python benchmarks/wire_pack.py MODEL_FOLDER [--cpu] [--batch 1] [--max-tokens 64] [--out FILE]

Every process's export thread encodes the records the hooks leave (``wire.encode_frame``) holding its process's GIL,
so its encoding is part of the plugin's cost inside vLLM's processes (issue #19's target 1). This runs a fully traced
engine (front end, EngineCore and worker in one process, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``; on the CPU build the
tiny model) and keeps a copy of each ``ranges`` frame's payload its export thread encodes (``copy.deepcopy``: the same
str and int objects, new containers). One warm-up call, then ``--rounds`` generate calls; at a batch
above 1 twice the batch of requests with ``--max-tokens`` spread 0.5-1.5x, at most the batch at once
(``max_num_seqs``), so requests finish and join all through. Afterwards, with the engine idle, both encodings write
every kept payload, alternated in random order ``--repeats`` times (each repeat the best of 3); per engine step =
the time of all the frames / the ``engine.step`` records in them. Also reported: bytes per step, and the export
process's side (``marshal.loads`` against ``_wire.unpack``). The frame header (4 bytes) is the same either way and
left out."""
from __future__ import annotations

import argparse
import copy
import json
import marshal
import os
import platform
import random
import statistics
import sys
import tempfile
import time


def quartiles(xs: list[float]) -> dict:
    q = statistics.quantiles(xs, n=4)
    return {"median": round(statistics.median(xs), 3), "q1": round(q[0], 3), "q3": round(q[2], 3)}


def time_encodings(frames: list, repeats: int) -> dict:
    from vllm_w2ext.telemetry import _wire
    ways = {"marshal": marshal.dumps, "pack": _wire.pack}
    msgs = [("ranges", f) for f in frames]
    for msg in msgs:                               # the same values back either way (what the export process reads)
        if _wire.unpack(_wire.pack(msg)) != marshal.loads(marshal.dumps(msg)):
            raise SystemExit("wire_pack: the two encodings read back differently")
    got: dict[str, list[float]] = {w: [] for w in ways}
    for _ in range(repeats):
        for w in random.sample(list(ways), len(ways)):
            fn = ways[w]
            best = None
            for _ in range(3):
                t0 = time.perf_counter_ns()
                for m in msgs:
                    fn(m)
                dt = time.perf_counter_ns() - t0
                best = dt if best is None else min(best, dt)
            got[w].append(best)
    packed = [_wire.pack(m) for m in msgs]
    marshalled = [marshal.dumps(m) for m in msgs]
    reads: dict[str, list[float]] = {"marshal.loads": [], "unpack": []}
    for _ in range(max(5, repeats // 4)):
        for w in random.sample(list(reads), 2):
            fn, data = (marshal.loads, marshalled) if w == "marshal.loads" else (_wire.unpack, packed)
            t0 = time.perf_counter_ns()
            for d in data:
                fn(d)
            reads[w].append(time.perf_counter_ns() - t0)
    return {"encode_ns": got, "read_ns": reads, "bytes": {"marshal": sum(map(len, marshalled)),
                                                         "pack": sum(map(len, packed))}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--cpu", action="store_true", help="the CPU build: float32, eager, 1 GiB KV cache")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=41)
    ap.add_argument("--out", default="benchmarks/results/cpu/wire_pack/batch{batch}.json")
    a = ap.parse_args()
    os.environ.update(VLLM_W2EXT="1", VLLM_ENABLE_V1_MULTIPROCESSING="0",
                      VLLM_W2EXT_TRACE_DIR=tempfile.mkdtemp(prefix="w2ext-wire-pack-"))
    if a.cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm_w2ext.telemetry import export_process, wire
    if wire.pack is None:
        raise SystemExit("wire_pack: the C extension vllm_w2ext.telemetry._wire is not built (pip install -e .)")
    kept: list = []
    keeping = [False]
    encode = export_process.encode_frame

    def keep(kind, payload):                       # on the export thread, in the frame's order
        if keeping[0] and kind == wire.Frame.RANGES:
            kept.append(copy.deepcopy(payload))
        return encode(kind, payload)
    export_process.encode_frame = keep
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from vllm_w2ext.telemetry import pipeline
    bs = a.batch
    kw = {"model": a.model, "max_model_len": 2048, "enable_prefix_caching": False,
          "distributed_executor_backend": "uni", "max_num_seqs": bs}
    if a.cpu:
        kw.update(dtype="float32", enforce_eager=True)
    else:
        kw.update(load_format="dummy")
    llm = LLM(**kw)
    n = 1 if bs == 1 else 2 * bs
    rng = random.Random(bs)
    sps = [SamplingParams(max_tokens=a.max_tokens if bs == 1 else rng.randint(a.max_tokens // 2, a.max_tokens * 3 // 2),
                          ignore_eos=True, temperature=1.0) for _ in range(n)]
    prompts = [TokensPrompt(prompt_token_ids=[10 + (i * 31 + k) % 9000 for i in range(a.prompt_len)]) for k in range(n)]
    llm.generate(prompts, sps, use_tqdm=False)
    pipeline.flush_if_started(10)
    keeping[0] = True
    for _ in range(a.rounds):
        llm.generate(prompts, sps, use_tqdm=False)
    pipeline.flush_if_started(10)
    keeping[0] = False
    frames = list(kept)
    steps = sum(1 for f in frames for r in f if r and r[0] == "engine.step")
    if not steps:
        raise SystemExit("wire_pack: no engine.step record was kept")
    t = time_encodings(frames, a.repeats)
    per = {w: quartiles([ns / steps / 1e3 for ns in v]) for w, v in t["encode_ns"].items()}
    row = {"batch": bs, "requests_per_round": n, "rounds": a.rounds, "frames": len(frames),
           "records": sum(len(f) for f in frames), "engine_steps": steps, "encode_us_per_step": per,
           "bytes_per_step": {w: round(b / steps) for w, b in t["bytes"].items()},
           "read_us_per_step": {w: quartiles([ns / steps / 1e3 for ns in v]) for w, v in t["read_ns"].items()}}
    print(f"batch {bs}: {steps} steps, {row['records']} records in {len(frames)} frames; encode µs per step "
          f"marshal {per['marshal']['median']} ({per['marshal']['q1']}-{per['marshal']['q3']}), pack "
          f"{per['pack']['median']} ({per['pack']['q1']}-{per['pack']['q3']}); bytes per step "
          f"{row['bytes_per_step']}; read µs per step {row['read_us_per_step']}", flush=True)
    out = {"what": "the export pipe's encoding of a real engine's records, marshal against _wire.pack",
           "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "python": platform.python_version()},
           "vllm": __import__("vllm").__version__, "model": os.path.basename(a.model.rstrip("/")),
           "max_tokens": a.max_tokens, "repeats": a.repeats, **row}
    path = a.out.format(batch=bs)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
