"""Synthetic finished ranges shaped like a real run's (one engine step: EngineCore phases, a worker's
execute_model with its gap and device-idle attributes, the front end's step, a finished request), for
the metrics unit tests and benchmarks/otlp_metrics_cost.py. No vLLM, no torch."""
from __future__ import annotations

import random

from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.ranges import Range
from vllm_w2ext.vocab import (
    ENGINE,
    FRONT,
    IDLE_CAUSES,
    WORKER,
    Attr,
    Event,
    Span,
    device_idle_attr,
)

ROLES = {FRONT: {}, ENGINE: {Attr.ENGINE_INDEX: 0}, WORKER: {Attr.ENGINE_INDEX: 0, Attr.RANK: 0}}


def adopt_identity(pid: int = 4242) -> None:
    """Speak for a made-up vLLM process hosting all three roles (as an export process does)."""
    identity.adopt(pid, "0.0-test", ROLES)


def _ids(rng: random.Random) -> tuple[int, int]:
    return rng.getrandbits(128) | 1, rng.getrandbits(64) | 1


def step_ranges(step: int, t0_ns: int, rng: random.Random, cuda: bool = False, request_done: bool = False,
                preempted: bool = False) -> list[Range]:
    """The ranges of one engine step (and of a request finishing in it, with ``request_done``)."""
    trace, root = _ids(rng)
    ms = 1_000_000
    dur = int(rng.uniform(2, 40) * ms)
    out = [Range(Span.STEP, ENGINE, trace, root, 0, t0_ns, t0_ns + dur, step=step, attrs={
        Attr.MODEL_EXECUTED: True, Attr.NUM_REQS: rng.randint(1, 8), Attr.PREFILL_TOKENS: rng.randint(0, 64),
        Attr.DECODE_TOKENS: rng.randint(1, 8), Attr.PREEMPTIONS: 0, Attr.RUNNING: rng.randint(1, 8),
        Attr.WAITING: rng.randint(0, 4)})]
    t = t0_ns
    for name, frac in ((Span.SCHEDULE, 0.1), (Span.EXECUTE, 0.6), (Span.SAMPLE, 0.1), (Span.UPDATE, 0.1)):
        d = int(dur * frac)
        out.append(Range(name, ENGINE, trace, rng.getrandbits(64) | 1, root, t, t + d, step=step))
        t += d
    wt, wroot = _ids(rng)
    busy = dur * 0.55 / 1e9
    idle = rng.uniform(0.0005, 0.005)
    wattrs = {Attr.GAP_CPU: idle, Attr.GAP_SCHEDULE: idle * 0.4, Attr.GAP_UPDATE: idle * 0.2,
              Attr.GAP_ENGINE_IDLE: 0.0, Attr.GAP_WAIT_DEVICE: 0.0, Attr.GAP_OTHER: idle * 0.4,
              Attr.DEVICE_BUSY: busy, Attr.DEVICE_IDLE: idle,
              Attr.DEVICE_CLOCK: "cuda_events" if cuda else "forward_spans"}
    for cause, share in zip(IDLE_CAUSES[:4], (0.3, 0.2, 0.3, 0.2)):
        wattrs[device_idle_attr(cause)] = idle * share
    w0 = t0_ns + int(dur * 0.2)
    out.append(Range(Span.WORKER_EXECUTE, WORKER, wt, wroot, 0, w0, w0 + int(busy * 1e9), step=step, attrs=wattrs))
    out.append(Range(Span.FORWARD, WORKER, wt, rng.getrandbits(64) | 1, wroot, w0, w0 + int(busy * 0.9e9), step=step))
    out.append(Range(Span.WORKER_SAMPLE, WORKER, wt, rng.getrandbits(64) | 1, 0, w0 + int(busy * 1e9),
                     w0 + int(busy * 1.05e9), step=step))
    ft, fs = _ids(rng)
    out.append(Range(Span.FRONT_STEP, FRONT, ft, fs, 0, t0_ns, t0_ns + dur // 10))
    out.append(Range(Span.PROCESS_OUTPUTS, FRONT, ft, rng.getrandbits(64) | 1, fs, t0_ns, t0_ns + dur // 20))
    if request_done:
        rt, rs = _ids(rng)
        r = Range(Span.ENGINE_REQUEST, ENGINE, rt, rs, 0, t0_ns - 50 * ms, t0_ns + dur, attrs={
            Attr.QUEUE_S: rng.uniform(0.0001, 0.01), Attr.PREFILL_S: rng.uniform(0.005, 0.05),
            Attr.DECODE_S: rng.uniform(0.05, 0.5)})
        if preempted:
            r.events = [(Event.PREEMPTED, t0_ns, {"reason": "kv_cache"})]
        out.append(r)
    return out


def run_ranges(steps: int, seed: int = 0, cuda: bool = False, t0_ns: int = 1_700_000_000_000_000_000):
    """``steps`` steps' ranges, a request finishing every 8th step (the 16th preempted once)."""
    rng = random.Random(seed)
    out = []
    for i in range(steps):
        out += step_ranges(i, t0_ns + i * 50_000_000, rng, cuda=cuda, request_done=i % 8 == 7,
                           preempted=i % 16 == 15)
    return out
