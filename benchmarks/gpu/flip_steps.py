"""The plugin switched every few engine steps inside ONE running generate, and its cost read from the steps
(issue #19, target 2). Used by ``toggle_ab.py`` (workloads of kind ``flip``); pure apart from ``Flipper``,
which only calls what it is handed.

Why: on the H200 host vLLM's own CPU work drifts by 20-50 % over seconds (``results/h200/step_toggle``), so
blocks of whole latency iterations (0.6 s and more, with their admissions and prefills) move as a whole and
no statistic of their steps resolves 1 %. Here the state changes every ``every`` decode steps (about a tenth
of a second) in the middle of a long decode, and the cost is the alternating part of the blocks' levels, read
through five blocks at a time (``window_costs``): a drift that is a polynomial up to a cubic over those five
cancels exactly, a slower one nearly so, and windows hit by one of the host's slow spells are trimmed. The steps
are the front end's ``LLMEngine.step()`` returns (the same timing in both states; the "front" clock), the switch is
``control.set_everywhere`` (the front end, the EngineCore by a utility call, the workers), made between two
steps while the EngineCore keeps decoding; the first ``settle`` steps of each block are left out (the round
trip's catch-up), and so is the first block (admission and prefill).

A/A: the same generate with the same switch calls, every one of them to "on": the labels alternate, the state
does not. Its estimate is the method's own error on this host, the stated stock spread of this A/B.

The "engine" clock: the same estimate from the times the EngineCore made each step's outputs
(``EngineCoreOutputs.timestamp``, vLLM's own ``time.monotonic()`` in the EngineCore process, read as each output
reaches ``LLMEngine.step()``), so the EngineCore's pace is read apart from the front end's loop. With only the
front end switched (``toggle_ab.py --flip-scope front``): a cost on the engine clock is the front end slowing the
EngineCore (host load: the EngineCore never waits for the front end within a decode); a cost on the front clock
alone is the front end's own loop. ``front_lag_us`` (each step's return minus its output's timestamp, same
monotonic clock) says whether the front end keeps up: a lag that grows through a generate means its loop, not
the EngineCore, sets the pace. Block bounds are the front end's step counts on both clocks: an EngineCore ahead by
more than ``SETTLE`` steps would blur its blocks (the lag says by how much).

What a block of "on" does not hold: records of it that the export thread sends after the switch. Before
``Pipeline.set_running`` (the thirty-first session) they went out at the next export interval, inside the paused
block, so that part of the export thread's work was read as the paused state's (the estimate low by it; about
I / 2L of a block's records with blocks of length L and an export interval I < L, hence
``toggle_ab.py --export-interval-ms`` well under the block), and a paused export thread still woke every interval,
a fixed cost per wake (``results/cpu/export_interval``) in both states and so in neither estimate. Since, a pause
sends what is left at once, during the paused block's first ``settle`` steps (left out, not read as paused), and
the paused thread sleeps until resumed. The export thread's CPU per step (``hook_cost_engine.py``: 13-15 µs fully
traced at batch 1 on the H200 host) bounds what either moved.

Tails: a block's level is its steps' median, which a cost landing on a few steps hardly moves. The export thread
wakes once per export interval (200 ms by default) and then holds the GIL for its whole batch (~1 ms on a GPU host,
fully traced, less the yields between chunks): where vLLM's thread wants the GIL meanwhile, one step in ~100 runs
that much longer, and the estimate above reads none of it. ``block_tails`` reads it apart: each block's excess
over its median (the steps' time above it; steps over ``TAIL_CAP`` medians left out as the host's), per step, on
blocks against off blocks (``summarize``'s ``tail_us``: their means over generates, and each generate's on less
off). A cost's mean is its median's plus the excess, so ``tail_us.diff`` over the off blocks' step adds to the
estimate's cost. Its noise is the host's long steps, which come in both states: read it between generates.
"""
from __future__ import annotations

import math
import random
import statistics
import time

SETTLE = 8           # steps left out after each switch
ORDER = 4            # window_costs: drifts up to a cubic over 5 blocks cancel
CHUNK = 4            # consecutive windows resampled together (neighbouring windows share blocks)
TRIM = 4.0           # trimmed_mean: robust deviations kept
BOOTSTRAP = 2000
TAIL_CAP = 3.0       # block_tails: steps longer than this many block medians are the host's, left out


class Flipper:
    """Times the front end's ``LLMEngine.step()`` calls (set on the engine INSTANCE: vLLM's offline loop calls
    ``self.llm_engine.step()``; ``begin``/``end`` around a generate give its step intervals) and, while ``every`` >
    0, calls ``switch(on)`` after every ``every``-th step of the current generate: ``on`` alternates for a real
    flip, and is always True for an A/A one. Each switch's result (the hook counts of every process) is kept with
    the step count it came after."""

    def __init__(self, engine, switch) -> None:
        self.returns: list[int] = []
        self.made: list[float] = []           # EngineCoreOutputs.timestamp of each output taken (monotonic s)
        self.switches: list[dict] = []
        self.every = 0
        self.real = True
        self.on = True
        step, now, add = engine.step, time.monotonic_ns, self.returns.append
        core = getattr(engine, "engine_core", None)
        get_output = getattr(core, "get_output", None)
        if get_output is not None:             # vLLM's offline loop: one get_output per LLMEngine.step
            made = self.made.append

            def timed_get_output(*args, **kwargs):
                outputs = get_output(*args, **kwargs)
                made(getattr(outputs, "timestamp", 0.0))
                return outputs

            core.get_output = timed_get_output

        def timed_step():
            out = step()
            add(now())
            n = len(self.returns)
            if self.every and n % self.every == 0:
                self.on = not self.on
                t = now()
                counts = switch(self.on if self.real else True)
                self.switches.append({"after": n, "on": self.on, "ms": (now() - t) / 1e6, "counts": counts})
            return out

        engine.step = timed_step

    def begin(self, every: int, real: bool, on: bool) -> int:
        """A new generate: switch every ``every`` steps (0: never), starting in ``on``; its start (ns)."""
        self.returns.clear()
        self.made.clear()
        self.switches = []
        self.every, self.real, self.on = every, real, on
        return time.monotonic_ns()

    def end(self, t0: int) -> dict:
        """The generate begun at ``t0``: its step intervals (µs) on the front clock and, where every step's output
        carried its timestamp, on the engine clock with the front end's lag behind it; flipping stops."""
        self.every = 0
        out = {"steps_us": step_intervals_us(t0, self.returns), "switches": self.switches}
        made = [round(t * 1e9) for t in self.made]
        if made and len(made) == len(self.returns) and all(made):
            out["engine_steps_us"] = step_intervals_us(t0, made)
            out["front_lag_us"] = [round((r - m) / 1000) for r, m in zip(self.returns, made)]
        return out


def step_intervals_us(t0: int, returns: list[int]) -> list[int]:
    """Time between successive step returns (µs), the first one from the call's start (``t0``): the first
    holds the request's admission and prefill, the others one engine step each (batch 1: one token)."""
    prev, out = t0, []
    for t in returns:
        out.append(round((t - prev) / 1000))
        prev = t
    return out


def block_on(k: int, start_on: bool) -> bool:
    """The state of block k (block 0 runs until the first switch) of a generate that started in ``start_on``."""
    return start_on if k % 2 == 0 else not start_on


def blocks(steps_us: list[int], after: list[int], start_on: bool, settle: int = SETTLE) -> list[tuple]:
    """(on, steps) of each block after the first: block k runs from the k-th switch (after that many steps) to the
    next, its first ``settle`` steps left out; ``on`` alternates from ``start_on``."""
    bounds = [0, *after, len(steps_us)]
    return [(block_on(k, start_on), steps_us[bounds[k] + settle:bounds[k + 1]]) for k in range(1, len(bounds) - 1)]


def block_levels(steps_us: list[int], after: list[int], start_on: bool, settle: int = SETTLE) -> list[tuple]:
    """(on, median step µs, steps) of each block after the first (``blocks``). A block with fewer than 4 steps left
    has no level (None)."""
    return [(on, statistics.median(seg) if len(seg) >= 4 else None, len(seg))
            for on, seg in blocks(steps_us, after, start_on, settle)]


def block_tails(steps_us: list[int], after: list[int], start_on: bool, settle: int = SETTLE,
                cap: float = TAIL_CAP) -> list[tuple]:
    """(on, excess µs, steps) of each block after the first with a level (``block_levels``): the excess is the sum
    of its steps' time above the block's median, steps over ``cap`` times the median left out (the host's hiccups of
    several steps' length, which come in both states). What the median leaves out: a cost that lands on a few steps
    (module docstring, "tails")."""
    out = []
    for on, seg in blocks(steps_us, after, start_on, settle):
        if len(seg) < 4:
            continue
        med = statistics.median(seg)
        kept = [x for x in seg if x <= cap * med]
        out.append((on, sum(x - med for x in kept if x > med), len(kept)))
    return out


def tail_diff_us(tails: list[tuple]) -> tuple[float, float, float] | None:
    """One generate's blocks (``block_tails``): the mean excess per step over the "on" blocks' steps, over the
    "off" blocks', and on less off (µs per step); None without steps in both states."""
    n = {s: sum(k for on, _, k in tails if on is s) for s in (True, False)}
    if not n[True] or not n[False]:
        return None
    on, off = (sum(x for o, x, _ in tails if o is s) / n[s] for s in (True, False))
    return on, off, on - off


def window_costs(levels: list[tuple], order: int = ORDER) -> list[float]:
    """Cost (%) read from each run of ``order`` + 1 consecutive blocks: the blocks' log levels weighted by the
    binomial high-pass (1 - z)^order / 2^order, whose output is the alternating part (the states alternate
    block by block) at gain 1 and zero for a drift that is a polynomial of degree below ``order`` over the run
    (order 2: the middle block against its two neighbours' mean; 4: a drift with curvature cancels too). Positive
    when "on" is slower. A run with a block without a level is skipped."""
    w = [math.comb(order, j) * (-1) ** j / 2 ** order for j in range(order + 1)]
    out = []
    for k in range(len(levels) - order):
        run = levels[k:k + order + 1]
        if any(x is None for _, x, _ in run):
            continue
        a = sum(wj * math.log(x) for wj, (_, x, _) in zip(w, run))
        out.append(math.expm1(2 * a if run[0][0] else -2 * a) * 100)
    return out


def _interval_90(boot: list[float]) -> list[float]:
    boot = sorted(boot)
    return [boot[int(0.05 * (len(boot) - 1))], boot[int(0.95 * (len(boot) - 1))]]


def trimmed_mean(costs: list[float]) -> tuple[float, int]:
    """The mean of the costs within ``TRIM`` robust deviations (1.4826 x the median absolute deviation) of
    their median, and how many were left out: a slow spell of the host (~1.5x for 0.1-1 s) that covers most of
    one block moves every window holding it by tens of percent, a cost the alternation does not carry."""
    med = statistics.median(costs)
    mad = statistics.median(abs(c - med) for c in costs) * 1.4826
    kept = [c for c in costs if abs(c - med) <= TRIM * mad] or costs
    return statistics.fmean(kept), len(costs) - len(kept)


def _boot(per_gen: list[list[float]], seed: int) -> list[float]:
    """``BOOTSTRAP`` trimmed means of a moving-block bootstrap: runs of ``CHUNK`` consecutive windows of one
    generate drawn with replacement (neighbouring windows share blocks, so single windows would understate the
    spread)."""
    costs = [c for g in per_gen for c in g]
    chunks = [g[i:i + CHUNK] for g in per_gen for i in range(0, max(1, len(g) - CHUNK + 1)) if g[i:i + CHUNK]]
    rng = random.Random(seed)
    need = max(1, round(len(costs) / CHUNK))
    return [trimmed_mean([c for _ in range(need) for c in rng.choice(chunks)])[0] for _ in range(BOOTSTRAP)]


def estimate(per_gen: list[list[float]], seed: int = 0) -> dict:
    """The trimmed mean of every generate's window costs (``trimmed_mean``) and their median, with a 90 %
    interval of the trimmed mean from a moving-block bootstrap (``_boot``)."""
    costs = [c for g in per_gen for c in g]
    if len(costs) < 3:
        return {"windows": len(costs)}
    mean, left_out = trimmed_mean(costs)
    return {"windows": len(costs), "cost_pct": mean, "cost_90pct": _interval_90(_boot(per_gen, seed)),
            "trimmed": left_out, "median_cost_pct": statistics.median(costs)}


CLOCKS = {"front": "steps_us", "engine": "engine_steps_us"}
SCOPES = ("all", "engine", "front")     # toggle_ab.py --flip-scope: which processes a flip switches


def scope_groups(gens: list[dict]) -> dict[str, list[dict]]:
    """A run's flip generates by workload, and by scope where one run rotated several (``toggle_ab.py
    --flip-scope all,front,engine``): keys ``flip1`` for a run of one scope (generates from before scopes were
    recorded count as ``all``), ``flip1@front`` etc. for a rotating one."""
    out: dict[str, list[dict]] = {}
    for key in dict.fromkeys(g["workload"] for g in gens):
        wg = [g for g in gens if g["workload"] == key]
        scopes = list(dict.fromkeys(g.get("scope", "all") for g in wg))
        if len(scopes) == 1:
            out[key] = wg
        else:
            out.update({f"{key}@{sc}": [g for g in wg if g.get("scope", "all") == sc] for sc in scopes})
    return out


def generate_levels(g: dict, clock: str = "front", settle: int = SETTLE) -> list[tuple]:
    """``block_levels`` of one generate on ``clock`` (``CLOCKS``), its blocks bounded by its switches."""
    return block_levels(g[CLOCKS[clock]], [s["after"] for s in g["switches"]], g["start_on"], settle)


def scope_gap(by_scope: dict[str, list[dict]], clock: str = "front", seed: int = 0) -> dict:
    """Whether the shares add up: the cost with every process switched minus the front end's and the engine's
    each switched alone (``all - front - engine``), from the real flips of one run that rotated the three
    scopes, so that all three ran on one host in one engine. Zero when each side's cost is its own; above zero
    when part of the cost comes as soon as either side is on (then each share alone reads the whole of it as
    the other side's, and the shares add to less than the whole). The 90 % interval adds the three independent
    bootstraps draw by draw. Empty without the three scopes on that clock."""
    terms = {"all": 1.0, "front": -1.0, "engine": -1.0}
    if set(terms) - set(by_scope) or any(CLOCKS[clock] not in g for sc in terms for g in by_scope[sc]):
        return {}
    per = {sc: [window_costs(generate_levels(g, clock)) for g in by_scope[sc] if g["real"]] for sc in terms}
    if any(sum(map(len, per[sc])) < 3 for sc in terms):
        return {}
    point = sum(w * trimmed_mean([c for g in per[sc] for c in g])[0] for sc, w in terms.items())
    boots = [_boot(per[sc], seed + k) for k, sc in enumerate(terms)]
    draws = [sum(w * b[i] for w, b in zip(terms.values(), boots)) for i in range(BOOTSTRAP)]
    return {"gap_pct": point, "gap_90pct": _interval_90(draws), "clock": clock}


def scope_gaps(groups: dict[str, list[dict]]) -> dict[str, dict]:
    """``scope_gap`` on both clocks for each workload of ``scope_groups``'s keys that holds the three scopes:
    ``{"flip1@gap": {"front": {...}, "engine": {...}}}``."""
    out = {}
    for key in dict.fromkeys(k.partition("@")[0] for k in groups if "@" in k):
        by_scope = {k.partition("@")[2]: v for k, v in groups.items() if k.partition("@")[0] == key}
        gap = {clock: scope_gap(by_scope, clock) for clock in CLOCKS}
        if any(gap.values()):
            out[key + "@gap"] = gap
    return out


def summarize(gens: list[dict], settle: int = SETTLE, clock: str = "front") -> dict:
    """Real flips and A/A flips of one workload on one clock (``CLOCKS``): each one's estimate, the steps' median in
    each state (real flips), the switches' round trip (ms, median) and how many steps a generate had; on the engine
    clock also the front end's lag (µs: median, and its growth from a generate's first to last tenth, median over
    generates). Empty where a generate lacks that clock."""
    out = {}
    key = CLOCKS[clock]
    if not gens or any(key not in g for g in gens):
        return out
    for kind, real in (("flip", True), ("aa", False)):
        gs = [g for g in gens if g["real"] is real]
        if not gs:
            continue
        levels = [generate_levels(g, clock, settle) for g in gs]
        out[kind] = {"generates": len(gs), "blocks": sum(len(lv) for lv in levels),
                     **estimate([window_costs(lv) for lv in levels])}
        if real:
            for state in (True, False):
                ls = [lv[1] for g in levels for lv in g if lv[0] is state and lv[1] is not None]
                out[kind]["step_us_" + ("on" if state else "off")] = statistics.median(ls) if ls else None
        tails = [t for t in (tail_diff_us(block_tails(g[key], [s["after"] for s in g["switches"]], g["start_on"],
                                                      settle)) for g in gs) if t is not None]
        if tails:
            out[kind]["tail_us"] = {"on": statistics.fmean(t[0] for t in tails),
                                    "off": statistics.fmean(t[1] for t in tails),
                                    "diff": statistics.fmean(t[2] for t in tails), "per_generate": [t[2] for t in tails]}
        ms = [s["ms"] for g in gs for s in g["switches"]]
        out[kind]["switch_ms"] = statistics.median(ms) if ms else None
        out[kind]["steps_per_generate"] = statistics.median(len(g["steps_us"]) for g in gs)
        if clock == "engine":
            out[kind]["front_lag_us"] = lag_summary([g["front_lag_us"] for g in gs])
    return out


def lag_summary(lags: list[list[int]]) -> dict:
    """The front end's lag behind the EngineCore's outputs: median over every step after the first tenth of its
    generate, and the median over generates of the lag's growth (last tenth's median minus first tenth's)."""
    tenths = [(g[:max(1, len(g) // 10)], g[-max(1, len(g) // 10):]) for g in lags if len(g) >= 10]
    steady = [x for g in lags for x in g[len(g) // 10:]]
    return {"median": statistics.median(steady) if steady else None,
            "growth": statistics.median(statistics.median(b) - statistics.median(a) for a, b in tenths) if tenths else None}
