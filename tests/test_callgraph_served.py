"""`vllm serve` (real vLLM CPU) with the plugin: HTTP requests carrying a W3C traceparent continue the
client's trace; EngineCore and worker spans of the same run hang under steps linked to the requests."""
from __future__ import annotations

import json
import urllib.request

import pytest
from callgraph_checks import check_processes, check_requests, check_steps, run_complete
from conftest import ROOT, clean_env
from support.vllm_server import tracebacks, vllm_serve

from vllm_w2ext.analysis.spans.tree import SpanSet

MAX_TOKENS = 5
CLIENT_TRACES = [("4bf92f3577b34da6a3ce929d0e0e%04x" % i, "00f067aa0ba9%04x" % i) for i in range(3)]


def complete(port: int, model: str, prompt: str, headers: dict | None = None) -> dict:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "ignore_eos": True,
                       "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def served(tiny_model, otlp_receiver, tmp_path_factory):
    otlp_receiver.clear()
    log = tmp_path_factory.mktemp("served") / "server.log"
    env = clean_env(VLLM_W2EXT="1", OTEL_SERVICE_NAME="w2ext-served", **otlp_receiver.env("grpc"))
    with vllm_serve(tiny_model, env, log, ROOT, "--max-num-seqs", "8") as port:
        answers = []
        for i, (tid, sid) in enumerate(CLIENT_TRACES):
            answers.append(complete(port, "tiny", f"t{10 + i} t{20 + i} t{30 + i}",
                                    {"traceparent": f"00-{tid}-{sid}-01"}))
        answers.append(complete(port, "tiny", "t40 t41"))           # no client context: a new trace
        # spans are exported while the server runs (not only at shutdown): wait for them, then stop
        # (front end, EngineCore and worker export from different processes: wait for both sides' request spans
        # and for the worker's spans of every step)
        spans = otlp_receiver.wait_for(run_complete(len(answers)), timeout=30)
    return answers, spans, log.read_text()


def test_served_requests_complete(served):
    answers, _, _ = served
    assert all(a["usage"]["completion_tokens"] == MAX_TOKENS for a in answers)


def test_served_tree_continues_client_trace(served):
    answers, spans, log = served
    ss = SpanSet(spans)
    check_processes(ss, "w2ext-served")
    check_steps(ss, links_mode="boundary")
    check_requests(ss, len(answers), MAX_TOKENS)
    reqs = ss.named("vllm.request")
    by_trace = {r.trace_id: r for r in reqs}
    for tid, sid in CLIENT_TRACES:
        r = by_trace[tid]                      # the server continued the client's trace ...
        assert r.parent_id == sid              # ... as a child of the client's span
        assert r.attrs["gen_ai.usage.prompt_tokens"] == 3
        eng = [e for e in ss.named("engine.request") if e.trace_id == tid]
        assert len(eng) == 1 and eng[0].parent_id == r.span_id   # EngineCore span in the same trace
    others = [r for r in reqs if r.trace_id not in dict(CLIENT_TRACES)]
    assert len(others) == 1 and others[0].parent_id == ""
    adds = [k for r in reqs for k in ss.kids(r) if k.name == "front.add_request"]
    assert len(adds) == len(reqs)
    assert ss.named("front.process_outputs")
    assert not tracebacks(log)
