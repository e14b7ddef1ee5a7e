"""Micro-benchmark: what the plugin costs vLLM's processes per engine step, with a breakdown.

One engine step's call sequence (EngineCore.step -> Scheduler.schedule -> executor.execute_model ->
Worker.execute_model -> runner forward -> sample_tokens -> Scheduler.update_from_output) on stand-in
classes with vLLM's method names, fed a real vLLM ``SchedulerOutput`` of N requests; the wrapped
methods are no-ops, so every microsecond measured is the plugin's. Each stand-in method is replaced by
the plugin's real hook runner (``HookRunner.bind``, as on vLLM's classes) with the real hook functions of
the tables. Path ``in_process`` leaves out the MultiprocExecutor hooks, as on the GPU at TP=1, where the worker
runs inside the EngineCore (UniProcExecutor, not hooked). Path ``front`` (alone in its run) is the front end's
offline iteration instead (LLMEngine.step -> OutputProcessor.process_outputs of N outputs), in its own process.

Per step, in the vLLM process (median of interleaved repetitions):
- ``hooks_us``: the engine thread's added time (runner + hook functions + recording), no export thread;
- ``recording_us``: of that, the recorder alone (begin/end of the step's ranges, its phase intervals and
  the step's facts);
- ``export_thread_cpu_us``: CPU time of the export thread handing the step's records to a real export
  process (take, pickle, write to the pipe); it holds the GIL for about this long;
- ``with_export_us``: the engine thread's added time while that export thread runs every 200 ms (hooks
  plus the GIL contention the export thread causes): the number the budget is about.

    python benchmarks/hook_overhead.py [--out FILE] [--batches 1,500] [--paths in_process,multiproc]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import shutil
import sys
import tempfile
import time
from concurrent.futures import Future

os.environ.setdefault("VLLM_W2EXT", "1")


def make_scheduler_output(n: int, new: int):
    """A real SchedulerOutput (vLLM 0.26-0.33 field sets) of ``n`` requests, ``new`` of them new."""
    from vllm.v1.core.sched import output as o
    rids = [f"req-{i}" for i in range(n)]
    new_reqs = []
    for r in rids[:new]:
        fields = {f.name for f in dataclasses.fields(o.NewRequestData)}
        kw = dict(req_id=r, prompt_token_ids=[1] * 16, sampling_params=None, pooling_params=None,
                  block_ids=([0],), num_computed_tokens=0, lora_request=None)
        kw.update({k: [] for k in ("mm_features", "mm_kwargs", "mm_hashes", "mm_positions") if k in fields})
        new_reqs.append(o.NewRequestData(**{k: v for k, v in kw.items() if k in fields}))
    cached = o.CachedRequestData.make_empty()
    cached.req_ids = rids[new:]
    cached.num_computed_tokens = [20] * (n - new)
    if hasattr(cached, "num_output_tokens"):
        cached.num_output_tokens = [4] * (n - new)
    nst = {r: (16 if i < new else 1) for i, r in enumerate(rids)}
    kw = dict(scheduled_new_reqs=new_reqs, scheduled_cached_reqs=cached, num_scheduled_tokens=nst,
              total_num_scheduled_tokens=sum(nst.values()), scheduled_spec_decode_tokens={},
              scheduled_encoder_inputs={}, num_common_prefix_blocks=[0], finished_req_ids=set(),
              free_encoder_mm_hashes=[])
    fields = {f.name: f for f in dataclasses.fields(o.SchedulerOutput)}
    for name, f in fields.items():          # required fields another vLLM version has
        if name not in kw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kw[name] = [] if "list" in str(f.type) else ({} if "dict" in str(f.type) else None)
    return o.SchedulerOutput(**{k: v for k, v in kw.items() if k in fields})


def stand_ins(so):
    """Classes with vLLM's method names and call order (sync step, V1 runner)."""
    done = Future()
    done.set_result(None)

    class Request:
        trace_headers = None
        arrival_time = 0.0
        num_prompt_tokens = 16
        num_output_tokens = 4

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
            self.running, self.waiting = [0] * len(so.num_scheduled_tokens), []
            self.requests = {r: Request() for r in so.num_scheduled_tokens}
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

    return EngineCore, Scheduler, Executor, Worker, Runner


HOOKED = {("EngineCore", "step"): "engine.step", ("Scheduler", "schedule"): "engine.schedule",
          ("Scheduler", "update_from_output"): "engine.update_from_output",
          ("Executor", "execute_model"): "engine.execute_model.MultiprocExecutor",
          ("Executor", "sample_tokens"): "engine.sample_tokens.MultiprocExecutor",
          ("Worker", "execute_model"): "worker.execute_model", ("Worker", "sample_tokens"): "worker.sample_tokens",
          ("Runner", "_model_forward"): "worker.forward_v1"}


# The executor hooks run only where workers are separate processes (MultiprocExecutor); on the GPU at
# TP=1 the worker runs inside the EngineCore (UniProcExecutor, not hooked). ``engine_only``: the EngineCore's own
# hooks alone (no executor or worker hooks), so that the in-process path less it is the worker hooks' share.
PATHS = {"multiproc": (), "in_process": ("Executor",), "engine_only": ("Executor", "Worker", "Runner")}
# Stand-in methods left unhooked on any path ("Class.method,...": a hook's marginal share, the path less it; a
# worker hook's ``pre`` and ``post`` that read what ``Worker.execute_model``'s left then find nothing)
SKIP = tuple(x for x in os.environ.get("HOOK_OVERHEAD_SKIP", "").split(",") if x)


def front_stand_ins(batch: int):
    """The front end's offline iteration (``LLMEngine.step`` -> ``OutputProcessor.process_outputs`` of one
    engine step's outputs), with vLLM 0.32's signatures; what vLLM does in them is left out."""
    outs = [None] * batch

    class OutputProcessor:
        def process_outputs(self, engine_core_outputs, engine_core_timestamp=None, iteration_stats=None,
                            weight_version=None):
            return None

    class LLMEngine:
        def __init__(self): self.output_processor = OutputProcessor()
        def step(self):
            self.output_processor.process_outputs(outs, engine_core_timestamp=0.0, iteration_stats=None,
                                                  weight_version=None)
            return []

    return LLMEngine, OutputProcessor


FRONT_HOOKED = {("LLMEngine", "step"): "front.engine_step",
                ("OutputProcessor", "process_outputs"): "front.process_outputs"}


def build(hooked: bool, so, path: str = "multiproc"):
    """The stand-in step, its methods attached to the real hook runners as the plugin attaches them
    (``wrapping.attach``), the step gate in use (``VLLM_W2EXT_SAMPLE`` switches the gated hooks off on
    light steps); trees from before those parts get their own way of attaching (before/after runs)."""
    from types import SimpleNamespace
    front = path == "front"          # so: the batch (outputs per front-end iteration)
    classes = {c.__name__: c for c in (front_stand_ins(so) if front else stand_ins(so))}
    table = FRONT_HOOKED if front else HOOKED
    if hooked:
        from vllm_w2ext import config
        from vllm_w2ext.hooks import all_hooks, runner as runner_mod
        by = {h.name: h for h in all_hooks()}
        # as plugin.register passes it (trees from before the gated front take no such argument)
        sampled = {"sampled": config.current().sample > 1} if "sampled" in runner_mod.HookRunner.__slots__ else {}
        runners = []
        for (cls, meth), hname in table.items():
            if cls in PATHS.get(path, ()) or f"{cls}.{meth}" in SKIP:
                continue
            c = classes[cls]
            runner = runner_mod.HookRunner(by[hname], **sampled)
            runners.append(runner)
            if hasattr(runner, "slot"):
                from vllm_w2ext.hooks.wrapping import attach
                attach(runner, SimpleNamespace(**{runner.spec.cls_name: c}))
            elif hasattr(runner, "bind"):
                setattr(c, meth, runner.bind(vars(c)[meth]))
            else:                                # trees before HookRunner.bind
                import wrapt
                setattr(c, meth, wrapt.FunctionWrapper(vars(c)[meth], runner.sync))
        if hasattr(runner_mod, "GATE"):
            runner_mod.GATE.use(runners)
        try:                                     # bounds hooks (trees from the thirty-fifth session on)
            from vllm_w2ext.hooks import bounds
            bounds.MODE.use(runners)
        except ImportError:
            pass
    return classes["LLMEngine" if front else "EngineCore"]().step


def time_steps(fn, n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n / 1000.0


def recording_only(so, n: int) -> float:
    """The recorder alone: the ranges one step records, plus reading the step's facts."""
    from vllm_w2ext.steps.facts import read_step
    from vllm_w2ext.telemetry import pipeline
    rec = pipeline.recorder()
    sched = stand_ins(so)[1]()

    if not hasattr(rec, "phase_begin"):          # trees before phase intervals: phases were ranges
        def phase(name, role, tid, sid, attrs=None):
            rec.end(rec.begin(name, role, parent=(tid, sid), step=1, attrs=attrs))
    else:
        def phase(name, role, tid, sid, attrs=None):
            rec.phase_end(rec.phase_begin(name, role, 1), name, role, tid, sid, 1, None, attrs)

    def step():
        st = rec.begin("engine.step", "engine_core", step=1)
        tid, sid = st[2], st[3]
        phase("engine.schedule", "engine_core", tid, sid)
        read_step(so, sched.requests, 1, 0, False)
        ex = rec.begin("engine.execute_model", "engine_core", parent=(tid, sid), nested=False)
        w = rec.begin("worker.execute_model", "worker", parent=(tid, sid), step=1, attrs={"n": 1})
        phase("worker.forward", "worker", tid, w[3])
        rec.end(w)
        rec.end(ex)
        sa = rec.begin("engine.sample_tokens", "engine_core", parent=(tid, sid), nested=False)
        phase("worker.sample_tokens", "worker", tid, sid)
        rec.end(sa)
        phase("engine.update_from_output", "engine_core", tid, sid, {"b": 1})
        rec.end(st)
    t = time_steps(step, n)
    rec.take()
    return t


def measure(batch: int, reps: int, n: int, path: str) -> dict:
    from vllm_w2ext.hooks.engine_core import S as engine_state
    from vllm_w2ext.telemetry import pipeline
    so = batch if path == "front" else make_scheduler_output(batch, new=0)
    plain, hooked = build(False, so, path), build(True, so, path)
    p = pipeline.get()
    stop_thread(p)
    for f in (plain, hooked):
        time_steps(f, 300)
    p.recorder.take()
    base, inst, exp, cpu = [], [], [], []
    for _ in range(reps):                        # interleaved: plain, hooked, hooked + export thread
        base.append(time_steps(plain, n))
        inst.append(time_steps(hooked, n))
        p.recorder.take()
        engine_state.finished = []
        p.export_cpu_s = 0.0
        t = start_thread(p)
        exp.append(time_steps(hooked, n))
        stop_thread(p, t)
        p.flush_once()
        cpu.append(p.export_cpu_s / n * 1e6)
    med = statistics.median
    rec = None if path == "front" else round(med(recording_only(so, n) for _ in range(max(3, reps // 2))), 2)
    return {"path": path, "batch": batch, "plain_us": round(med(base), 3), "hooks_us": round(med(inst) - med(base), 2),
            "recording_us": rec, "export_thread_cpu_us": round(med(cpu), 2),
            "with_export_us": round(med(exp) - med(base), 2),
            "with_export_us_range": [round(min(exp) - med(base), 2), round(max(exp) - med(base), 2)]}


def start_thread(p):
    import threading
    p._stop.clear()
    t = threading.Thread(target=p._run, name="w2ext-export", daemon=True)
    t.start()
    return t


def stop_thread(p, t=None):
    p._stop.set()
    p._wake.set()
    (t or p._thread).join()
    p._wake.clear()


def machine() -> dict:
    import vllm
    m = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
         "cores": os.cpu_count(), "vllm": vllm.__version__}
    try:
        with open("/proc/cpuinfo") as f:
            m["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results/cpu/hook_overhead.json")
    ap.add_argument("--batches", default="1,500")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--paths", default="in_process,multiproc",
                    help=f"of {sorted(PATHS)}, or front alone (the process then takes the front end's role)")
    a = ap.parse_args()
    if "front" in a.paths.split(",") and a.paths != "front":
        ap.error("--paths front runs alone: the front end's hooks give the process the front end's role")
    # Every exporter's work goes to the export process (a real one: trace file, metrics snapshots); NVTX
    # auto (no tool attached: off), as in a production run.
    tmp = tempfile.mkdtemp(prefix="w2ext-hook-overhead-")
    os.environ.update(VLLM_W2EXT_TRACE_DIR=os.path.join(tmp, "traces"), VLLM_W2EXT_METRICS_DIR=os.path.join(tmp, "m"))
    os.makedirs(os.environ["VLLM_W2EXT_METRICS_DIR"], exist_ok=True)
    res = {"what": "per-step cost of vllm_w2ext in vLLM's process (see the module docstring)",
           "machine": machine(), "argv": sys.argv[1:],
           "per_step": [measure(int(b), a.reps, a.steps, path) for path in a.paths.split(",")
                        for b in a.batches.split(",")]}
    from vllm_w2ext.telemetry import pipeline
    pipeline.get().shutdown()
    shutil.rmtree(tmp, ignore_errors=True)     # the trace file and snapshots are not read: the cost is the measure
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
