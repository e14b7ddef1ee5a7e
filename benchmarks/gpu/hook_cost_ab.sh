#!/usr/bin/env bash
# Two versions of the plugin, interleaved in one session on the H200 host (issue #19): every hook's cost inside
# a real engine (`benchmarks/hook_cost_engine.py`) on the 4-layer Llama-3.1-8B-shaped model (dummy weights).
# Each arm is a folder holding a `vllm_w2ext` package (put first on PYTHONPATH; untracked copies made for the
# call; an arm's C front, if it has one, is built in place below); the benchmark script is the tree's:
#
#   git worktree add /tmp/wt_a <commit> && cp -r /tmp/wt_a/vllm_w2ext ab_old/ && cp -r vllm_w2ext ab_new/
#   (device, after staging)  source .gpu/p2/env.sh && ARMS="ab_old ab_new" bash benchmarks/gpu/hook_cost_ab.sh
#
# NAME (result folder, default hook_cost_ab), BATCHES (default 512), CHURN (1: `--churn`, requests join and
# finish all through each round, one batch size; 0: steady rounds), PAIRS (2), SAMPLE (VLLM_W2EXT_SAMPLE, 64),
# ROUNDS (3), MAX_TOKENS (64), EACH_S (timeout per run, 200), COUNTER_ONLY (1: `--counter-only`, no hook timed by
# the script: the plugin's own counters, the direct one by hook), ALTERNATE (1: the arms' order reversed in even
# pairs), MODEL and OV (another model folder and its engine overrides; default the 4-layer 8B-shaped one), EXTRA
# (more arguments, e.g. --cpu), CONCURRENT (1: a pair's two runs at the same time, each pinned to a core of its own,
# vLLM's CPU threads bound there; tried on the 2-core CPU machine in an A/A, results/cpu/aa_concurrent: its pair
# ratios spread as much as sequential pairs do, the two vCPUs being slowed apart). Results:
# $OUT/$NAME/<arm>_<pair>.json and logs; benchmarks/direct_ab_table.py reads the direct figures of COUNTER_ONLY runs
# pair by pair.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}; R=$OUT/${NAME:-hook_cost_ab}; mkdir -p "$R"
export OVERHEAD_MODELS_DIR=${OVERHEAD_MODELS_DIR:-/tmp/w2ext-models} PYTHONUNBUFFERED=1
if [ -n "${MODEL:-}" ]; then           # another model folder (the CPU build: MODEL=tests/.cache/models/tiny-llama
  M=$MODEL; OV=${OV:-'{}'}            # EXTRA=--cpu), its engine overrides OV
else
  M=$OVERHEAD_MODELS_DIR/llama31-8b-shaped
  [ -f $M/tokenizer.json ] || python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M >/dev/null
  OV='{"hf_overrides": {"num_hidden_layers": 4}}'
fi
ARMS=${ARMS:-"ab_old ab_new"}; BATCHES=${BATCHES:-512}; PAIRS=${PAIRS:-2}; SAMPLE=${SAMPLE:-64}
CH=""; [ "${CHURN:-1}" = 1 ] && CH=--churn
[ "${COUNTER_ONLY:-0}" = 1 ] && CH="$CH --counter-only"
CH="$CH ${EXTRA:-}"
{ nvidia-smi -L; lscpu | grep -E 'Model name|^CPU\(s\)'; python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
  echo "BATCHES=$BATCHES CHURN=${CHURN:-1} COUNTER_ONLY=${COUNTER_ONLY:-0} SAMPLE=$SAMPLE PAIRS=$PAIRS"
  for a in $ARMS; do echo "$a:"; (cd $a && LC_ALL=C md5sum vllm_w2ext/hooks/*.py vllm_w2ext/steps/*.py); done; } \
  > "$R/env.txt" 2>&1
# An arm whose package has the hooks' C front (hooks/_cfront.c) gets it built in place by the tree's setup.py; env.txt
# says which front each arm runs (None: the Python fronts)
for a in $ARMS; do
  if [ -f $a/vllm_w2ext/hooks/_cfront.c ] && ! ls $a/vllm_w2ext/hooks/_cfront*.so >/dev/null 2>&1; then
    (cd $a && python3 "$OLDPWD/setup.py" build_ext --inplace) > "$R/build_$a.log" 2>&1
  fi
  echo "$a: C front $(cd "$a" && python3 -c \
    'import vllm_w2ext.hooks.runner as r; print(getattr(r, "CFront", getattr(r, "BoundsFront", None)))' 2>&1 \
    | tail -1); end events timed in one C call: $(cd "$a" && python3 -c \
    'import importlib.util as u; print(u.find_spec("vllm_w2ext.hooks._event_times") is not None)' 2>&1 | tail -1)" \
    >> "$R/env.txt"      # from the arm's folder: the repository's own package would shadow it
done
T0=$(date +%s)
run_arm() {    # ARM PAIR [CORE]: one run (on CORE alone where given: taskset, and vLLM's CPU threads bound there)
  local arm=$1 name=${1#ab_}_$2 pin=() bind=()
  if [ -n "${3:-}" ]; then pin=(taskset -c "$3"); bind=(VLLM_CPU_OMP_THREADS_BIND="$3"); fi
  env PYTHONPATH="$arm${PYTHONPATH:+:$PYTHONPATH}" VLLM_W2EXT_SAMPLE=$SAMPLE "${bind[@]}" timeout ${EACH_S:-200} \
    "${pin[@]}" python3 benchmarks/hook_cost_engine.py \
    "$M" $CH --batches "$BATCHES" --rounds "${ROUNDS:-3}" --max-tokens "${MAX_TOKENS:-64}" --engine-json "$OV" \
    --out "$R/$name.json" > "$R/$name.log" 2>&1
  echo "$name rc=$? ($(( $(date +%s) - T0 )) s${3:+, core $3}): $(grep '^batch' "$R/$name.log" | cut -c1-160 | tr '\n' ' ')$(grep -o 'direct {[^}]*}' "$R/$name.log" | tr '\n' ' ')"
}
for p in $(seq 1 "$PAIRS"); do
  order=$ARMS; [ "${ALTERNATE:-0}" = 1 ] && [ $((p % 2)) = 0 ] && order=$(echo $ARMS | tr ' ' '\n' | tac | tr '\n' ' ')
  if [ "${CONCURRENT:-0}" = 1 ]; then   # the pair's two runs at once, one core each (the first in the order on core
    c=0                                 # 0: ALTERNATE=1 swaps their cores from pair to pair)
    for arm in $order; do run_arm "$arm" "$p" "$c" & c=$((c + 1)); done
    wait
  else
    for arm in $order; do run_arm "$arm" "$p"; done
  fi
done
