"""VLLM_W2EXT_SAMPLE on a real offline vLLM run, with answers known in advance: one request of
``TOKENS`` output tokens, generated twice (ignore_eos), so vLLM runs exactly 2 x TOKENS scheduling steps,
the first of each a prefill of the prompt and the rest one decode token each.

With sampling on, the EngineCore records two consecutive steps in every N (and every step that changes
a request, as a bare step span) and only counts the others: the step and token counters must still be exact,
each request's span complete (its steps, tokens, first token), the workers must record exactly the pairs,
the second step of each pair must carry its scheduler gap and device idle, and explain must say what
share of the steps it saw."""
from __future__ import annotations

import re

import pytest
from conftest import clean_env, run_offline

from vllm_w2ext.analysis.explain.report import explain
from vllm_w2ext.analysis.explain.timeline import load
from vllm_w2ext.analysis.readers.pftrace import read_span_file
from vllm_w2ext.lab import free_port
from vllm_w2ext.steps.facts import sampled_out
from vllm_w2ext.vocab import TRACE_FILE_GLOB, Attr, Span

# Steps 1-45 serve the first request; the second one's 45 steps follow an empty step or two. The first
# request's finish (step 45), the second one's arrival and its finish fall outside the pairs (steps n with
# n % 8 in (0, 1)): they are recorded as bare step spans.
EVERY, TOKENS, RUNS = 8, 45, 2


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def sampled_run(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sampled")
    port = free_port()
    env = clean_env(VLLM_W2EXT="1", VLLM_W2EXT_SAMPLE=str(EVERY), VLLM_W2EXT_TRACE_DIR=str(tmp / "traces"),
                    VLLM_W2EXT_METRICS_PORT=str(port), VLLM_W2EXT_METRICS_INTERVAL_MS="200")
    result = run_offline(tiny_model, env, tmp / "out.json", prompts=1, max_tokens=TOKENS, metrics_port=port,
                         phases=[{"rounds": 1}])
    return result, tmp / "traces"


def test_counters_exact_although_most_steps_are_not_recorded(sampled_run):
    result, traces = sampled_run
    text = result["phases"][0]["metrics"]
    tl = load(str(traces))
    recorded = [s for ss in tl.engine_steps.values() for s in ss]
    executed = [s for s in recorded if s.args.get(Attr.MODEL_EXECUTED)]
    assert len(executed) < RUNS * TOKENS // 2                      # most steps were only counted
    assert _metric(text, "vllm_w2ext_engine_steps_total", executed="true") == RUNS * TOKENS
    assert _metric(text, "vllm_w2ext_batch_tokens_total", kind="decode") == RUNS * (TOKENS - 1)
    prompt = [r.args[Attr.REQUEST_PROMPT_TOKENS] for _, r in tl.requests]
    assert _metric(text, "vllm_w2ext_batch_tokens_total", kind="prefill") == sum(prompt)
    assert all(s.args.get(Attr.SAMPLE_EVERY) == EVERY for s in recorded)


def test_request_spans_complete(sampled_run):
    _, traces = sampled_run
    tl = load(str(traces))
    assert len(tl.requests) == RUNS
    for _, r in tl.requests:
        assert r.args[Attr.NUM_STEPS] == TOKENS                    # light steps counted into its steps
        assert r.args[Attr.OUTPUT_TOKENS] == TOKENS
        assert r.args[Attr.FINISH_REASON] == "length"
        assert r.args[Attr.PREFILL_S] > 0 and r.args[Attr.DECODE_S] > 0


def test_request_changes_off_the_pairs_are_bare_steps(sampled_run):
    _, traces = sampled_run
    tl = load(str(traces))
    recorded = {s.step for ss in tl.engine_steps.values() for s in ss}
    by_workers = {e.step for exs in tl.executions.values() for e in exs}
    bare = {k for k in recorded if sampled_out(k, EVERY)}
    assert TOKENS in bare and len(bare) == 3, sorted(recorded)     # a finish, an arrival, a finish
    assert not bare & by_workers                                   # the EngineCore's span alone


def test_workers_record_the_recorded_steps_and_measure_pairs(sampled_run):
    _, traces = sampled_run
    tl = load(str(traces))
    recorded = {s.step for ss in tl.engine_steps.values() for s in ss}
    steps = {s.step for ss in tl.engine_steps.values() for s in ss if s.args.get(Attr.MODEL_EXECUTED)}
    execs = sorted((e for exs in tl.executions.values() for e in exs), key=lambda e: e.step)
    pairs = {k for k in steps if not sampled_out(k, EVERY)}        # two in every N; the rest bare or counted
    assert {e.step for e in execs} == pairs                        # the decision travelled on the stamp
    assert all(e.busy_s is not None for e in execs)

    def after_recorded(i: int) -> bool:
        """Every step since the previous recorded execution was recorded too (none only counted)."""
        return i > 0 and set(range(execs[i - 1].step + 1, execs[i].step)) <= recorded

    measured = [after_recorded(i) for i in range(len(execs))]
    assert sum(measured) >= RUNS * TOKENS // EVERY - RUNS          # the second step of (nearly) every pair
    for e, ok in zip(execs, measured):
        if not ok:                                                 # nothing measured across unrecorded steps
            assert Attr.GAP_CPU not in e.slice.args and e.idle_s == 0 and not e.causes, e.step
            assert not e.idle_known or e is execs[0], e.step           # and marked so (not a zero idle)
    assert all(Attr.GAP_CPU in e.slice.args for e, ok in zip(execs, measured) if ok)
    assert any(e.idle_s > 0 for e in execs)


def test_front_end_records_the_recorded_steps_outputs_and_the_finishes(sampled_run):
    """Offline, OutputProcessor.process_outputs is recorded inside each recorded front.step and in the calls where
    a request finishes (RUNS of them, in or out of a recorded step); the calls only counted ride on the next
    recorded one, so together they are every call: one per engine step that made a token, at least."""
    _, traces = sampled_run
    slices = [s for f in sorted(traces.glob(TRACE_FILE_GLOB)) for s in read_span_file(str(f)).slices]
    outs = [s for s in slices if s.name == Span.PROCESS_OUTPUTS]
    steps = [s for s in slices if s.name == Span.FRONT_STEP]
    inside = [o for o in outs if any(st.start_ns <= o.start_ns and o.end_ns <= st.end_ns for st in steps)]
    assert len(inside) == len(steps) > 0
    assert len(outs) - len(inside) <= RUNS
    calls = len(outs) + sum(o.args.get(Attr.SKIPPED_CALLS, 0) for o in outs)
    assert RUNS * TOKENS <= calls <= RUNS * (TOKENS + 4), (calls, len(outs))
    assert len(outs) <= calls * 2 // EVERY + 2 * RUNS


def test_explain_says_what_it_saw(sampled_run):
    _, traces = sampled_run
    out = explain(str(traces))
    note = next(n for n in out["notes"] if n.startswith("sampled run"))
    m = re.search(r"VLLM_W2EXT_SAMPLE=(\d+)\): (\d+) of (\d+) engine steps", note)
    assert m and int(m.group(1)) == EVERY
    assert int(m.group(3)) >= RUNS * TOKENS and int(m.group(2)) < int(m.group(3))
    assert out["requests"]["finished"] == RUNS
    front = next(n for n in out["notes"] if n.startswith("sampled front end"))
    m = re.search(r"(\d+) of (\d+) output-processing calls recorded", front)
    assert m and 0 < int(m.group(1)) < int(m.group(2)) and int(m.group(2)) >= RUNS * TOKENS
    dev = out["devices"][0]                                        # pairs' first steps out of the busy share
    assert dev["steps_idle_unmeasured"] >= RUNS * TOKENS // EVERY - 2 * RUNS
    assert dev["run_steps"] == RUNS * TOKENS                       # every executed step, counted ones included
    assert dev["scale"] == pytest.approx(RUNS * TOKENS / (dev["steps"] - dev["steps_idle_unmeasured"]), abs=1e-4)
