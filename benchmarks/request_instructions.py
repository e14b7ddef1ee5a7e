"""Instructions a request's life costs the front end's hooks, counted by valgrind (exact, unlike timings on this VM):
``front.llm_engine_add_request``'s pre and post around ``front.request_start``'s pre, then ``front.request_finish``'s
pre, as the hook table has them (the C ways where the extension is built), on N stand-in requests of an offline
run (no trace headers, under LLM.generate). Run it with N and with N plain (the same requests made, no hook called);
the difference over N is one request's count.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/request_instructions.py N [plain]
    (PYTHONPATH=<an arm's folder> for another version; benchmarks/results/cpu/request_hooks_c has a run)
"""
import gc
import os
import sys
from types import SimpleNamespace as NS

os.environ.update(VLLM_W2EXT="1", VLLM_W2EXT_EXPORT_INTERVAL_MS="60000", VLLM_W2EXT_QUEUE_SIZE="10000000",
                  VLLM_W2EXT_NVTX="0")
from vllm_w2ext.hooks import front  # noqa: E402
from vllm_w2ext.telemetry.pipeline import recorder  # noqa: E402


class Detokenizer:
    def __init__(self, n):
        self.token_ids = list(range(n))

    @property
    def output_token_ids(self):
        return self.token_ids[:]

    def num_output_tokens(self):
        return len(self.token_ids)


def main() -> None:
    n, plain = int(sys.argv[1]), "plain" in sys.argv[2:]
    hooks = {h.name: h for h in front.HOOKS}
    add, start, finish = (hooks[k] for k in ("front.llm_engine_add_request", "front.request_start",
                                               "front.request_finish"))
    recorder()
    gc.disable()
    front._ensure_identity()
    gen = front._generate_pre(None, (), {})
    reqs = [NS(request_id=f"r{i}", sampling_params=NS(max_tokens=16), prompt_token_ids=[1] * 70, trace_headers=None)
            for i in range(n)]
    states = [NS(request_id=f"r{i}", detokenizer=Detokenizer(128), prompt=None) for i in range(n)]
    if plain:
        return
    for r in reqs:
        st = add.pre(None, (r,), {})
        start.pre(None, (r,), {})
        add.post(st, None, None)
    for s in states:
        finish.pre(None, (s,), {})
    front._generate_post(gen, [], None)


if __name__ == "__main__":
    main()
