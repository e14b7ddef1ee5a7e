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


def _run(tiny_model, rx, tmp, protocol, **extra_env):
    rx.clear()
    env = clean_env(VLLM_W2EXT="1", OTEL_SERVICE_NAME=f"w2ext-test-{protocol}", **rx.env(protocol), **extra_env)
    result = run_offline(tiny_model, env, tmp / "out.json", prompts=N, max_tokens=MAX_TOKENS)
    spans = rx.wait_for(run_complete(N), timeout=30)
    return result, spans


@pytest.fixture(scope="module")
def runs(tiny_model, otlp_receiver, nvtx_recorder_lib, tmp_path_factory):
    """The gRPC run (NVTX recorded, every step linked) and the HTTP/protobuf run, side by side, each
    exporting to its own receiver: the checks are on structure only, not on timing."""
    grpc_tmp, http_tmp = tmp_path_factory.mktemp("offline-grpc"), tmp_path_factory.mktemp("offline-http")
    rec_file = grpc_tmp / "nvtx.tsv"
    http_rx = OTLPReceiver().start()
    try:
        grpc, http = concurrently(
            lambda: _run(tiny_model, otlp_receiver, grpc_tmp, "grpc", VLLM_W2EXT_STEP_LINKS="all",
                         **nvtx_recorder.recorder_env(nvtx_recorder_lib, rec_file)),
            lambda: _run(tiny_model, http_rx, http_tmp, "http"))
    finally:
        http_rx.stop()
    return (*grpc, nvtx_recorder.parse_records(rec_file)), http


@pytest.fixture(scope="module")
def grpc_run(runs):
    return runs[0]


@pytest.fixture(scope="module")
def http_run(runs):
    return runs[1]


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
