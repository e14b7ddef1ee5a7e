"""One offline engine (``LLM``: front end here, EngineCore in a process of its own, as users run it) generating BATCH
requests (default 1; above 1 the engine runs up to 512 at once) of TOKENS tokens ROUNDS times (default 3), for
``cost_budget_runs.sh`` (issue #19, ``VLLM_W2EXT_COST_BUDGET``): the plugin on as the environment says;
prints the wall time. Model folder in $M (the Llama-3.1-8B-shaped one, dummy weights); ``ENGINE_JSON``: more
``LLM`` arguments (the CPU smoke check: ``{"dtype": "float32", "enforce_eager": true}``).

With ``VLLM_W2EXT_METRICS_PORT`` set, the plugin's metrics endpoint is read after each round (once its snapshots
have caught up): the EngineCore's and the front end's hook time and export-thread CPU, and the engine steps, so each
round's cost per executed step is what that round alone cost (the later rounds: the N the budget settled on). One
JSON line per round, then the summary line.

CHURN 1 (with BATCH above 1): each round submits twice BATCH requests whose lengths spread evenly over TOKENS/2 ..
3*TOKENS/2, so the engine runs at its cap of BATCH with requests finishing and new ones prefilled beside the decoding
batch all through (issue #19's "500 requests per step with churn"), then drains.

    python3 benchmarks/gpu/cost_budget_engine.py NAME LAYERS TOKENS [BATCH [ROUNDS [CHURN]]]   # LAYERS 0: the model's own
"""
import json, os, sys, time, urllib.request
from pathlib import Path

from vllm import LLM, SamplingParams

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead_run import self_cost  # noqa: E402  (the overhead runs' reading of the same series)
from overhead_summary import _steps, reading_delta  # noqa: E402  (and their difference of two readings)

if os.environ.get("W2EXT_ARM"):     # budget_settled.sh's arm: its package before the tree's, which overhead_run put
    sys.path.insert(0, os.path.abspath(os.environ["W2EXT_ARM"]))     # first (the summary line says which one ran)

name, layers, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
batch = int(sys.argv[4]) if len(sys.argv) > 4 else 1
rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
churn = batch > 1 and len(sys.argv) > 6 and sys.argv[6] == "1"
kw = {"load_format": "dummy", "max_model_len": 4096, "enable_prefix_caching": False, "seed": 0}
if layers:
    kw["hf_overrides"] = {"num_hidden_layers": layers}
if batch > 1:
    kw["max_num_seqs"] = min(batch, 512) if churn else 512
kw.update(json.loads(os.environ.get("ENGINE_JSON", "{}")))
port = os.environ.get("VLLM_W2EXT_METRICS_PORT")
snapshot_s = 2.5 * int(os.environ.get("VLLM_W2EXT_METRICS_INTERVAL_MS", "1000")) / 1000


def reading() -> dict | None:
    """The self-cost series (per role) and the executed engine steps, once two reads a snapshot apart agree on the
    step count (every process has written its snapshot since the round ended)."""
    if not port:
        return None
    last = None
    for _ in range(10):
        time.sleep(snapshot_s)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            now = self_cost(r.read().decode())
        if last is not None and now["engine_steps"] == last["engine_steps"]:
            return now
        last = now
    return last


def per_step(a: dict | None, b: dict) -> dict:
    """µs per executed engine step between two readings (``a`` None: since the start), by series and role; the
    steps; the N at the end."""
    seg = b if a is None else reading_delta(b, a)
    steps = _steps(seg)
    out = {"steps": steps, "sample_every": b.get("sample_every")}
    for series, roles in seg["series"].items():
        for role, v in roles.items():
            out[f"{series.removeprefix('vllm_w2ext_')}:{role}"] = round(1e6 * v / steps, 2) if steps else None
    return out


def sampling(n: int) -> list[SamplingParams] | SamplingParams:
    """One setting for every request; with CHURN, lengths spread evenly over TOKENS/2 .. 3*TOKENS/2 (their mean
    TOKENS), in an order that mixes long and short ones."""
    if not churn:
        return SamplingParams(max_tokens=tokens, ignore_eos=True, temperature=0)
    lo, span = tokens // 2, tokens
    return [SamplingParams(max_tokens=lo + (i * 7919) % (span + 1), ignore_eos=True, temperature=0)
            for i in range(n)]


def main() -> None:
    llm = LLM(os.environ["M"], **kw)
    n = 2 * batch if churn else batch
    sp = sampling(n)
    prev, walls = reading(), []
    for k in range(rounds):
        t1 = time.time()
        llm.generate([f"{i} " + "hello " * 64 for i in range(n)], sp, use_tqdm=False)
        walls.append(round(time.time() - t1, 3))
        now = reading()
        if now is not None:
            print(json.dumps({"name": name, "round": k + 1, "wall_s": walls[-1], **per_step(prev, now)}), flush=True)
            prev = now
    import vllm_w2ext                # which package the engine ran (an A/B arm's folder by PYTHONPATH, or the tree)
    package = Path(vllm_w2ext.__file__).resolve().parent.parent
    print(json.dumps({"name": name, "package": os.path.relpath(package, Path(__file__).resolve().parents[2]),
                      "layers": layers, "tokens": tokens, "batch": batch, "churn": churn, "rounds": rounds,
                      "round_wall_s": walls, "wall_s": round(sum(walls), 3),
                      "cost_budget": os.environ.get("VLLM_W2EXT_COST_BUDGET", "(the plugin's default)")}), flush=True)


if __name__ == "__main__":      # vLLM may spawn the EngineCore (the CPU build does): it imports this file
    main()
