"""Which attribute loads and stores CPython specialized in the EngineCore's step hooks (issue #19).

    python3.12 benchmarks/attr_specialization.py [SAMPLE]      # run from the root of the tree to inspect

Runs the EngineCore's step and schedule hooks (``hooks.engine_core``) for 3,000 stand-in steps (one request, the
SchedulerOutput shape of ``hook_instructions.py``; no vLLM, no torch), then lists each hook function's
``LOAD_ATTR`` / ``STORE_ATTR`` instructions as the specializing interpreter left them (``dis``, adaptive): a bare
``LOAD_ATTR``/``STORE_ATTR`` on a path the steps ran is a generic lookup on every call. Lines the steps never reach
(the first step's identity, error paths) stay bare too, so read it with the function's source at hand. Prints JSON:
per function, the specialized forms and the generic ones with their attribute names.
"""
import dis
import json
import os
import sys
from types import SimpleNamespace as NS

os.environ.update(VLLM_W2EXT="1", VLLM_W2EXT_SAMPLE=sys.argv[1] if len(sys.argv) > 1 else "1024",
                  VLLM_W2EXT_EXPORT_INTERVAL_MS="60000", VLLM_W2EXT_NVTX="0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())

from hook_instructions import scheduler_output  # noqa: E402

from vllm_w2ext.hooks import engine_core as ec  # noqa: E402


def main() -> None:
    so, sched, core = scheduler_output(1), NS(requests={}, running=[1], waiting=[]), NS(engine_index=0)
    for _ in range(3000):
        r = ec._step_pre(core, (), {})
        ec._schedule_post(ec._schedule_pre(sched, (), {}), so, None)
        ec._step_post(r, ({}, True), None)
    out = {"python": sys.version.split()[0], "sample": int(os.environ["VLLM_W2EXT_SAMPLE"])}
    for f in (ec._step_pre, ec._schedule_pre, ec._schedule_post, ec._resumes_or_completes_prompt, ec._step_post):
        specialized, generic = {}, []
        for ins in dis.get_instructions(f, adaptive=True):
            if ins.opname in ("LOAD_ATTR", "STORE_ATTR"):
                generic.append(f"{ins.opname} {ins.argrepr.split()[-1]} (line {ins.positions.lineno})")
            elif ins.opname.startswith(("LOAD_ATTR_", "STORE_ATTR_")):
                specialized[ins.opname] = specialized.get(ins.opname, 0) + 1
        out[f.__name__] = {"specialized": specialized, "generic": generic}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
