"""Device idle by cause: the plugin's per-step attribution (``vllm.device.idle.<cause>_s`` on each
``worker.execute_model``), completed with what only the whole folder shows.

- ``no_work`` is split: the plugin reports "the EngineCore had no request to run" as ``no_work``; the
  part of such an idle window during which the front end was busy (``front.process_outputs``,
  ``front.add_request``: it had outputs not taken yet or requests not delivered yet) becomes
  ``frontend``, at most the window's ``no_work`` seconds. ``front.step`` does not count: offline it
  is mostly the front end blocked on the EngineCore's next output.
- The head (wall start -> the device's first forward) and the tail (its last forward -> wall end) are
  idle too, see head() and tail(); a run that ends late because the front end is still processing
  outputs shows as ``frontend`` in the tail.
- A sampled run (``VLLM_W2EXT_SAMPLE``) measured the idle before a head-sampled subset of its forwards:
  what lies between forwards (busy and idle, by cause) is scaled up by the run's executed steps over the
  forwards counted (``scale``); the head, the tail and the per-step evidence are as measured.

Every figure is per device (engine, rank); a finding's seconds are the mean over devices."""
from __future__ import annotations

from dataclasses import dataclass, field

from vllm_w2ext.analysis.explain.findings import Finding, secs
from vllm_w2ext.analysis.explain.intervals import Union
from vllm_w2ext.analysis.explain.timeline import Execution, Timeline, device_label
from vllm_w2ext.vocab import IDLE_CAUSES, Span

TOP_STEPS = 5
SUGGEST_SHARE = 0.05        # a cause costing less than this share of the wall time gets no suggestion


@dataclass
class DeviceIdle:
    device: tuple[str, str]
    steps: int = 0
    unmeasured: int = 0                   # steps whose idle before them was not measured (after unrecorded ones)
    run_steps: int = 0                    # the engine's executed steps, counted ones included (sampled runs)
    scale: float = 1.0                    # run_steps / forwards counted here (sampled runs; else 1)
    busy_s: float = 0.0
    stepping_idle_s: float = 0.0          # between its first and last forward
    head: dict[str, float] = field(default_factory=dict)     # wall start -> first forward, by cause
    tail: dict[str, float] = field(default_factory=dict)     # last forward -> wall end, by cause
    by_cause: dict[str, float] = field(default_factory=lambda: dict.fromkeys(IDLE_CAUSES, 0.0))
    stepping_by_cause: dict[str, float] = field(default_factory=lambda: dict.fromkeys(IDLE_CAUSES, 0.0))
    top: dict[str, list[tuple[float, Execution]]] = field(default_factory=dict)   # cause -> largest steps
    steps_with: dict[str, int] = field(default_factory=dict)       # cause -> steps with idle of that cause
    pid: int = 0

    @property
    def busy_share(self) -> float:
        """Busy share of the stepping time (first forward -> last forward)."""
        t = self.busy_s + self.stepping_idle_s
        return self.busy_s / t if t > 0 else 0.0

    @property
    def idle_s(self) -> float:
        return sum(self.by_cause.values())


def _split_no_work(tl: Timeline, ex: Execution, causes: dict[str, float]) -> dict[str, float]:
    n = causes.get("no_work", 0.0)
    if n <= 0 or ex.idle_start_ns is None or ex.idle_end_ns is None or not tl.front_busy:
        return causes
    f = min(n, tl.front_busy.overlap(int(ex.idle_start_ns), int(ex.idle_end_ns)) / 1e9)
    if f <= 0:
        return causes
    out = dict(causes)
    out["no_work"] = n - f
    out["frontend"] = out.get("frontend", 0.0) + f
    return out


def split(a: int, b: int, coverings: list[tuple[str, Union]], default: str) -> dict[str, float]:
    """Seconds of ``[a, b]`` by cause: each piece goes to the first covering whose spans cover it, the
    rest to ``default``."""
    out: dict[str, float] = {}
    if b <= a:
        return out
    cuts = {a, b}
    for _, u in coverings:
        for x, y in u.spans:
            if y > a and x < b:
                cuts.update((max(x, a), min(y, b)))
    points = sorted(cuts)
    for lo, hi in zip(points, points[1:]):
        cause = next((c for c, u in coverings if u.overlap(lo, hi) == hi - lo), default)
        out[cause] = out.get(cause, 0.0) + (hi - lo) / 1e9
    return out


def _spans(spans: dict, name: str) -> Union:
    return Union((s.start_ns, s.end_ns) for s in spans.get(name, []))


def head(tl: Timeline, first: Execution, engine_lo: int) -> dict[str, float]:
    """Wall start -> the first forward. Before the engine's first step: the front end busy, or still
    delivering requests (up to its last add_request before that step), is frontend; the rest is the
    requests on their way to the EngineCore (ipc). From the engine's first step: its scheduling, the
    dispatch to the worker, the worker's input preparation; the rest is the engine's loop."""
    a, b = tl.wall_start, first.fwd_start
    lo = min(max(engine_lo, a), b)
    spans = tl.engine_spans.get(first.engine, {})
    adds = [y for _, y in tl.front_adds if y <= lo]
    out = split(a, lo, [("frontend", tl.front_busy), ("frontend", Union([(a, max(adds))] if adds else []))], "ipc")
    _add(out, split(lo, b, [("prepare_inputs", Union([(first.slice.start_ns, first.fwd_start)])),
                            ("schedule", _spans(spans, Span.SCHEDULE)), ("ipc", _spans(spans, Span.EXECUTE))],
                    "engine_loop"))
    return out


def tail(tl: Timeline, last: Execution, engine_hi: int) -> dict[str, float]:
    """The last forward -> wall end. Until the engine's last step ends: its update_from_output, else the
    step's sampling and output. After it: front end busy (still processing outputs: the run ends late
    because of it) is frontend, the rest no_work."""
    a, b = last.fwd_end, tl.wall_end
    hi = max(min(engine_hi, b), a)
    spans = tl.engine_spans.get(last.engine, {})
    out = split(a, hi, [("update_from_output", _spans(spans, Span.UPDATE))], "sample")
    _add(out, split(hi, b, [("frontend", tl.front_busy)], "no_work"))
    return out


def _add(into: dict[str, float], part: dict[str, float]) -> None:
    for c, v in part.items():
        if v > 0:
            into[c] = into.get(c, 0.0) + v


def device_idle(tl: Timeline, device: tuple[str, str]) -> DeviceIdle:
    exs = tl.executions.get(device, [])
    d = DeviceIdle(device)
    if not exs:
        return d
    d.pid = exs[0].pid
    tops: dict[str, list] = {}
    for i, ex in enumerate(exs):
        d.steps += 1
        if i > 0 and not ex.idle_known:   # steps ran unrecorded before it (sampling, a pause): its idle is
            d.unmeasured += 1             # unknown, and its busy time alone would inflate the busy share
            continue
        d.busy_s += ex.busy_s or 0.0
        if i == 0:            # idle before the first forward of the window is the head's
            continue
        causes = _split_no_work(tl, ex, ex.causes)
        rest = ex.idle_s - sum(causes.values())
        if rest > 1e-9:       # causes add up to idle_s (the plugin's contract); keep any remainder visible
            causes = {**causes, "unattributed": causes.get("unattributed", 0.0) + rest}
        d.stepping_idle_s += ex.idle_s
        _add(d.stepping_by_cause, causes)
        for c, v in causes.items():
            if v > 0:
                tops.setdefault(c, []).append((v, ex))
                d.steps_with[c] = d.steps_with.get(c, 0) + 1
    steps = tl.engine_steps.get(device[0], [])
    if tl.sampling is not None:
        _scale_sampled(d, tl.sampling.executed.get(device[0], 0))
    first, last = exs[0], exs[-1]
    eng_lo = steps[0].start_ns if steps else first.slice.start_ns
    eng_hi = steps[-1].end_ns if steps else last.slice.end_ns
    # the head: clip to the wall; the engine's stepping begins with the step of the first forward
    by_id = {s.step: s for s in steps}      # the engine's stepping: from the first forward's step to the last's
    d.head = head(tl, first, by_id[first.step].start_ns if first.step in by_id else eng_lo)
    d.tail = tail(tl, last, by_id[last.step].end_ns if last.step in by_id else eng_hi)
    for c in IDLE_CAUSES:
        d.by_cause[c] = d.stepping_by_cause[c] + d.head.get(c, 0.0) + d.tail.get(c, 0.0)
    for edge, ex in ((d.head, first), (d.tail, last)):
        for c, v in edge.items():
            if v > 0:
                tops.setdefault(c, []).append((v, ex))
    d.top = {c: sorted(v, key=lambda x: -x[0])[:TOP_STEPS] for c, v in tops.items()}
    return d


def _scale_sampled(d: DeviceIdle, run_steps: int) -> None:
    """A sampled run: scale what lies between forwards (busy, idle by cause) from the forwards counted to
    ``run_steps``, every executed step of the engine (recorded or only counted: ``Timeline.sampling``).
    The measured forwards are a head sample (2 steps in every N), so the estimate is unbiased for the steady
    state; the steps recorded for request changes are mostly first steps of a pair, not counted here."""
    counted = d.steps - d.unmeasured
    if counted <= 0 or run_steps <= counted:
        return
    d.run_steps, d.scale = run_steps, run_steps / counted
    d.busy_s *= d.scale
    d.stepping_idle_s *= d.scale
    for c in d.stepping_by_cause:
        d.stepping_by_cause[c] *= d.scale


def all_devices(tl: Timeline) -> dict[tuple[str, str], DeviceIdle]:
    return {dev: device_idle(tl, dev) for dev in tl.devices}


def by_cause(idle: dict, wall_s: float) -> dict[str, dict]:
    """Mean over devices, every cause (zeros included), with its share of the wall time."""
    n = len(idle) or 1
    out = {}
    for c in IDLE_CAUSES:
        s = sum(d.by_cause[c] for d in idle.values()) / n
        out[c] = {"seconds": round(s, 6), "share": round(s / wall_s, 6) if wall_s else 0.0}
    return out


TITLES = {
    "prepare_inputs": "the device waited while the worker prepared the step's inputs",
    "ipc": "the device waited for the step to travel between the EngineCore and the worker",
    "schedule": "the device waited for the scheduler (Scheduler.schedule)",
    "update_from_output": "the device waited for the EngineCore to take the previous step's output "
                          "(update_from_output)",
    "sample": "the device waited for sampling and output sync after the forward",
    "engine_loop": "the device waited on the EngineCore's loop between steps, with requests pending",
    "no_work": "the device had no work: no request was running or waiting",
    "frontend": "the device waited for the front end (requests not delivered or outputs not taken)",
    "unattributed": "the device was idle for a reason the spans do not show",
}


def _suggestion(cause: str, share: float, per_step_s: float) -> str | None:
    if share < SUGGEST_SHARE:
        return None
    if cause in ("schedule", "update_from_output"):
        return ("scheduling is on the critical path: --async-scheduling overlaps it with the next forward "
                "(where the build supports it); a scheduler this slow per step "
                f"({secs(per_step_s)}) is worth profiling (custom scheduler_cls, many requests)")
    if cause == "frontend":
        return ("the front end cannot keep up: `vllm serve --api-server-count N` spreads output processing "
                "over N processes; offline, SamplingParams(detokenize=False) and output_kind=FINAL_ONLY cut "
                "its work per step")
    if cause == "prepare_inputs" and per_step_s > 2e-4:
        return ("the worker's input preparation (host CPU, before each forward's launch) outlasts the GPU's "
                "work: more requests per step amortize it (a small model at a small batch is CPU-bound); with "
                "--enforce-eager, CUDA graphs would also cut the forward's launches")
    return None


def findings(tl: Timeline, idle: dict) -> list[Finding]:
    if not idle:
        return []
    n = len(idle)
    wall = tl.wall_s
    out = []
    for c in IDLE_CAUSES:
        per_dev = {device_label(dev): d.by_cause[c] for dev, d in idle.items()}
        s = sum(per_dev.values()) / n
        if s <= 0:
            continue
        top = sorted(((v, ex, dev) for dev, d in idle.items() for v, ex in d.top.get(c, [])),
                     key=lambda x: -x[0])
        n_steps = sum(d.steps_with.get(c, 0) for d in idle.values())
        steps_seen = max(1, sum(d.steps for d in idle.values()) // n)
        per_step = s / steps_seen
        ev = {"steps_with_cause": n_steps, "per_step_s": round(per_step, 9),
              "by_device": {k: round(v, 6) for k, v in per_dev.items()},
              "head_s": round(sum(d.head.get(c, 0.0) for d in idle.values()) / n, 6),
              "tail_s": round(sum(d.tail.get(c, 0.0) for d in idle.values()) / n, 6),
              "top_steps": [{"step": ex.step, "seconds": round(v, 6), "device": device_label(dev), "pid": ex.pid}
                            for v, ex, dev in top]}
        stepping = s - ev["head_s"] - ev["tail_s"]
        scale = sum(d.scale for d in idle.values()) / n
        parts = []
        if stepping > 0:
            measured = stepping / scale                  # scale 1: every step recorded
            text = (f"{secs(measured)} in {n_steps} of {'the ' if scale > 1 else ''}{steps_seen} "
                    f"{'recorded ' if scale > 1 else ''}steps' idle windows"
                    + (f" ({secs(measured * n / n_steps)} each)" if n_steps else ""))
            if scale > 1:
                text = (f"{secs(stepping)} estimated between forwards: {text}, scaled x{scale:.1f} to the run's "
                        f"{sum(d.run_steps for d in idle.values()) // n} steps")
                ev["scale"] = round(scale, 4)
            parts.append(text)
        if ev["head_s"] > 0:
            parts.append(f"{secs(ev['head_s'])} before the first forward")
        if ev["tail_s"] > 0:
            parts.append(f"{secs(ev['tail_s'])} after the last forward")
        text = ", ".join(parts)
        if top:
            v, ex, dev = top[0]
            text += (f"; the most in step {ex.step} ({secs(v)}): open worker.execute_model #{ex.step} "
                     f"(pid {ex.pid}) in Perfetto")
            ev["open_in_perfetto"] = {"span": Span.WORKER_EXECUTE, "step": ex.step, "pid": ex.pid}
        if c == "frontend" and ev["tail_s"] > 0.5 * s:
            text += f"; {secs(ev['tail_s'])} of it after the engine's last step, while the front end still " \
                    "processed outputs"
        if n > 1:
            text += "; " + ", ".join(f"{k}: {secs(v)}" for k, v in per_dev.items())
        ev["text"] = text
        share = s / wall if wall else 0.0
        out.append(Finding(f"device_idle.{c}", c, TITLES[c], s, share, ev, _suggestion(c, share, per_step)))
    return out

