#!/usr/bin/env bash
# Issue #19, target 1 in the layout users run (front end here, EngineCore + worker in a process of their own, TP=1):
# the plugin's cost per executed engine step, round by round, read from its own metrics endpoint
# (cost_budget_engine.py), with VLLM_W2EXT_COST_BUDGET at 1 % and off (0, the default: every step recorded).
# The 4-layer Llama-3.1-8B-shaped model (dummy weights; M and LAYERS: another), batch 1 (ROUNDS x 1500 tokens) and
# 512 requests per step (512 x 256 tokens). Trace files and the metrics endpoint on (the exporters run in the export processes; OTLP off).
#   after staging:  source .gpu/p2/env.sh && bash benchmarks/gpu/budget_settled.sh      -> $OUT/budget_settled/
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}; R=$OUT/budget_settled; mkdir -p $R
export OVERHEAD_MODELS_DIR=/tmp/w2ext-models PYTHONUNBUFFERED=1
if [ -z "${M:-}" ]; then               # M: another model folder (the CPU machine's tiny one, with LAYERS=0 and
  export M=$OVERHEAD_MODELS_DIR/llama31-8b-shaped    # ENGINE_JSON='{"dtype": "float32", "enforce_eager": true}')
  [ -f $M/tokenizer.json ] || python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M >/dev/null
fi
export M
{ nvidia-smi -L; lscpu | grep -E 'Model name|^CPU\(s\)'; python3 -c "import vllm, torch, sys; print('vllm', vllm.__version__, 'torch', torch.__version__, 'python', sys.version.split()[0])"
  md5sum vllm_w2ext/hooks/*.py vllm_w2ext/telemetry/*.py | md5sum; } > $R/env.txt 2>&1
# name budget(%) tokens batch rounds [churn 0|1]; the committed runs were named b1_default / b512_default: the budget at 1 % was
# the default then (79ca738), set here by leaving the variable unset
# RUNS: the specs separated by ';'. A seventh field sets VLLM_W2EXT_EXPORT_INTERVAL_MS for that run (`-` or none: the
# plugin's default), e.g. "b1_i200 0 1500 1 4 0 200;b1_auto 0 1500 1 4 0 auto". An eighth names an arm: a folder
# holding a `vllm_w2ext` package put first on sys.path for that run (W2EXT_ARM, read by cost_budget_engine.py; its C
# extensions built in place here first, as hook_cost_ab.sh builds them), to set two versions of the plugin side by
# side, e.g. "b1_old 0 1500 1 4 0 - ab_old;b1_new 0 1500 1 4 0 - ab_new" (`-` or none: the tree's package). A run
# whose summary names another package than its arm's is flagged with a WARNING line.
IFS=';' read -ra SPECS <<< "${RUNS:-b1_budget 1 1500 1 6;b1_off 0 1500 1 4;b512_budget 1 256 512 5;b512_off 0 256 512 3}"
for arm in $(for spec in "${SPECS[@]}"; do echo $spec | awk '{print $8}'; done | sort -u); do
  [ "$arm" = - ] && continue
  if ! ls $arm/vllm_w2ext/hooks/_cfront*.so >/dev/null 2>&1; then
    (cd $arm && python3 "$OLDPWD/setup.py" build_ext --inplace) > $R/build_$arm.log 2>&1
  fi
  { echo "$arm:"; (cd $arm && md5sum vllm_w2ext/hooks/*.py vllm_w2ext/telemetry/*.py | md5sum); } >> $R/env.txt
done
for spec in "${SPECS[@]}"; do
  set -- $spec
  name=$1; export VLLM_W2EXT_COST_BUDGET=$2; shift 2
  interval=${5:--}; arm=${6:--}; set -- "${@:1:4}"
  if [ "$interval" = - ]; then unset VLLM_W2EXT_EXPORT_INTERVAL_MS; else export VLLM_W2EXT_EXPORT_INTERVAL_MS=$interval; fi
  a=; [ "$arm" != - ] && a=$arm
  rm -rf /tmp/tr_$name
  W2EXT_ARM=$a VLLM_W2EXT=1 VLLM_W2EXT_TRACE_DIR=/tmp/tr_$name VLLM_W2EXT_METRICS_PORT=9466 VLLM_W2EXT_METRICS_INTERVAL_MS=500 \
    timeout ${EACH_S:-150} python3 benchmarks/gpu/cost_budget_engine.py $name ${LAYERS:-4} "$@" > $R/$name.log 2>&1
  echo "$name rc=$?"; grep '^{' $R/$name.log > $R/$name.jsonl
  if [ "$arm" != - ] && ! grep -q "\"package\": \"$arm\"" $R/$name.jsonl; then
    echo "WARNING: $name did not run $arm's package: $(grep -o '"package": "[^"]*"' $R/$name.jsonl)"
  fi
  gzip -f $R/$name.log
done
unset VLLM_W2EXT_COST_BUDGET VLLM_W2EXT_EXPORT_INTERVAL_MS
