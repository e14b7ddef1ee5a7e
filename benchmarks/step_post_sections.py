"""Where the engine step's post spends its time inside a REAL engine, section by section (a look for issue #19).

    python benchmarks/step_post_sections.py MODEL_FOLDER [--batch 1] [--runs 2]      (CPU build of vLLM)

``_cfront.step_post`` (the engine step's post in C) costs ~1.6 µs a call in a tight loop and 8-15 µs a step inside
vLLM, where each step's work between two calls leaves the CPU's caches cold. Which of its parts pays for that? This
copies the package to a temporary folder, puts a time-stamp-counter checkpoint between the post's sections in that
copy's ``_cfront.c`` (and around ``step_pre``'s common way), builds it, and runs a one-process engine (the tiny
model, 1 warm-up and 3 generate calls of 128 tokens) with that copy first on ``sys.path``; the checkpoints' sums
over the 3 calls / engine steps, in ns by the extension's own tick rate. The repository's code is not changed.
Each checkpoint is one ``rdtsc`` (~13 ns on the CPU machine), not taken out."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ["module globals (S, RECORDER, MODE, UPDATES; held in C since 841bad8)", "common_way's checks", "running + waiting: pending",
            "SkippedSteps", "its update (UPDATES)", "worker_bounds", "the StepRecord (raw values)",
            "end time, state, append to the buffer", "releases (done:)",
            "probe: 48 raw int64 of a C struct into one bytes, kept in a ring (--probe-raw)"]
CHECKPOINTS = [   # (text in step_post, what goes before it)
    ("    PyObject *r = args[0], *result = args[1], *error = args[2];\n", "    DBG_LAST = TICKS(); DBG_N++;\n"),
    ("    PyObject *buf = NULL;\n    int ok = common_way", "    CK(0);\n"),
    ("    PyObject *running = NULL, *waiting = NULL,", "    CK(1);\n"),
    ("    PyObject *light = SLOT_OF(state, O_LIGHT_EXECUTED)", "    CK(2);\n"),
    ("    long long t_u0 = 0, t_u1 = 0, t_batch = -1;\n", "    CK(3);\n"),
    ("    PyObject *in_process = attr_get(mode, A_IN_PROCESS);\n", "    CK(4);\n"),
    ("    long long sched0 = PyLong_AsLongLong(", "    CK(5);\n"),
    ("    if ((now = now_ns()) == NULL)\n        goto done;\n    if (PyList_SetItem(r, SP_END", "    CK(6);\n"),
    ("    out = Py_NewRef(Py_None);\ndone:", "    CK(7);\n"),
]
RUN = r'''
import os, sys, tempfile
os.environ.update(VLLM_W2EXT="1", VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_W2EXT_TRACE_DIR=tempfile.mkdtemp(),
                  VLLM_CPU_KVCACHE_SPACE="1")
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm_w2ext.hooks import _cfront
assert hasattr(_cfront, "sections"), _cfront.__file__
model, n = sys.argv[1], int(sys.argv[2])
llm = LLM(model=model, max_model_len=2048, enable_prefix_caching=False, distributed_executor_backend="uni",
          dtype="float32", enforce_eager=True, max_num_seqs=n)
sp = SamplingParams(max_tokens=128, ignore_eos=True)
prompts = [TokensPrompt(prompt_token_ids=[10 + (i * 31 + k) % 9000 for i in range(64)]) for k in range(n)]
llm.generate(prompts, sp, use_tqdm=False)
a = _cfront.sections()
for _ in range(3):
    llm.generate(prompts, sp, use_tqdm=False)
b = _cfront.sections()
d = [y - x for x, y in zip(a, b)]
(t0, n0), (t1, n1) = _cfront.clock()
rate = (n1 - n0) / (t1 - t0) if t1 != t0 else 1.0
print("RESULT", d[16], d[11], *[round(x * rate) for x in d[:16]])
'''


# --probe-raw: what the design would do instead of the post's objects, timed in the same place: the step's
# values as int64 fields of one static C struct (6 of them written by step_pre's common way, as the design writes the
# ids and clock there), read whole into one bytes object kept in a 64-slot ring (the export thread's take, mimicked:
# the object 64 steps old freed here). Off: nothing runs there and its section reads ~0.
PROBE = ("    if (DBG_PROBE) { PyObject *pb = PyBytes_FromStringAndSize((const char *)DBG_RAW, sizeof DBG_RAW);\n"
         "      Py_XSETREF(DBG_RING[DBG_N % 64], pb); DBG_RAW[47] = DBG_N; }\n    CK(9);\n")


def instrument(src: str) -> str:
    head = "static PyObject *SP_GLOBALS, *SP_FALLBACK, *SP_STAMP_ATTR;"
    src = src.replace(head, "static long long DBG[16], DBG_LAST, DBG_N, DBG_RAW[48];\nstatic int DBG_PROBE = -1;\n"
                      "static PyObject *DBG_RING[64];\n#define CK(i) do { long long _t = TICKS(); "
                      "DBG[i] += _t - DBG_LAST; DBG_LAST = _t; } while (0)\n" + head, 1)
    start = src.index("step_post(PyObject *module, PyObject *const *args, Py_ssize_t nargs)\n{")
    end = src.index("\n}\n", start)
    body = src[start:end]
    for anchor, before in CHECKPOINTS:
        if anchor not in body:
            raise SystemExit(f"step_post_sections: step_post has changed (no {anchor.strip()!r}): update CHECKPOINTS")
        body = body.replace(anchor, before + anchor, 1)
    body = body.replace("    Py_XDECREF(appended);\n    return out;", "    Py_XDECREF(appended);\n    CK(8);\n" + PROBE + "    return out;")
    src = src[:start] + body + src[end:]
    pre = "    PyObject *state = global_of(G_S);\n    PyObject *gate = state"
    for anchor in (pre, "    put(state, O_CURRENT, Py_NewRef(r));\n    return r;\n}"):
        if anchor not in src:
            raise SystemExit(f"step_post_sections: step_pre has changed (no {anchor.strip()!r}): update instrument()")
    src = src.replace(pre, "    long long p0 = TICKS();\n    if (DBG_PROBE < 0) DBG_PROBE = getenv(\"W2EXT_PROBE_RAW\") != NULL;\n"
                      "    if (DBG_PROBE) { DBG_RAW[0] = p0; DBG_RAW[1] = p0 ^ 7; DBG_RAW[2] = p0 >> 3; DBG_RAW[3]++; "
                      "DBG_RAW[4] = p0 + 1; DBG_RAW[5] = DBG_N; }\n" + pre, 1)
    src = src.replace("    put(state, O_CURRENT, Py_NewRef(r));\n    return r;\n}",
                      "    put(state, O_CURRENT, Py_NewRef(r));\n    DBG[10] += TICKS() - p0; DBG[11]++;\n    return r;\n}", 1)
    getter = ("static PyObject *\nsections(PyObject *m, PyObject *u)\n{\n    PyObject *l = PyList_New(17);\n"
              "    for (int i = 0; i < 16; i++) PyList_SET_ITEM(l, i, PyLong_FromLongLong(DBG[i]));\n"
              "    PyList_SET_ITEM(l, 16, PyLong_FromLongLong(DBG_N));\n    return l;\n}\n")
    src = src.replace("static PyMethodDef module_methods[] = {",
                      getter + "static PyMethodDef module_methods[] = {\n    {\"sections\", sections, METH_NOARGS, \"\"},", 1)
    return src


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--probe-raw", action="store_true", help="also time the probe (see PROBE) after the post")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="w2ext-sections-")
    try:
        shutil.copytree(os.path.join(ROOT, "vllm_w2ext"), os.path.join(tmp, "vllm_w2ext"),
                        ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        for f in ("setup.py", "pyproject.toml", "README.md"):
            shutil.copy(os.path.join(ROOT, f), tmp)
        c = os.path.join(tmp, "vllm_w2ext", "hooks", "_cfront.c")
        with open(c) as f:
            src = instrument(f.read())
        with open(c, "w") as f:
            f.write(src)
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = dict(os.environ, PYTHONPATH=tmp + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if a.probe_raw:
            env["W2EXT_PROBE_RAW"] = "1"
        print(f"batch {a.batch}, ns per engine step (the post), per call (step_pre's common way):")
        for run in range(a.runs):
            out = subprocess.run([sys.executable, "-c", RUN, a.model, str(a.batch)], env=env, cwd=tmp, text=True,
                                 capture_output=True)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT")), None)
            if line is None:
                sys.stderr.write(out.stderr[-3000:])
                return 1
            steps, pre_calls, *ns = map(int, line.split()[1:])
            post = sum(ns[:9]) / steps
            print(f"run {run + 1}: {steps} steps; step_post {post:.0f} ns, step_pre {ns[10] / max(1, pre_calls):.0f}")
            for name, v in zip(SECTIONS, ns[:9]):
                print(f"  {name:48s} {v / steps:7.0f} ns  {100 * v / steps / post:4.1f} %")
            if a.probe_raw:
                print(f"  {SECTIONS[9]}: {ns[9] / steps:.0f} ns")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
