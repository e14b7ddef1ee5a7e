"""The plugin's cost to vLLM's threads, as the hook runner measures it (one call in SAMPLE_EVERY per
hook on average is timed, at random gaps, each sample weighted by the calls it stands for; a bounds hook's calls are
timed inside its clock's timed calls instead, standing for as many: ``hooks/bounds.py``): CPU time of the calling
thread and wall time, whose difference is time the thread was not running while inside the plugin (waiting for the
GIL, or descheduled).

Each sample is corrected for the clock reads inside it (a thread-clock read is a system call: 0.56 us on
the H200 host, more with cold caches): the runner times an empty section right after the hook's and
subtracts it, so the correction is measured in the same cache state. What stays in a sample is the hook
and the runner around it (its checks, try blocks and calls): inside a real engine on the CI machine the
counter reads about 1.2x the sum of the hooks' own ``pre``/``post`` times, the runner's share included
(``benchmarks/hook_cost_engine.py --counter-only`` against its timed runs: with its timing wrapper inside the
counter's sections, as in its timed runs, the counter read ~1.8x; ``benchmarks/results/cpu/selfcost_vs_direct``).
"""
from __future__ import annotations

# The mean gap between timed calls (the runner draws each gap from 1 .. 2 * SAMPLE_EVERY - 1). Reading the thread's CPU clock costs
# 0.56 us on the H200 host and 2 us on the 2-core CI machine, so 1 call in 64 adds at most 0.06 us per call
# on average. It was 1 in 1024: an 8B run on the H200 then had ~30 timed calls, each counted 1024 times, and
# a single slow one moved the total by a third; 16x the samples cut the estimate's spread by 4x.
SAMPLE_EVERY = 64
hook_errors: dict[str, int] = {}
hook_cpu_ns = [0]
hook_wall_ns = [0]
faults = [0]                          # hook faults so far (all hooks): the export thread sends its counters at once


def register(names) -> None:
    """Known hook names: their error counters exist (at 0) from the start."""
    for n in names:
        hook_errors.setdefault(n, 0)


def hook_failed(name: str) -> None:
    hook_errors[name] = hook_errors.get(name, 0) + 1
    faults[0] += 1


# The hooks' C fronts (``hooks/_cfront.c``) of this process, each timing every call it takes itself (its ``spent``
# ticks and ``calls``), and their clock (``_cfront.clock``): the direct counter. A front stays listed once made (its
# counts are cumulative, like the counters').
fronts: list = []
_front_clock: list = [None]


def add_front(front, clock) -> None:
    fronts.append(front)
    _front_clock[0] = clock


def direct() -> tuple[int, int]:
    """(ns, calls) of the hooks' calls the C fronts took, every one timed: pre and post (a bounds hook's clock reads
    and append) in ticks of the CPU's time-stamp counter, a read's cost taken out, in ns at the rate between the
    counter's and the raw monotonic clock's readings at import and now; read on the export thread. Unlike the sampled
    counters above it times the typical call, the one that runs with no Python front and no thread-clock read (a
    system call) before it: on an H100 host the sampled counter read 1.8-3.3x what a stopped stack sampler read for
    the EngineCore's main thread (benchmarks/results/h100/issue19_df1e1b6). The calls the fronts pass on to the
    Python front (the sampled counters' timed ones, calls while marks are wanted, hooks without a C front) and the
    fronts of hooks marked ``direct=False`` (the shutdown flush) are not in it; nor are Python's collections that ran
    inside a front's timed section (``_cfront.collected`` counts them apart: ``_cfront.c``, ``gc_phase``)."""
    ticks = calls = 0
    for f in list(fronts):
        ticks += f.spent
        calls += f.calls
    if not ticks:
        return 0, calls
    return round(ticks * ns_per_tick()), calls


def direct_by_hook() -> dict[str, float]:
    """``direct``'s time split by hook: {hook name: seconds} of each hook whose C fronts took a timed call (a hook
    wrapped at two places, e.g. a method and its subclass's override, sums its fronts). Read on the export thread
    with the other counters, so the metrics say which hooks the plugin's own time goes to in every process."""
    ticks: dict[str, int] = {}
    for f in list(fronts):
        if f.calls:
            runner = getattr(f, "__w2ext_runner__", None)      # (set as the runner binds it, after it is listed)
            name = runner.spec.name if runner is not None else "(unnamed)"
            ticks[name] = ticks.get(name, 0) + f.spent
    rate = ns_per_tick() if ticks else 0.0
    return {name: t * rate / 1e9 for name, t in ticks.items()}


# The C extension's reader of the collections it times (``_cfront.collections``: (ticks, count)), registered by the
# hook runner as it puts ``_cfront.gc_phase`` in ``gc.callbacks``, right after its first counting front
_collections: list = [None]


def add_collections(reader) -> None:
    _collections[0] = reader


def collections() -> tuple[float, int]:
    """(seconds, count) of Python's cyclic collections in this process, on any thread, since the hooks' C extension
    began timing them (``add_collections``); (0.0, 0) where it does not. vLLM's own collections and those the plugin's
    records set off alike: a collection starts after ~700 more containers were made than freed, whoever made them
    (``benchmarks/results/cpu/export_wait``). In the fronts' ticks, converted as theirs are (``ns_per_tick``)."""
    reader = _collections[0]
    if reader is None:
        return 0.0, 0
    ticks, n = reader()
    return (ticks * ns_per_tick() / 1e9 if ticks else 0.0), n


def ns_per_tick() -> float:
    """The fronts' ticks in ns: the rate between the counter's and the raw monotonic clock's readings at import and
    now (0.0 before any C front was made, or while the two readings coincide)."""
    clock = _front_clock[0]
    if clock is None:
        return 0.0
    (t0, n0), (t1, n1) = clock()
    return (n1 - n0) / (t1 - t0) if t1 > t0 and n1 > n0 else 0.0


def add_sample(cpu_ns: int, wall_ns: int, weight: int) -> None:
    """One timed half (pre or post) standing for ``weight`` calls, its clock reads already taken out
    (counters never go down)."""
    hook_cpu_ns[0] += max(0, cpu_ns) * weight
    hook_wall_ns[0] += max(0, wall_ns) * weight
