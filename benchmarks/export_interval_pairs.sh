#!/usr/bin/env bash
# The export thread's cost per engine step against the export interval (issue #19, target 1): pairs of
# `hook_cost_engine.py` runs that differ only in VLLM_W2EXT_EXPORT_INTERVAL_MS, the order reversed every other pair.
# At batch 1 few records are made per step, so most of the export thread's work is a fixed cost per wake, and its
# share per step scales with the number of wakes (the flip runs of results/h200/t2* use 50 ms, the default is 200).
#
#   bash benchmarks/export_interval_pairs.sh MODEL_DIR OUT_DIR      (the CPU machine: ARGS=--cpu)
#
# INTERVALS (default "50 200"; `auto` is the default setting), PAIRS (6), SAMPLE (VLLM_W2EXT_SAMPLE, 32), BATCH (1),
# ROUNDS (8), MAX_TOKENS (256), ARGS (more hook_cost_engine.py arguments, e.g. --churn). Results: OUT_DIR/i<interval>_<pair>.json and .log; the table:
#   python3 benchmarks/gpu/hook_cost_table.py --parts OUT_DIR
set -uo pipefail
M=$(realpath "${1:?model folder}"); R=$(realpath -m "${2:?result folder}"); mkdir -p "$R"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}; [ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
INTERVALS=${INTERVALS:-"50 200"}
{ lscpu | grep -E 'Model name|^CPU\(s\)'; $PY -c "import vllm, sys; print('vllm', vllm.__version__, 'python', sys.version.split()[0])"
  git log -1 --format='%h' 2>/dev/null; echo "INTERVALS=$INTERVALS SAMPLE=${SAMPLE:-32} BATCH=${BATCH:-1} ROUNDS=${ROUNDS:-8} MAX_TOKENS=${MAX_TOKENS:-256} ARGS=${ARGS:-}"
} > "$R/env.txt" 2>&1
for p in $(seq 1 "${PAIRS:-6}"); do
  order=$INTERVALS; [ $((p % 2)) = 0 ] && order=$(echo $INTERVALS | tr ' ' '\n' | tac | tr '\n' ' ')
  for iv in $order; do
    VLLM_W2EXT_SAMPLE=${SAMPLE:-32} VLLM_W2EXT_EXPORT_INTERVAL_MS=$iv $PY benchmarks/hook_cost_engine.py "$M" \
      --batches "${BATCH:-1}" --rounds "${ROUNDS:-8}" --max-tokens "${MAX_TOKENS:-256}" ${ARGS:-} --out "$R/i${iv}_$p.json" \
      > "$R/i${iv}_$p.log" 2>&1
    echo "i${iv}_$p rc=$?"
  done
done
