"""Tensor-parallel ranks side by side: ``vllm-w2ext analyze RANK0_TRACE RANK1_TRACE ...`` (one torch-profiler
trace per rank, as vLLM writes them with ``--profile`` at TP > 1). Each trace is analysed as usual
(analyzer.py); this module adds, per rank, the communication share, and across ranks the skew at each
collective.

Communication share
    GPU time of the ``communication`` category (rules.py: NCCL kernels, vLLM's custom all-reduce
    ``cross_device_reduce_*``) over the rank's GPU busy time (the union of its busy intervals), for the
    whole trace and per phase (the busy time of the phase's steps: span minus idle inside the step).
    A collective's GPU time includes the time its rank spent waiting in it for the other ranks, so the
    share without that waiting (below) is given next to it.

Matching the collectives of the ranks
    Inside one step (the plugin's step id, which every rank of an engine shares; or the ordinal of
    vLLM's ``execute_context_*`` annotations when the plugin was off), the k-th collective of a kernel
    name on one rank is matched with the k-th collective of that name on every other rank. Collectives
    outside any step are matched the same way among themselves. When the traces share no step at all
    (annotated differently), the whole traces are matched by name and order. A collective without a
    partner on every rank is counted as unmatched, per rank.

Clock
    Kineto writes each event's ``ts`` in µs from the trace's ``baseTimeNanoseconds``; the ranks of one
    host share that clock (each process converts CUPTI's GPU timestamps to it), so a start is
    ``baseTimeNanoseconds + ts``, which is how ``merge`` lays several traces on one timeline (writer.py
    shifts each by its base's difference). Check, reported next to the skew: the collectives vLLM runs
    are barriers (its custom all-reduce ends with one; NCCL's ring cannot finish on a rank before the
    others' data arrived), so the ranks leave a matched collective together and its ends agree to
    within the clocks' disagreement (plus the last rank's own work after the barrier).

Skew and waiting
    Skew of a matched collective: the spread of its start times over the ranks, |start_r0 - start_r1|
    at TP=2. The rank that starts last is late; a start within TIE_US of the last is counted as even.
    Which rank is late is counted two ways: most often (a count of collectives), and for the most
    time (the skew summed over the collectives where it was last): many sub-µs skews and a few long
    ones can point at different ranks.
    Every other rank spins inside the collective until the last arrives: its wait is the skew to the
    last start, at most its kernel's duration. The last rank's kernel duration is the collective's own
    cost (transfer and reduction, no waiting).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from vllm_w2ext.analysis.kernels.analyzer import read_trace
from vllm_w2ext.analysis.kernels.result import build_result
from vllm_w2ext.analysis.kernels.rules import RULES_VERSION

TIE_US = 1.0             # starts closer than this (µs) count as even (clock agreement is ~0.1 µs, see report)
NO_STEP = ("none",)      # the step of collectives launched outside any step mark


@dataclass(frozen=True)
class Collective:
    """One communication kernel of one rank, on the shared clock."""
    start_ns: int        # baseTimeNanoseconds + ts
    dur_us: float
    name: str
    step: tuple          # ("step", id) | ("seq", ordinal) | NO_STEP
    phase: str           # prefill | decode | mixed | empty | unknown | outside_steps

    @property
    def end_ns(self) -> int:
        return self.start_ns + round(self.dur_us * 1000)


def collectives(an, base_ns: int) -> list[Collective]:
    """The collectives an Analyzer(collect_comm=True) kept, with their step and phase, in start order."""
    marks = an.steps.describe()
    out = []
    for ts, dur, name, step in an.comm or ():
        if step is None:
            ident, phase = NO_STEP, "outside_steps"
        else:
            ident, phase = tuple(step[1:]), marks.get(step, {}).get("phase", "unknown")
        out.append(Collective(base_ns + round(ts * 1000), dur, name, ident, phase))
    out.sort(key=lambda c: c.start_ns)
    return out


# -- matching ----------------------------------------------------------------------------------------
def match(per_rank: list[list[Collective]]) -> tuple[list[tuple[Collective, ...]], list[int], str]:
    """(matched tuples, one Collective per rank in rank order, in start order of the first rank;
    unmatched count per rank; how they were matched)."""
    groups = [_by_step_and_name(cs) for cs in per_rank]
    stepped = [{k for k in g if k != NO_STEP} for g in groups]
    method = "by step id (the same on every rank), then kernel name and order inside the step"
    if all(stepped) and not set.intersection(*stepped):
        method = "by kernel name and order over the whole traces (the traces share no step id)"
        groups = [{NO_STEP: _by_name(cs)} for cs in per_rank]
    out: list[tuple[Collective, ...]] = []
    for step in set.intersection(*(set(g) for g in groups)):
        names = set.intersection(*(set(g[step]) for g in groups))
        for name in names:
            out += zip(*(g[step][name] for g in groups))
    out.sort(key=lambda t: t[0].start_ns)
    unmatched = [len(cs) - len(out) for cs in per_rank]
    return out, unmatched, method


def _by_name(cs: list[Collective]) -> dict:
    d: dict = defaultdict(list)
    for c in cs:
        d[c.name].append(c)
    return d


def _by_step_and_name(cs: list[Collective]) -> dict:
    d: dict = defaultdict(lambda: defaultdict(list))
    for c in cs:                     # in start order: the k-th of a name in a step is its k-th element
        d[c.step][c.name].append(c)
    return d


# -- statistics --------------------------------------------------------------------------------------
def stats(xs: list[float]) -> dict:
    """count, median, p90 (nearest rank), max and mean of µs values, rounded to ns."""
    if not xs:
        return {"count": 0}
    s = sorted(xs)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    return {"count": n, "median_us": round(med, 3), "p90_us": round(s[math.ceil(0.9 * n) - 1], 3),
            "max_us": round(s[-1], 3), "mean_us": round(sum(s) / n, 3)}


def skew_block(tuples: list[tuple[Collective, ...]], ranks: list) -> dict:
    """Skew, late rank, waiting and the collective's own cost over a set of matched collectives."""
    if not tuples:
        return {"matched": 0}
    skews, ends, own = [], [], []
    late = dict.fromkeys(ranks, 0)
    late_us = dict.fromkeys(ranks, 0.0)          # skew summed over the collectives where the rank was last
    even = 0
    wait = dict.fromkeys(ranks, 0.0)
    dur = dict.fromkeys(ranks, 0.0)
    steps = set()
    for t in tuples:
        starts = [c.start_ns for c in t]
        last = max(starts)
        skew = (last - min(starts)) / 1e3
        skews.append(skew)
        ends.append((max(c.end_ns for c in t) - min(c.end_ns for c in t)) / 1e3)
        i_last = starts.index(last)
        own.append(t[i_last].dur_us)
        if sum(1 for s in starts if (last - s) / 1e3 < TIE_US) > 1:
            even += 1
        else:
            late[ranks[i_last]] += 1
            late_us[ranks[i_last]] += skew
        for r, c in zip(ranks, t):
            dur[r] += c.dur_us
            wait[r] += min((last - c.start_ns) / 1e3, c.dur_us)
        steps.add(t[0].step)
    n = len(tuples)
    usually = max(late, key=late.get)
    uneven = n - even
    by_time = max(late_us, key=late_us.get)
    total_late = sum(late_us.values())
    n_steps = len(steps - {NO_STEP}) or None
    return {
        "matched": n,
        "skew_us": stats(skews),
        "late": {f"rank {r}": late[r] for r in ranks} | {f"within_{TIE_US:g}us": even},
        "usually_late": usually if late[usually] > uneven / 2 else None,     # of the uneven starts
        "usually_late_share": round(late[usually] / uneven, 4) if uneven else 0.0,
        "late_us": {f"rank {r}": round(late_us[r], 3) for r in ranks},
        "late_for_most_time": by_time if late_us[by_time] > total_late / 2 else None,
        "late_for_most_time_share": round(late_us[by_time] / total_late, 4) if total_late else 0.0,
        "collective_own_us": stats(own),
        "end_spread_us": stats(ends),
        "collective_time_us": {f"rank {r}": round(dur[r], 3) for r in ranks},
        "wait_us": {f"rank {r}": round(wait[r], 3) for r in ranks},
        "wait_share_of_collective_time": {f"rank {r}": round(wait[r] / dur[r], 4) if dur[r] else 0.0
                                          for r in ranks},
        "steps": n_steps or 0,
        "wait_per_step_us": {f"rank {r}": round(wait[r] / n_steps, 3) for r in ranks} if n_steps else None,
        "skew_per_step_us": round(sum(skews) / n_steps, 3) if n_steps else None,
    }


def short_name(name: str) -> str:
    """A kernel's name without its return type, template and parameters
    (``void vllm::cross_device_reduce_1stage<...>(...)`` -> ``vllm::cross_device_reduce_1stage``)."""
    n = name.removeprefix("void ")
    return n.split("(")[0].split("<")[0] or name


def _phase_of(t: tuple[Collective, ...]) -> str:
    return t[0].phase


def rank_skew(per_rank: list[list[Collective]], ranks: list) -> dict:
    """The whole skew section: matching counts, overall, per phase, by position in the step, by kernel."""
    tuples, unmatched, method = match(per_rank)
    by_phase: dict = defaultdict(list)
    by_pos: dict = defaultdict(list)
    by_name: dict = defaultdict(list)
    seen_step: set = set()
    for t in tuples:
        by_phase[_phase_of(t)].append(t)
        by_name[t[0].name].append(t)
        first = t[0].step != NO_STEP and t[0].step not in seen_step
        seen_step.add(t[0].step)
        by_pos[(_phase_of(t), "first in step" if first else "later in step")].append(t)
    return {
        "ranks": list(ranks),
        "matching": method,
        "collectives": {f"rank {r}": len(cs) for r, cs in zip(ranks, per_rank)},
        "matched": len(tuples),
        "unmatched": {f"rank {r}": u for r, u in zip(ranks, unmatched)},
        "tie_us": TIE_US,
        "all": skew_block(tuples, ranks),
        "by_phase": {ph: skew_block(ts, ranks) for ph, ts in sorted(by_phase.items(), key=lambda kv: -len(kv[1]))},
        "by_position": {f"{ph} {pos}": skew_block(by_pos[(ph, pos)], ranks)
                        for ph in by_phase for pos in ("first in step", "later in step") if by_pos.get((ph, pos))},
        "by_collective": {name: skew_block(ts, ranks) for name, ts in sorted(by_name.items(), key=lambda kv: -len(kv[1]))},
    }


# -- communication share -----------------------------------------------------------------------------
def comm_share(result: dict, wait_us: float | None = None, wait_by_phase: dict | None = None) -> dict:
    """A rank's communication time over its GPU busy time, overall and per phase; with the waiting
    (skew section) taken out where it is known."""
    busy = result["idle"]["gpu_busy_us"]
    comm = result["categories"]["communication"]["time_us"]
    out = {"communication_us": comm, "gpu_busy_us": busy, "share": round(comm / busy, 6) if busy else 0.0}
    if wait_us is not None:
        out["waiting_us"] = round(wait_us, 3)
        out["share_without_waiting"] = round((comm - wait_us) / busy, 6) if busy else 0.0
    busy_ph: dict = defaultdict(float)
    for s in result["steps"]:
        busy_ph[s["phase"]] += s["gpu_busy_us"]
    phases = {}
    for ph, p in result["phases"].items():
        c = p["categories"]["communication"]["time_us"]
        if ph == "outside_steps" or not busy_ph.get(ph):
            continue
        row = {"steps": p["steps"], "communication_us": c, "gpu_busy_us": round(busy_ph[ph], 3),
               "share": round(c / busy_ph[ph], 6)}
        if wait_by_phase is not None and ph in wait_by_phase:
            row["waiting_us"] = round(wait_by_phase[ph], 3)
            row["share_without_waiting"] = round((c - wait_by_phase[ph]) / busy_ph[ph], 6)
        phases[ph] = row
    out["phases"] = phases
    return out


# -- the whole analysis ------------------------------------------------------------------------------
def clock_summary(bases: list, ranks: list) -> dict:
    same = len(set(bases)) == 1
    how = ("start = baseTimeNanoseconds + ts (Kineto µs from the trace's base, one host clock), as merge "
           "lays several traces on one timeline")
    if not any(bases):
        how = "no baseTimeNanoseconds in the traces: ts compared as written (same-host traces share the clock)"
    return {"method": how, "base_time_ns": {f"rank {r}": b for r, b in zip(ranks, bases)}, "same_base": same}


def analyze_ranks(paths: list, top: int = 20) -> dict:
    """Every trace's breakdown (``traces``, in rank order) and the ``tensor_parallel`` section."""
    rows = []
    for i, path in enumerate(paths):
        an, reader = read_trace(path, collect_comm=True)
        result = build_result(an, path, reader, top)
        header = reader.header if isinstance(reader.header, dict) else {}
        base = header.get("baseTimeNanoseconds")
        base = int(base) if isinstance(base, (int, float)) else 0
        rank = result["trace"]["rank"]
        rows.append((rank if isinstance(rank, int) else i, i, result, collectives(an, base), base))
        del an
    rows.sort(key=lambda r: (r[0], r[1]))
    ranks = [r[0] for r in rows]
    if len(set(ranks)) < len(ranks):          # two traces claim one rank: number them in the order given
        rows.sort(key=lambda r: r[1])
        ranks = [r[1] for r in rows]
    return build_tp_result([r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows], ranks)


def build_tp_result(results: list[dict], per_rank: list[list[Collective]], bases: list, ranks: list) -> dict:
    skew = rank_skew(per_rank, ranks)
    tuples_wait = skew["all"].get("wait_us", {})
    per_phase_wait = {ph: b.get("wait_us", {}) for ph, b in skew["by_phase"].items()}
    ranks_out = []
    for r, res in zip(ranks, results):
        key = f"rank {r}"
        share = comm_share(res, tuples_wait.get(key), {ph: w[key] for ph, w in per_phase_wait.items() if key in w})
        ranks_out.append({"rank": r, "file": res["trace"]["file"],
                          "devices": res["trace"]["devices"], "collectives": skew["collectives"][key]} | share)
    notes = []
    if skew["matched"] == 0 and any(per_rank):
        notes.append("no collective matched across the ranks: skew not measured")
    if not any(per_rank):
        notes.append("no communication kernels in these traces (not tensor-parallel?)")
    return {"rules_version": RULES_VERSION,
            "tensor_parallel": {"ranks": ranks_out, "clock": clock_summary(bases, ranks) | {
                "check_end_spread_us": skew["all"].get("end_spread_us")}, "skew": skew, "notes": notes},
            "traces": results}
