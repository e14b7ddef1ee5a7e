"""Span and trace ids stay unique across a fork. vLLM forks its EngineCore and workers (its default start
method everywhere but the CPU platform): a child that inherited the parent's id generator state would draw
the same ids as its parent, so a request span of the front end and a step span of the EngineCore could share
an id and the trace tree would join them (found by the end-to-end suite once it started engines by fork)."""
import os

from vllm_w2ext.hooks import runner
from vllm_w2ext.telemetry import recording


def _draws() -> list:
    return [recording.new_span_id() for _ in range(4)] + [recording.new_trace_id() for _ in range(2)] + \
        [runner._gap() for _ in range(8)]


def test_a_forked_child_draws_other_ids_than_its_parent():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child: its draws to the parent, then exit at once
        os.close(r)
        os.write(w, repr(_draws()).encode())
        os._exit(0)
    os.close(w)
    ours = _draws()
    with os.fdopen(r) as f:
        theirs = eval(f.read())
    os.waitpid(pid, 0)
    assert not set(ours[:6]) & set(theirs[:6])     # no span or trace id in common
    assert ours[6:] != theirs[6:]                  # the self-cost sampling gaps differ too
