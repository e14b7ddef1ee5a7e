#!/usr/bin/env bash
# VLLM_W2EXT_COST_BUDGET on the H200 (issue #19), every exporter but OTLP off (span files for explain), after
# staging (split_stage.sh one / two, or on a warm machine `bash .gpu/p2/stage.sh`):
#
#   source .gpu/p2/env.sh && bash benchmarks/gpu/cost_budget_runs.sh [in_process] [engine_process] [batch]
#
# in_process:     benchmarks/hook_cost_engine.py (front end + EngineCore + worker in one process, each hook timed),
#                 batch 1 twice (counters reset between: the second phase runs at the N the budget settled on),
#                 the 4-layer and the 32-layer Llama-3.1-8B-shaped model (dummy weights).
# engine_process: cost_budget_engine.py (the EngineCore in a process of its own, as users run it), then
#                 `vllm-w2ext explain` of its span files: the N range, steps recorded, the device's busy share.
# batch:          ~500 requests per step, the 4-layer model: cost_budget_engine.py with 512 requests of 256 tokens
#                 (+ explain), and hook_cost_engine.py --batches 512,512 (the second phase at the settled N).
# BUDGET (percent, default 1). Results in $OUT/cost_budget/{in_process,engine_process,batch}.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}; R=$OUT/cost_budget
export OVERHEAD_MODELS_DIR=/tmp/w2ext-models PYTHONUNBUFFERED=1 VLLM_W2EXT_COST_BUDGET=${BUDGET:-1}
export M=$OVERHEAD_MODELS_DIR/llama31-8b-shaped
[ -f $M/tokenizer.json ] || python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M >/dev/null
for part in "${@:-in_process engine_process batch}"; do
  for what in $part; do
    mkdir -p $R/$what
    { nvidia-smi -L; lscpu | grep -E 'Model name|^CPU\(s\)'; python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
      echo "VLLM_W2EXT_COST_BUDGET=$VLLM_W2EXT_COST_BUDGET"; } > $R/$what/env.txt 2>&1
    if [ $what = in_process ]; then
      timeout 200 python3 benchmarks/hook_cost_engine.py $M --batches 1,1 --rounds 6 --max-tokens 512 \
        --engine-json '{"hf_overrides": {"num_hidden_layers": 4}}' --out $R/$what/l4.json > $R/$what/l4.log 2>&1
      timeout 260 python3 benchmarks/hook_cost_engine.py $M --batches 1,1 --rounds 2 --max-tokens 512 \
        --out $R/$what/l32.json > $R/$what/l32.log 2>&1
      gzip -f $R/$what/*.log
    elif [ $what = batch ]; then
      VLLM_W2EXT=1 VLLM_W2EXT_TRACE_DIR=/tmp/tr_b512 timeout 200 python3 benchmarks/gpu/cost_budget_engine.py \
        b512 4 256 512 > $R/$what/b512.log 2>&1
      python3 -m vllm_w2ext.cli explain /tmp/tr_b512 --format json --out $R/$what/b512.explain.json
      timeout 240 python3 benchmarks/hook_cost_engine.py $M --batches 512,512 --rounds 2 --max-tokens 256 \
        --engine-json '{"hf_overrides": {"num_hidden_layers": 4}, "max_num_seqs": 512}' \
        --out $R/$what/l4_b512.json > $R/$what/l4_b512.log 2>&1
      gzip -f $R/$what/*.log
    else
      for spec in "l4 4 1500" "l32 0 1000"; do set -- $spec
        VLLM_W2EXT=1 VLLM_W2EXT_TRACE_DIR=/tmp/tr_$1 timeout 170 python3 benchmarks/gpu/cost_budget_engine.py $spec \
          > $R/$what/$1.log 2>&1
        python3 -m vllm_w2ext.cli explain /tmp/tr_$1 --format json --out $R/$what/$1.explain.json
        gzip -f $R/$what/$1.log
      done
    fi
  done
done
