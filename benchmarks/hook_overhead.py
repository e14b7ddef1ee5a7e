"""Micro-benchmark: per-step cost of the plugin's instrumentation, on this machine's CPU.

Hot path (the engine's own thread): the plugin's real wrappers (wrapt + hook pre/post + recorder)
around one engine step's call sequence - step, schedule, execute_model, worker execute/forward,
sample_tokens, update_from_output - with a real vLLM ``SchedulerOutput`` of N requests, compared with
the same calls unwrapped. The wrapped callables are no-ops, so the difference is exactly what the
plugin adds per step.

Export thread (off the engine thread, but it shares the GIL): building the step's attributes, links,
OTel spans and the OTLP protobuf, per step, by batch size and link mode.

    python benchmarks/hook_overhead.py [--out benchmarks/results/cpu/hook_overhead.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import Future
from types import SimpleNamespace

os.environ.setdefault("VLLM_W2EXT", "1")


def make_scheduler_output(n: int, new: int):
    from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput
    rids = [f"req-{i}" for i in range(n)]
    new_reqs = [NewRequestData(req_id=r, prompt_token_ids=[1] * 16, mm_features=[], sampling_params=None,
                               pooling_params=None, block_ids=([0],), num_computed_tokens=0, lora_request=None)
                for r in rids[:new]]
    cached = CachedRequestData.make_empty()
    cached.req_ids = rids[new:]
    cached.num_computed_tokens = [20] * (n - new)
    cached.num_output_tokens = [4] * (n - new)
    nst = {r: (16 if i < new else 1) for i, r in enumerate(rids)}
    so = SchedulerOutput(scheduled_new_reqs=new_reqs, scheduled_cached_reqs=cached, num_scheduled_tokens=nst,
                         total_num_scheduled_tokens=sum(nst.values()), scheduled_spec_decode_tokens={},
                         scheduled_encoder_inputs={}, num_common_prefix_blocks=[0], finished_req_ids=set(),
                         free_encoder_mm_hashes=[])
    return so, rids


def build(hooked: bool, so):
    """Stand-in classes with vLLM's method names and call order (sync step, V1 runner); the plugin's
    real wrappers are attached to them exactly as to vLLM's classes (bound methods via wrapt)."""
    import wrapt
    done = Future()
    done.set_result(None)

    class Runner:
        def _model_forward(self): return None

    class Worker:
        rank = local_rank = 0
        def __init__(self): self.model_runner = Runner()
        def execute_model(self, s): return self.model_runner._model_forward()
        def sample_tokens(self, g): return None

    class Executor:
        def __init__(self): self.worker = Worker()
        def execute_model(self, s, non_block=True):
            self.worker.execute_model(s)
            return done
        def sample_tokens(self, g): return self.worker.sample_tokens(g)

    class Scheduler:
        def __init__(self):
            self.running, self.waiting, self.requests = [0] * len(so.num_scheduled_tokens), [], {}
        def schedule(self): return so
        def update_from_output(self, s, o): return {}

    class EngineCore:
        engine_index = 0
        def __init__(self):
            self.scheduler, self.model_executor = Scheduler(), Executor()
        def step(self):
            s = self.scheduler.schedule()
            fut = self.model_executor.execute_model(s, non_block=True)
            out = fut.result()
            if out is None:
                out = self.model_executor.sample_tokens(None)
            return self.scheduler.update_from_output(s, out), True

    if hooked:
        from vllm_w2ext.hooks import all_hooks
        from vllm_w2ext.hooks.base import make_wrapper
        by = {h.name: h for h in all_hooks()}
        targets = {(Runner, "_model_forward"): "worker.forward_v1", (Worker, "execute_model"): "worker.execute_model",
                   (Worker, "sample_tokens"): "worker.sample_tokens",
                   (Executor, "execute_model"): "engine.execute_model.MultiprocExecutor",
                   (Executor, "sample_tokens"): "engine.sample_tokens.MultiprocExecutor",
                   (Scheduler, "schedule"): "engine.schedule", (Scheduler, "update_from_output"):
                   "engine.update_from_output", (EngineCore, "step"): "engine.step"}
        for (cls, meth), hname in targets.items():
            sync_w, _ = make_wrapper(by[hname])
            setattr(cls, meth, wrapt.FunctionWrapper(vars(cls)[meth], sync_w))
    core = EngineCore()
    return core.step


def time_steps(fn, n: int, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        out.append((time.perf_counter_ns() - t0) / n / 1000.0)
    return out


def hot_path(batch: int, nvtx: bool) -> dict:
    os.environ["VLLM_W2EXT_NVTX"] = "1" if nvtx else "0"
    from vllm_w2ext import config
    from vllm_w2ext.telemetry import pipeline
    config._current = None
    pipeline._pipeline = None
    so, _ = make_scheduler_output(batch, new=0)
    plain, hooked = build(False, so), build(True, so)
    rec = pipeline.recorder()
    for f in (plain, hooked):
        time_steps(f, 200, 1)
    base, inst = [], []
    for _ in range(7):                           # interleaved A/B
        base += time_steps(plain, 2000, 1)
        inst += time_steps(hooked, 2000, 1)
        rec.drain()
    per_step = statistics.median(inst) - statistics.median(base)
    return {"batch": batch, "nvtx": nvtx, "plain_us": round(statistics.median(base), 3),
            "instrumented_us": round(statistics.median(inst), 3), "added_us_per_step": round(per_step, 3),
            "added_us_spread": [round(min(inst) - max(base), 3), round(max(inst) - min(base), 3)]}


def export_path(batch: int, new: int, links: str) -> dict:
    os.environ["VLLM_W2EXT_STEP_LINKS"] = links
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from vllm_w2ext import config
    from vllm_w2ext.hooks.requests_index import Index, StepData
    from vllm_w2ext.telemetry import identity
    from vllm_w2ext.telemetry.otlp import to_readable
    from vllm_w2ext.telemetry.ranges import ENGINE, Range, new_span_id, new_trace_id
    config._current = None
    identity.resource(ENGINE)
    so, rids = make_scheduler_output(batch, new)
    n = 300
    idx = Index()
    t_fin = t_conv = t_enc = 0
    spans = []
    for i in range(n):
        for r in rids:     # every step brings `new` new requests (their contexts arrive with them)
            idx.headers.setdefault(r, (new_trace_id(), new_span_id()))
        if i:              # requests seen before are "cached" except the first `new` ones
            for r in rids[:new]:
                idx.reqs.pop(r, None)
        r = Range("engine.step", ENGINE, new_trace_id(), new_span_id(), 0, time.time_ns(), None, i + 1)
        r.end_ns = r.start_ns + 1000
        d = StepData(SimpleNamespace())
        d.batch = so
        r.data = d
        t0 = time.perf_counter_ns()
        idx.finalize_step(r)
        t1 = time.perf_counter_ns()
        spans.append(to_readable(r))
        t2 = time.perf_counter_ns()
        t_fin += t1 - t0
        t_conv += t2 - t1
    for i in range(0, n, 64):          # the SDK's BatchSpanProcessor encodes batches, not single spans
        t2 = time.perf_counter_ns()
        encode_spans(spans[i:i + 64])
        t_enc += time.perf_counter_ns() - t2
    return {"batch": batch, "new_per_step": new, "links_mode": links, "links_per_step": len(r.links),
            "finalize_us": round(t_fin / n / 1000, 1), "to_span_us": round(t_conv / n / 1000, 1),
            "otlp_encode_us": round(t_enc / n / 1000, 1),
            "total_us_per_step_span": round((t_fin + t_conv + t_enc) / n / 1000, 1)}


def simple_span_cost() -> dict:
    """Export-thread cost of one plain child span (schedule, update, worker spans...)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from vllm_w2ext.telemetry.otlp import to_readable
    from vllm_w2ext.telemetry.ranges import ENGINE, Range, new_span_id, new_trace_id
    n = 2000
    rs = []
    for i in range(n):
        r = Range("engine.schedule", ENGINE, new_trace_id(), new_span_id(), 1, 0, None, i)
        r.end_ns = 1000
        rs.append(r)
    t0 = time.perf_counter_ns()
    spans = [to_readable(r) for r in rs]
    encode_spans(spans)
    return {"us_per_child_span": round((time.perf_counter_ns() - t0) / n / 1000, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/cpu/hook_overhead.json")
    a = ap.parse_args()
    import vllm
    res = {
        "what": "per-step cost of vllm_w2ext instrumentation (see module docstring)",
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "cores": os.cpu_count(), "vllm": vllm.__version__},
        "hot_path": [hot_path(b, nv) for b in (1, 256) for nv in (False, True)],
        "export_thread": [export_path(b, new, links) for b, new in ((1, 0), (32, 1), (256, 2))
                          for links in ("boundary", "all")],
        "export_thread_child_span": simple_span_cost(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            res["machine"]["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
