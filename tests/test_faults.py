"""A fault inside the plugin never fails a request: with every hook raising on its first call
(VLLM_W2EXT_FAULT_INJECT, all hooks but the one that starts the metrics endpoint, which the test reads),
a real offline vLLM run completes with correct outputs; each hook that ran disables itself, says so in
exactly one log line, and counts one error in the metrics."""
from __future__ import annotations

import re

import pytest
from conftest import clean_env, concurrently, run_offline
from support.prometheus import metric_sum
from support.vllm_server import free_port

from vllm_w2ext.hooks import all_hooks

N, MAX_TOKENS = 4, 6


def _faulty_hooks_run(tiny_model, tmp):
    port = free_port()
    faulty = [h.name for h in all_hooks() if h.name != "front.llm_engine_init"]
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_FAULT_INJECT=",".join(faulty), VLLM_W2EXT_METRICS_PORT=str(port))
    return run_offline(tiny_model, env, tmp / "out.json", with_log=True, prompts=N, max_tokens=MAX_TOKENS,
                       metrics_port=port, phases=[{"rounds": 1}], scrape_steps=False,
                       settle_s=5.0)        # no step counter moves here: give every fault time to arrive


def _busy_metrics_port_run(tiny_model, tmp, port):
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_METRICS_PORT=str(port))
    return run_offline(tiny_model, env, tmp / "out.json", with_log=True, prompts=2, max_tokens=4)


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    """Both runs side by side (independent, and nothing here depends on timing). The busy port is
    taken before either starts, so the other run's free port cannot be it."""
    import socket
    a, b = tmp_path_factory.mktemp("faulty-hooks"), tmp_path_factory.mktemp("busy-port")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        faulty, in_use = concurrently(lambda: _faulty_hooks_run(tiny_model, a),
                                      lambda: _busy_metrics_port_run(tiny_model, b, port))
    finally:
        busy.close()
    return faulty, (port, *in_use)


def test_every_hook_faulting_costs_no_request(runs):
    result, log = runs[0]
    assert result["tokens"] == [MAX_TOKENS] * N
    lines = re.findall(r"vllm_w2ext: hook (\S+) \(.*\) raised InjectedFault", log)
    # the hooks that ran in the three processes, each exactly once
    assert len(lines) == len(set(lines)) >= 12, lines
    for hook in ("engine.step", "engine.schedule", "worker.execute_model", "front.request_start",
                 "front.process_outputs"):
        assert hook in lines
    text = result["phases"][0]["metrics"]
    assert "front.llm_engine_init" not in lines
    for hook in set(lines) - {"engine.shutdown", "worker.shutdown"}:   # those run after the last scrape
        errors = metric_sum(text, "vllm_w2ext_hook_errors_total", hook=hook)
        assert errors == 1, (hook, errors)


def test_metrics_port_in_use_is_a_logged_fallback(runs):
    port, result, log = runs[1]
    assert result["tokens"] == [4, 4]
    lines = [line for line in log.splitlines() if f"VLLM_W2EXT_METRICS_PORT={port}" in line]
    assert len(lines) == 1 and "metrics endpoint is off for this run" in lines[0]
