"""Diagnostic for the GPU machine: log every garbage collection of every Python process (the fourth H200 session,
``benchmarks/results/h200/README.md``). Put this folder first on PYTHONPATH; each process then appends
``<wall time> <generation> <duration s> <collected>`` lines to DIAG_GC_LOG/gc-<pid>.txt.
DIAG_GC_THRESHOLD=a,b,c sets ``gc.set_threshold(a, b, c)`` in every process instead."""
import gc
import os

if os.environ.get("DIAG_GC_THRESHOLD"):
    gc.set_threshold(*[int(x) for x in os.environ["DIAG_GC_THRESHOLD"].split(",")])
if os.environ.get("DIAG_GC_LOG"):
    import time
    _t = [0.0]
    _f = [None]

    def _cb(phase, info):
        if phase == "start":
            _t[0] = time.perf_counter()
            return
        d = time.perf_counter() - _t[0]
        if _f[0] is None:
            _f[0] = open(os.path.join(os.environ["DIAG_GC_LOG"], f"gc-{os.getpid()}.txt"), "a", buffering=1)
        _f[0].write("%.6f %d %.6f %d\n" % (time.time(), info["generation"], d, info.get("collected", 0)))
    gc.callbacks.append(_cb)
