"""The EngineCore's hooks (step, schedule, free_request; not the runner around them) in a hot loop at batch 64
with VLLM_W2EXT_SAMPLE=64, on the stand-in scheduler outputs of tests/unit/test_sampling_steps.py: a steady
decode step (light, counted) and a step in which two requests finish (recorded bare). Run from the
repository root: python benchmarks/results/cpu/bare_steps_churn/hot_loop.py (output: hot_loop.txt)."""
import sys, time
sys.path.insert(0, "tests/unit")
from types import SimpleNamespace as NS
from vllm_w2ext.hooks import engine_core
from vllm_w2ext.telemetry.recording import Recorder
import test_sampling_steps as t

st = engine_core._State(); st.finished, st.identity_done, st.sample = [], True, 64
rec = Recorder(1 << 22, None)
engine_core.S = st
engine_core.recorder = lambda: rec
ids = [f"r{i}" for i in range(64)]
reqs = {r: NS(num_prompt_tokens=12, trace_headers=None, arrival_time=0.0) for r in ids}
sched = NS(requests=reqs, running=list(range(64)), waiting=[])
steady = t.output(decoding=ids)
fin = t.output(decoding=ids)
E = engine_core
def step(so, freed):
    s = E._step_pre(None, (), {})
    x = E._schedule_pre(sched, (), {})
    E._schedule_post(x, so, None)
    for rid in freed:
        E._free_request_pre(sched, (NS(request_id=rid, status=NS(name="FINISHED_LENGTH_CAPPED"), num_output_tokens=5),), {})
    E._step_post(s, (None, True), None)
for name, so, freed in (("steady light", steady, ()), ("finish 2 (bare)", fin, ("r1", "r2"))):
    n = 20000
    for _ in range(1000): step(so, freed)
    t0 = time.perf_counter_ns()
    for _ in range(n): step(so, freed)
    dt = (time.perf_counter_ns() - t0) / n / 1e3
    rec.take()
    print(f"{name}: {dt:.2f} us per step (all engine hooks, no runner)")
