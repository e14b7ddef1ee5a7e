"""Assertions on the span tree shared by the offline and served call-graph tests."""
from __future__ import annotations

from collections import Counter

from vllm_w2ext.analysis.spans.tree import SpanSet

STEP_CHILDREN = {"engine.schedule", "engine.execute_model", "engine.sample_tokens", "engine.update_from_output"}
# the executor's dispatch spans are those of MultiprocExecutor only (the worker in processes of its own)
IN_PROCESS_STEP_CHILDREN = STEP_CHILDREN - {"engine.execute_model", "engine.sample_tokens"}


def check_processes(ss: SpanSet, service: str) -> dict[str, int]:
    pids = {}
    for s in ss.spans:
        assert s.resource["service.name"] == service
        assert s.resource["vllm.version"].startswith("0.32")
        assert s.resource["vllm.process_role"] in ("frontend", "engine_core", "worker")
        pids.setdefault(s.role, set()).add(s.pid)
    assert set(pids) == {"frontend", "engine_core", "worker"}, pids
    assert all(len(v) == 1 for v in pids.values()), pids
    one = {r: next(iter(v)) for r, v in pids.items()}
    assert len(set(one.values())) == 3, f"vLLM 0.32 CPU runs front, EngineCore and worker apart: {one}"
    eng = ss.named("engine.step")[0].resource
    assert eng["vllm.engine_index"] == 0
    wrk = ss.named("worker.execute_model")[0].resource
    assert wrk["vllm.rank"] == 0 and wrk["vllm.tp_rank"] == 0
    return one


def workers_caught_up(spans) -> bool:
    """Has every step that ran the model its worker spans yet? The worker's export process sends them a
    little after the EngineCore's sends the step: wait for this, not for the first worker span."""
    ss = SpanSet(spans)
    executed = [s for s in ss.steps() if s.attrs.get("vllm.step.model_executed")]
    return bool(executed) and all(any(k.name == "worker.sample_tokens" for k in ss.kids(s)) for s in executed)


def run_complete(requests: int):
    """A wait predicate for a run of ``requests`` requests (offline or served): both sides' request spans of every
    request, and the worker's spans of every step that ran the model (the front end, the EngineCore and the
    worker export from three processes; one role's first span says nothing of the others' last)."""
    def done(spans) -> bool:
        return len([x for x in spans if x.name == "engine.request"]) >= requests and \
            len([x for x in spans if x.name == "vllm.request"]) >= requests and workers_caught_up(spans)
    return done


def check_steps(ss: SpanSet, links_mode: str = "all", children: set = STEP_CHILDREN) -> list:
    """Every executed step with ``children`` (the EngineCore's), its worker's spans under it; the executed steps."""
    steps = ss.steps()
    assert steps, "no engine.step spans"
    ids = [s.step for s in steps]
    assert ids == sorted(set(ids)) and ids[0] >= 1
    requests = {(r.trace_id, r.span_id): r for r in ss.named("vllm.request")}
    executed = [s for s in steps if s.attrs.get("vllm.step.model_executed")]
    assert executed
    for st in executed:
        kids = [k for k in ss.kids(st) if k.role == "engine_core"]
        names = Counter(k.name for k in kids)
        assert children <= set(names), (st.step, names)
        for k in kids:
            assert k.step == st.step, (st.step, k.name, k.step, k.attrs)
        sched = next(k for k in kids if k.name == "engine.schedule")
        upd = next(k for k in kids if k.name == "engine.update_from_output")
        assert st.start_ns <= sched.start_ns < sched.end_ns <= upd.start_ns < upd.end_ns <= st.end_ns
        a = st.attrs
        assert a["vllm.batch.num_reqs"] >= 1
        assert a["vllm.batch.prefill_tokens"] + a["vllm.batch.decode_tokens"] >= a["vllm.batch.num_reqs"]
        assert a["vllm.scheduler.running"] >= 1 and "vllm.batch.preemptions" in a
        linked = [requests.get(tuple(link)) for link in st.links]
        assert all(x is not None for x in linked), ("a step links a span that is not a request span",
                                                    [(tuple(link), ss.by_id.get(tuple(link)))
                                                     for link in st.links if tuple(link) not in requests])
        if links_mode == "all":
            assert len(st.links) == a["vllm.batch.num_reqs"]
        # worker spans of this step live in the worker process and hang under this step span
        wk = [k for k in ss.kids(st) if k.role == "worker"]
        wnames = {k.name for k in wk}
        assert {"worker.execute_model", "worker.sample_tokens"} <= wnames, (st.step, wnames)
        wexec = next(k for k in wk if k.name == "worker.execute_model")
        assert [g.name for g in ss.kids(wexec)] == ["worker.forward"]
        assert wexec.attrs["vllm.worker.num_tokens"] == a["vllm.batch.prefill_tokens"] + a["vllm.batch.decode_tokens"]
    return executed


def check_requests(ss: SpanSet, n: int, max_tokens: int) -> None:
    reqs = ss.named("vllm.request")
    assert len(reqs) == n
    eng_reqs = {e.parent_id: e for e in ss.named("engine.request")}
    steps = {s.step: s for s in ss.steps()}
    prompt_total = 0
    for r in reqs:
        assert r.role == "frontend" and r.attrs["vllm.request.id"]
        assert r.attrs["gen_ai.usage.completion_tokens"] == max_tokens
        prompt_total += r.attrs["gen_ai.usage.prompt_tokens"]
        # request -> its steps: the engine-side child span names and links its first and last step
        e = eng_reqs[r.span_id]
        assert e.trace_id == r.trace_id and e.role == "engine_core"
        assert e.attrs["vllm.request.id"] == r.attrs["vllm.request.id"]
        first, last = e.attrs["vllm.request.first_step"], e.attrs["vllm.request.last_step"]
        assert e.attrs["vllm.request.num_steps"] == max_tokens        # 1 prefill + max_tokens-1 decodes
        link_targets = {tuple(x) for x in e.links}
        assert (steps[first].trace_id, steps[first].span_id) in link_targets
        assert (steps[last].trace_id, steps[last].span_id) in link_targets
        # step -> request: the step where it was first scheduled links this request span
        assert (r.trace_id, r.span_id) in {tuple(x) for x in steps[first].links}
        assert r.start_ns <= steps[first].start_ns and steps[last].end_ns <= r.end_ns
    executed = [s for s in ss.steps() if s.attrs.get("vllm.step.model_executed")]
    assert sum(s.attrs["vllm.batch.prefill_tokens"] for s in executed) == prompt_total
    assert sum(s.attrs["vllm.batch.decode_tokens"] for s in executed) == n * (max_tokens - 1)
