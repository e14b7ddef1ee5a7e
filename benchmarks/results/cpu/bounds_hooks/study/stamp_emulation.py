"""Emulation (a bound, not the plugin): one Python hook per step (engine.step, its real pre), every other hooked
method of the stand-in step a "stamp" front that appends its start, end (and, for schedule, its result) to one
list, and a step post that reads the steady decode facts from the schedule's result and keeps the list raw in the
step's record (what the export side would then interpret). The stamp fronts are the C type of
``front_prototype.c`` (``Stamp``), or with ``PYSTAMP=1`` a Python front of the same shape. Same driver as
``benchmarks/hook_instructions.py`` (N steps, batch B; flags ``nogc``, ``evict``, ``plain``).

Run against a copy of commit 1feb1a0's ``vllm_w2ext`` with the prototype built into its ``hooks/`` as ``_front``
(``python setup_prototype.py build_ext --inplace``, then copy the .so), through ``run_alt.py`` (README.md)."""
import os
import sys
os.environ.update(VLLM_W2EXT="1", VLLM_W2EXT_EXPORT_INTERVAL_MS="60000", VLLM_W2EXT_QUEUE_SIZE="10000000",
                  VLLM_W2EXT_NVTX="0")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", ".."))
import hook_instructions as hi, hook_overhead as ho
from vllm_w2ext.hooks import engine_core as ec
from vllm_w2ext.hooks.engine_core import S, _now
from vllm_w2ext.hooks.runner import HookRunner
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.hooks._front import Stamp as CStamp
import time, inspect

_SRC = """def front({head}):
    if not _w2_on[0]:
        return _w2_fn({call})
    _w2_buf.append(_w2_now())
    _w2_r = _w2_fn({call})
    _w2_buf.append(_w2_now())
    {keep}
    return _w2_r
"""


def PyStamp(fn, buf, keep=False):
    params = list(inspect.signature(fn).parameters)
    head = ", ".join(params)
    ns = {"_w2_on": [True], "_w2_fn": fn, "_w2_buf": buf, "_w2_now": time.time_ns}
    exec(_SRC.format(head=head, call=head, keep="_w2_buf.append(_w2_r)" if keep else ""), ns)
    return ns["front"]


Stamp = PyStamp if os.environ.get("PYSTAMP") else CStamp
from vllm_w2ext.telemetry.pipeline import RECORDER, recorder
from vllm_w2ext.telemetry.wire import DATA, END

BUF = []


def step_post(r, result, error):
    b = BUF
    so = b[2]
    sched = S.sched
    nst = so.num_scheduled_tokens
    total = so.total_num_scheduled_tokens
    if (total == len(nst) and not (so.scheduled_new_reqs or S.prefilling or S.preempted or so.preempted_req_ids
                                   or S.all_links)):
        facts = (total, 0, total, (), (), 0, len(so.finished_req_ids), (), (), None, len(sched.running),
                 len(sched.waiting))
    else:
        facts = ec._read_facts(so)
    executed = bool(result[1]) if result is not None else False
    S.current = None
    S.pending = len(sched.running) + len(sched.waiting)
    skipped = (0, S.step - S.last_recorded - 1, 0)
    S.last_recorded = S.step
    b[2] = None
    r[DATA] = (facts, executed, (), S.pending, skipped, tuple(b), S.sample)
    b.clear()
    rec = RECORDER[0] or recorder()
    r[END] = S.prev_step_end = _now()
    rec.buf.append(r)


def main():
    n, batch = int(sys.argv[1]), int(sys.argv[2])
    flags = sys.argv[3:]
    so = hi.scheduler_output(batch)
    EngineCore, Scheduler, Executor, Worker, Runner = ho.stand_ins(so)
    if "plain" not in flags:
        runner = HookRunner(Hook("engine.step", "m", "EngineCore.step", ec._step_pre, step_post, "engine_core"))
        EngineCore.step = runner.bind(vars(EngineCore)["step"])
        for cls, m, keep in ((Scheduler, "schedule", True), (Scheduler, "update_from_output", False),
                             (Worker, "execute_model", False), (Worker, "sample_tokens", False),
                             (Runner, "_model_forward", False)):
            setattr(cls, m, Stamp(vars(cls)[m], BUF, keep))
    core = EngineCore()
    S.sched = core.scheduler
    step = core.step
    if "nogc" in flags:
        import gc
        gc.disable()
    for _ in range(50):
        step()
    hi.instrument("on")
    if "evict" in flags:
        scan = bytes(hi.EVICT_BYTES).find
        for _ in range(n):
            scan(b"\x01")
            step()
    else:
        for _ in range(n):
            step()
    hi.instrument("off")
    print("records", len(recorder().buf), "buf", len(BUF), file=sys.stderr)
    os._exit(0)


main()
