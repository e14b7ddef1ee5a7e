#!/usr/bin/env bash
# What would writing the engine step's record raw buy? (issue #19, target 1: a design question, not a feature)
#
# The issue's design has the hooks write raw values into a buffer allocated once, for the export process to make
# records from. Before building that, this measures an upper bound of what it saves for the record that every step
# writes: the engine step's StepRecord (its 12-tuple `data` in the step's range list, appended to the recorder's
# buffer, encoded and freed by the export thread). Two arms of this tree's package, interleaved pair by pair with
# benchmarks/gpu/hook_cost_ab.sh (direct counter, every hook's call timed by the C fronts, steady decode):
#   ab_base    the package as committed;
#   ab_whatif  the same, but the C step post's common way neither builds the StepRecord nor appends the range: the
#              step's state is kept as before (the next step runs the same way), and nothing of it is exported.
# What ab_whatif still does on vLLM's thread (the range list opened by the step's pre, the Stamp, the StepFacts,
# the worker's bounds tuple) a raw design would also save; so this bounds the export thread's side well and the
# hook side's from below. The arms are made from HEAD in the repository root (git-ignored; hook_cost_ab.sh builds
# each one's C extensions) and removed afterwards.
#
#   bash benchmarks/step_record_whatif.sh MODEL_FOLDER [OUT]      (the CPU build: MODEL_FOLDER the tiny model)
#   then: python benchmarks/direct_ab_table.py OUT/step_record_whatif --arms base,whatif --hooks engine.step
# PAIRS (default 6), BATCHES (1,64); the rest as hook_cost_ab.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: $0 MODEL_FOLDER [OUT]}; OUT=${2:-out}
PY=$(command -v python3)
rm -rf ab_base ab_whatif && mkdir ab_base ab_whatif
trap 'rm -rf ab_base ab_whatif' EXIT
git archive HEAD vllm_w2ext | tar -x -C ab_base
git archive HEAD vllm_w2ext | tar -x -C ab_whatif
"$PY" - ab_whatif/vllm_w2ext/hooks/_cfront.c <<'PY'
import sys
path = sys.argv[1]
src = open(path).read()
start = "    PyObject *empty = PyTuple_New(0);            /* StepRecord.finished"
stop = "    out = Py_NewRef(Py_None);\ndone:"
a = src.index(start)          # ValueError: step_post changed; update the markers
b = src.index(stop, a)
src = src[:a] + """    /* what-if (benchmarks/step_record_whatif.sh): no StepRecord built, no range appended */
    put(state, O_SCHEDULE_START, Py_NewRef(SP_ZERO));
    put(state, O_FACTS, Py_NewRef(Py_None));
    put(state, O_STAMP, Py_NewRef(Py_None));
    if ((now = now_ns()) == NULL)
        goto done;
    put(state, O_PREV_STEP_END, Py_NewRef(now));
""" + src[b:]
open(path, "w").write(src)
PY
ARMS="ab_base ab_whatif" BATCHES=${BATCHES:-1,64} CHURN=0 COUNTER_ONLY=1 SAMPLE=1 PAIRS=${PAIRS:-6} ALTERNATE=1 \
  ROUNDS=3 MAX_TOKENS=128 MODEL="$MODEL" OV='{}' EXTRA="--cpu --steady-skip 12" EACH_S=400 OUT="$OUT" \
  NAME=step_record_whatif bash benchmarks/gpu/hook_cost_ab.sh
