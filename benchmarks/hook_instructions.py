"""Instructions per engine step that the plugin's hooks add, counted by valgrind (callgrind counts
instructions, not seconds: the same on a busy or an idle machine, so before/after compare exactly).

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null \
        python benchmarks/hook_instructions.py N B [plain] [in_process | engine_only]

runs N engine steps (batch of B requests) through ``hook_overhead.build`` - the stand-in step with the
plugin's real hooks - with a SchedulerOutput-shaped object, so neither vLLM nor torch is imported.
Instrumentation is switched on (``callgrind_control -i on``) only around the N steps, after 50 warm-up
steps, so the total is the steps' alone. ``plain``: the stand-ins without hooks; ``engine_only``: the EngineCore's
hooks alone (``in_process`` less it: the worker hooks' share); ``in_process``: no
executor hooks (the worker inside the EngineCore, the GPU's TP=1 layout); ``front``: the front end's offline
iteration (``hook_overhead.py --paths front``) instead of the engine step, B its outputs per iteration. ``VLLM_W2EXT_SAMPLE`` applies as
in vLLM (light steps). ``nogc``: Python's cyclic collector off from the warm-up on, so the count leaves out
the collections that the records the hooks keep (until the export thread takes them) set off on the stepping
thread; hooked with and without it is the collector's share (``benchmarks/hook_allocations.py`` counts those
records). ``export``: the N steps run uncounted, then one ``Pipeline.flush_once`` of their records is counted on
this thread: the export thread's work per step on vLLM's GIL (take, encode, write to the export process's pipe).
``evict``: each step after a scan of a buffer larger than the simulated last-level cache (see ``EVICT_BYTES``).
``benchmarks/hook_instructions.sh`` does that for this tree and an older commit, hooked and plain.
"""
import os
import subprocess
import sys
from types import SimpleNamespace as NS

os.environ.update(VLLM_W2EXT="1", VLLM_W2EXT_EXPORT_INTERVAL_MS="60000", VLLM_W2EXT_QUEUE_SIZE="10000000",
                  VLLM_W2EXT_NVTX="0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def scheduler_output(batch: int):
    ids = [f"req-{i}" for i in range(batch)]
    cached = NS(req_ids=ids, num_output_tokens=[4] * batch, num_computed_tokens=[20] * batch,
                resumed_req_ids=set(), resumed_from_preemption=[False] * batch, new_block_ids=[None] * batch)
    return NS(scheduled_new_reqs=[], scheduled_cached_reqs=cached, num_scheduled_tokens={r: 1 for r in ids},
              total_num_scheduled_tokens=batch, scheduled_spec_decode_tokens={}, preempted_req_ids=set(),
              finished_req_ids=set(), scheduled_encoder_inputs={})


def main() -> None:
    n, batch = int(sys.argv[1]), int(sys.argv[2])
    flags = sys.argv[3:]
    hooked = "plain" not in flags
    import hook_overhead
    if "front" in flags:             # the front end's offline iteration instead, B outputs per iteration
        step = hook_overhead.build(hooked, batch, "front")
    else:
        path = next((f for f in ("in_process", "engine_only") if f in flags), "multiproc")
        step = hook_overhead.build(hooked, scheduler_output(batch), path)
    if "nogc" in flags:
        import gc
        gc.disable()
    for _ in range(50):
        step()
    if "export" in flags:            # count the export thread's share instead: one flush of the N steps' records
        from vllm_w2ext.telemetry import pipeline
        p = pipeline.get()
        p.flush_once()
        for _ in range(n):
            step()
        instrument("on")
        sent = p.flush_once()
        instrument("off")
        print(f"records flushed: {sent}", file=sys.stderr)
        os._exit(0)
    instrument("on")
    if "evict" in flags:             # each step after a scan of EVICT_BYTES (counted too, the same in plain runs)
        scan = bytes(EVICT_BYTES).find
        for _ in range(n):
            scan(b"\x01")
            step()
    else:
        for _ in range(n):
            step()
    instrument("off")
    os._exit(0)          # no atexit flush: only the steps are counted


# ``evict``: what vLLM's own work between two steps does to the hooks' cache lines, modelled as a scan of a buffer
# twice the size of the last-level cache that callgrind simulates (``--cache-sim=yes --LL=2097152,16,64``, as
# ``hook_functions.sh`` runs it with EVENT=DLmr): every step then starts with the hooks' data out of the cache, and the simulated misses
# the hooks add per step count the cache lines they touch (on the GPU host, each such miss is a trip to DRAM)
EVICT_BYTES = 4 << 20


def instrument(state: str) -> None:
    """Switch callgrind's counting ``on`` or ``off`` for this process."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


if __name__ == "__main__":
    main()
