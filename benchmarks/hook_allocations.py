"""Objects the plugin's hooks leave alive per engine step that Python's cyclic collector tracks.

    python benchmarks/hook_allocations.py [BATCH ...] > out.json

Runs 1,000 steps of ``hook_overhead.build``'s stand-in step (the plugin's real hooks, neither vLLM nor torch
imported) with the collector off and reads its generation-0 count before and after: the count goes up by one for
each container (list, tuple, non-atomic dict) created and down by one for each freed, so what is left is the
tracked objects still alive, here the records waiting in the recorder's buffer for the export thread, which in
the harness never takes them. Every 700 (the default threshold) set off a collection on whichever thread
allocates next, vLLM's most of the time; ``hook_instructions.py ... nogc`` gives the instructions those cost.
``VLLM_W2EXT_SAMPLE`` applies as in vLLM. Pure counting: the same on any machine.
"""
import gc
import json
import os
import sys

os.environ.update(VLLM_W2EXT="1", VLLM_W2EXT_EXPORT_INTERVAL_MS="60000", VLLM_W2EXT_QUEUE_SIZE="10000000",
                  VLLM_W2EXT_NVTX="0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
N = 1000


def per_step(step) -> float:
    for _ in range(50):
        step()
    gc.collect()
    gc.disable()
    try:
        c0 = gc.get_count()[0]
        for _ in range(N):
            step()
        return (gc.get_count()[0] - c0) / N
    finally:
        gc.enable()


def main() -> None:
    import hook_instructions
    import hook_overhead
    out = {"sample": int(os.environ.get("VLLM_W2EXT_SAMPLE", "1")), "gc_threshold": gc.get_threshold(),
           "python": sys.version.split()[0], "tracked_alive_per_step": {}}
    for batch in [int(b) for b in sys.argv[1:]] or [1]:
        for path in ("in_process", "multiproc"):
            for hooked in (True, False):
                step = hook_overhead.build(hooked, hook_instructions.scheduler_output(batch), path)
                key = f"{'hooked' if hooked else 'plain'}_batch{batch}_{path}"
                out["tracked_alive_per_step"][key] = round(per_step(step), 3)
    print(json.dumps(out, indent=1))
    os._exit(0)          # the export thread is not waited for


if __name__ == "__main__":
    main()
