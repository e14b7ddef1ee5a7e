"""Instructions of one call of a bounds hook's front, above vLLM's method called plainly (callgrind, this folder's
README):

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=F python front_call.py plain|python|c

1,000 calls of a two-argument method, counted alone (``callgrind_control -i on/off`` around them; the ``off`` call's
own Python is in every count alike), through no front (``plain``), the Python front (``python``) or the C front
(``c``: ``hooks/_cfront.c``), its runner fast and no marks; the buffer is the bounded deque the plugin uses."""
import os
import subprocess
import sys

os.environ.update(VLLM_W2EXT="1", VLLM_W2EXT_NVTX="0")
from vllm_w2ext.hooks import runner                 # noqa: E402
from vllm_w2ext.hooks.bounds import buffer          # noqa: E402
from vllm_w2ext.hooks.spec import Hook              # noqa: E402

kind = sys.argv[1]
buf = buffer()


class Scheduler:
    def update_from_output(self, scheduler_output, model_runner_output):
        return None


if kind != "plain":
    if kind == "c" and runner.CFront is None:
        sys.exit("the C front is not built here")
    r = runner.HookRunner(Hook("t.update", "m", "Scheduler.update_from_output", lambda i, a, k: None,
                               lambda s, res, err: None, bounds=buf, bounds_keep="arg"))
    r.set_bounds(True, True)
    front = r.bind(vars(Scheduler)["update_from_output"])
    Scheduler.update_from_output = front if kind == "c" else runner.python_front(front)
s, so = Scheduler(), object()


def calls(n):
    for _ in range(n):
        s.update_from_output(so, None)


calls(100)
assert (len(buf) == 4) == (kind != "plain")
subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True)
calls(1000)
subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True)
