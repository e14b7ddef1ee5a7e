"""Offline LLM.generate on real vLLM (CPU) with the plugin: spans from all three processes reach a
real OTLP receiver over gRPC and over HTTP/protobuf, form the documented tree, and match the NVTX
ranges recorded through an NVTX injection library."""
from __future__ import annotations

from collections import Counter

import pytest
from callgraph_checks import check_processes, check_requests, check_steps, run_complete
from conftest import clean_env, concurrently, run_offline
from support import nvtx_recorder

from vllm_w2ext.analysis.spans.tree import SpanSet
from vllm_w2ext.receiver import OTLPReceiver

N, MAX_TOKENS = 6, 6


CHUNK = 16       # the chunked run's token budget per step: its prompts (40 tokens and more) take three steps or more


def _run(tiny_model, rx, tmp, protocol, params=None, service=None, **extra_env):
    rx.clear()
    env = clean_env(VLLM_W2EXT="1", OTEL_SERVICE_NAME=service or f"w2ext-test-{protocol}", **rx.env(protocol),
                    **extra_env)
    result = run_offline(tiny_model, env, tmp / "out.json", prompts=N, max_tokens=MAX_TOKENS, **(params or {}))
    spans = rx.wait_for(run_complete(N), timeout=30)
    return result, spans


@pytest.fixture(scope="module")
def runs(tiny_model, otlp_receiver, nvtx_recorder_lib, tmp_path_factory):
    """The gRPC run (NVTX recorded, every step linked), the HTTP/protobuf run and the chunked-prefill run (gRPC,
    every step linked, a token budget of CHUNK per step), side by side, each exporting to its own receiver: the
    checks are on structure and counts only, not on timing."""
    grpc_tmp, http_tmp, chunk_tmp = (tmp_path_factory.mktemp(f"offline-{x}") for x in ("grpc", "http", "chunked"))
    rec_file = grpc_tmp / "nvtx.tsv"
    http_rx, chunk_rx = OTLPReceiver().start(), OTLPReceiver().start()
    try:
        grpc, http, chunked = concurrently(
            lambda: _run(tiny_model, otlp_receiver, grpc_tmp, "grpc", VLLM_W2EXT_STEP_LINKS="all",
                         **nvtx_recorder.recorder_env(nvtx_recorder_lib, rec_file)),
            lambda: _run(tiny_model, http_rx, http_tmp, "http"),
            lambda: _run(tiny_model, chunk_rx, chunk_tmp, "grpc", {"max_num_batched_tokens": CHUNK, "prompt_words": 40},
                         "w2ext-test-chunked", VLLM_W2EXT_STEP_LINKS="all"))
    finally:
        http_rx.stop()
        chunk_rx.stop()
    return (*grpc, nvtx_recorder.parse_records(rec_file)), http, chunked


@pytest.fixture(scope="module")
def grpc_run(runs):
    return runs[0]


@pytest.fixture(scope="module")
def http_run(runs):
    return runs[1]


@pytest.fixture(scope="module")
def chunked_run(runs):
    return runs[2]


def test_chunked_prefill_counts_and_first_tokens(chunked_run):
    """Planted: a token budget of CHUNK per step, below every prompt's length, so each prompt is prefilled in
    chunks over several steps while others decode. Known in advance: the prefill tokens of all steps add up to
    the prompts' tokens (counted by the front end), the decode tokens to N x (MAX_TOKENS - 1); no step schedules
    more than CHUNK; and each request's first token comes at the end of the step that completes its prompt,
    after which exactly MAX_TOKENS - 1 steps schedule it (one decode token each)."""
    result, spans = chunked_run
    assert result["tokens"] == [MAX_TOKENS] * N
    ss = SpanSet(spans)
    executed = [s for s in ss.steps() if s.attrs.get("vllm.step.model_executed")]
    prompts = {(r.trace_id, r.span_id): r.attrs["gen_ai.usage.prompt_tokens"] for r in ss.named("vllm.request")}
    assert len(prompts) == N and min(prompts.values()) > CHUNK
    pre = [s.attrs["vllm.batch.prefill_tokens"] for s in executed]
    dec = [s.attrs["vllm.batch.decode_tokens"] for s in executed]
    assert sum(pre) == sum(prompts.values()) and sum(dec) == N * (MAX_TOKENS - 1)
    assert max(p + d for p, d in zip(pre, dec)) <= CHUNK
    assert sum(1 for p, d in zip(pre, dec) if p and d) >= 1, "no step mixed a prefill chunk with decodes"
    eng = {e.parent_id: e for e in ss.named("engine.request")}
    for key, prompt in prompts.items():
        e = eng[key[1]]
        linking = [s for s in executed if key in {tuple(x) for x in s.links}]     # the steps scheduling it
        first_token_end = e.start_ns + round(e.attrs["vllm.request.prefill_s"] * 1e9)
        at = min(range(len(linking)), key=lambda i: abs(linking[i].end_ns - first_token_end))
        assert abs(linking[at].end_ns - first_token_end) < 1000, "first token not at a step's end"
        assert at + 1 >= -(-prompt // CHUNK), "a prompt completed in fewer steps than its chunks"
        assert len(linking) - at - 1 == MAX_TOKENS - 1, (prompt, [s.step for s in linking], linking[at].step)


def test_grpc_tree(grpc_run):
    result, spans, _ = grpc_run
    assert result["tokens"] == [MAX_TOKENS] * N
    assert {s.transport for s in spans} == {"grpc"}
    ss = SpanSet(spans)
    check_processes(ss, "w2ext-test-grpc")
    check_steps(ss, links_mode="all")
    check_requests(ss, N, MAX_TOKENS)
    gen = ss.named("llm.generate")
    assert len(gen) == 1 and gen[0].attrs["vllm.num_outputs"] == N
    for r in ss.named("vllm.request"):
        assert r.parent_id == "", "offline request spans are roots"
        assert (gen[0].trace_id, gen[0].span_id) in {tuple(x) for x in r.links}
        adds = [k for k in ss.kids(r) if k.name == "front.add_request"]
        assert len(adds) == 1 and adds[0].start_ns == r.start_ns
    steps = {s.span_id for s in ss.named("front.step")}
    outs = ss.named("front.process_outputs")
    assert steps and outs and all(o.parent_id in steps for o in outs), "process_outputs inside its front.step"


def test_http_protobuf_tree(http_run):
    result, spans = http_run
    assert {s.transport for s in spans} == {"http"}
    ss = SpanSet(spans)
    check_processes(ss, "w2ext-test-http")
    check_steps(ss, links_mode="boundary")
    check_requests(ss, N, MAX_TOKENS)
    # boundary links: each request is linked exactly once, from its first step
    links = Counter(tuple(x) for s in ss.steps() for x in s.links)
    assert sorted(links.values()) == [1] * N


def test_nvtx_ranges_match_spans(grpc_run):
    _, spans, events = grpc_run
    ss = SpanSet(spans)
    ranges = [r for r in nvtx_recorder.pair_ranges(events) if r.domain == "vllm_w2ext"]
    assert ranges and all(r.end_ns is not None for r in ranges)
    # every span recorded live is an NVTX range of the same name; spans assembled after the fact
    # (front.add_request, engine.request) have no range
    live = Counter(s.name for s in ss.spans if s.name not in ("front.add_request", "engine.request"))
    assert Counter(r.name for r in ranges) == live
    by_name = {}
    for r in ranges:
        by_name.setdefault(r.name, []).append(r)
    cats = {"frontend": 1, "engine_core": 2, "worker": 3}
    for s in ss.spans:
        if s.name in by_name:
            assert {r.category for r in by_name[s.name]} == {cats[s.role]}, s.name
    # nesting on the thread, as in the span tree
    assert {r.parent for r in by_name["engine.schedule"]} == {"engine.step"}
    assert {r.parent for r in by_name["engine.update_from_output"]} == {"engine.step"}
    assert {r.parent for r in by_name["worker.forward"]} == {"worker.execute_model"}
    # step ids travel as NVTX payloads, engine and worker alike
    span_steps = sorted(s.step for s in ss.steps())
    assert sorted(r.payload for r in by_name["engine.step"]) == span_steps
    worker_steps = sorted(s.step for s in ss.named("worker.execute_model"))
    assert sorted(r.payload for r in by_name["worker.execute_model"]) == worker_steps
    # async-ending ranges are process-wide start/end ranges
    assert {r.kind for r in by_name["vllm.request"]} == {"start"}
    assert {r.kind for r in by_name["engine.step"]} == {"push"}
