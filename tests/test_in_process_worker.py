"""The worker in the EngineCore's thread (the GPU's TP=1 layout: ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and the
``uni`` executor on the CPU build): after the first step its hooks run as bounds hooks (``hooks/bounds.py``), the
engine step's post takes their bounds raw and the export side makes the worker's spans of them. Known answer: the
spans the worker's own hooks record in the other layouts (``callgraph_checks.check_steps``: every executed step
with its execution, forward and sample under it, the execution's token count the step's), one process for all
three roles, the gap measured before every execution that follows an executed step."""
from __future__ import annotations

from callgraph_checks import IN_PROCESS_STEP_CHILDREN, check_requests, check_steps, run_complete
from conftest import clean_env, run_offline

from vllm_w2ext.analysis.spans.tree import SpanSet

N, MAX_TOKENS = 4, 8


def test_the_worker_on_the_engine_thread_is_read_from_bounds(tiny_model, otlp_receiver, tmp_path):
    otlp_receiver.clear()
    env = clean_env(VLLM_W2EXT="1", OTEL_SERVICE_NAME="w2ext-test-in-process", VLLM_ENABLE_V1_MULTIPROCESSING="0",
                    **otlp_receiver.env("grpc"))
    result = run_offline(tiny_model, env, tmp_path / "out.json", prompts=N, max_tokens=MAX_TOKENS,
                         distributed_executor_backend="uni")
    assert result["tokens"] == [MAX_TOKENS] * N
    assert result["bounds"] == {"in_process": True, "on": [   # the V2 runner's launch hook too (not attached here)
        "engine.schedule", "engine.update_from_output", "worker.execute_model", "worker.forward_launch",
        "worker.forward_v1", "worker.sample_tokens"]}
    ss = SpanSet(otlp_receiver.wait_for(run_complete(N), timeout=30))
    assert len({s.pid for s in ss.spans}) == 1
    executed = check_steps(ss, links_mode="boundary", children=IN_PROCESS_STEP_CHILDREN)
    check_requests(ss, N, MAX_TOKENS)
    assert len(executed) >= MAX_TOKENS
    by_step = {s.step: s for s in executed}
    for st in executed:
        wexec = next(k for k in ss.kids(st) if k.name == "worker.execute_model")
        sample = next(k for k in ss.kids(st) if k.name == "worker.sample_tokens")
        fwd = ss.kids(wexec)[0]
        assert wexec.step == sample.step == fwd.step == st.step and wexec.role == "worker"
        assert st.start_ns <= wexec.start_ns <= fwd.start_ns <= fwd.end_ns <= wexec.end_ns <= sample.start_ns \
            <= sample.end_ns <= st.end_ns
        gap = "vllm.gap.cpu_s" in wexec.attrs
        assert gap is (st.step - 1 in by_step), (st.step, sorted(wexec.attrs))
