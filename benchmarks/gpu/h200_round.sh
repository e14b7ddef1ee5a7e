#!/usr/bin/env bash
# Single-H200 runs of issue #19 (device kind nvidia-h200), one stage per device call, after staging
# (benchmarks/gpu/split_stage.sh one / two). Results land in /tmp/w2ext-round and are packed into
# $OUT/round-<stage>.tar.gz after every job, so a call cut short returns what finished.
#
#   cost    every hook's cost inside a real engine on the GPU (benchmarks/hook_cost_engine.py: the 4-layer and
#           the 8B model, each with a VLLM_W2EXT_SAMPLE (COST_RUNS="l4:1 8b:16": model:sample), batch 1 / 64 / 256;
#           COST_ARGS replaces "--batches 1,64,256"), with the plugin's own sampled self-cost counter
#           beside it and the run read back by `vllm-w2ext explain` (device timeline check)
#   toggle  the in-engine hook toggle A/B (benchmarks/gpu/toggle_ab.py; every exporter on, OTLP metrics included),
#           one run per entry of TOGGLE_RUNS="model:sample:workloads ..." (default "8b:1:lat1,thr"; TOGGLE_BLOCKS,
#           default 6; each run at most TOGGLE_EACH_S seconds, default 400)
#
#   bash benchmarks/gpu/split_stage.sh two && source .gpu/p2/env.sh && bash benchmarks/gpu/h200_round.sh cost
#   bash .gpu/p2/stage.sh && source .gpu/p2/env.sh && bash benchmarks/gpu/h200_round.sh toggle
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
STAGE=${1:?usage: $0 cost|toggle}
T0=$(date +%s); BUDGET_S=${BUDGET_S:-540}
R=/tmp/w2ext-round; mkdir -p $R/$STAGE; OUT=${OUT:-out}; mkdir -p "$OUT"
export OVERHEAD_MODELS_DIR=/tmp/w2ext-models
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
pack() { tar -C /tmp -czf "$OUT/.round-$STAGE.tmp" w2ext-round/$STAGE && mv "$OUT/.round-$STAGE.tmp" "$OUT/round-$STAGE.tar.gz"; }
M=$OVERHEAD_MODELS_DIR/llama31-8b-shaped
[ -f $M/tokenizer.json ] || python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M >/dev/null
{ nvidia-smi; python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.device_count(), 'GPUs')"
  lscpu | head -20; git log -1 --format=%H 2>/dev/null || echo "${LAB_GIT_COMMIT:-}"
  LC_ALL=C md5sum vllm_w2ext/hooks/*.py; } > $R/$STAGE/env.txt 2>&1     # (the device copy's git metadata can be stale)
T=$R/$STAGE
case $STAGE in
  cost)
    for run in ${COST_RUNS:-l4:1 8b:1}; do        # model:VLLM_W2EXT_SAMPLE
      m=${run%%:*}; s=${run##*:}; name=hook_cost_engine_${m}_s$s
      ov='{}'; [ $m = l4 ] && ov='{"hf_overrides": {"num_hidden_layers": 4}}'
      to=$(( $(left) - 15 )); [ $to -gt 220 ] && to=220
      [ $to -lt 60 ] && { echo "not started: $name (budget)"; continue; }
      VLLM_W2EXT_SAMPLE=$s timeout $to python3 benchmarks/hook_cost_engine.py $M ${COST_ARGS:---batches 1,64,256} \
        --engine-json "$ov" --out $T/$name.json > $T/$name.log 2>&1
      echo "$name rc=$? ($(( $(date +%s) - T0 )) s)"; grep '^batch' $T/$name.log | cut -c1-300; pack
    done ;;
  toggle)
    for run in ${TOGGLE_RUNS:-8b:1:lat1,thr}; do  # model:VLLM_W2EXT_SAMPLE:workloads
      IFS=: read -r m s w <<< "$run"
      to=$(( $(left) - 20 )); [ $to -gt ${TOGGLE_EACH_S:-400} ] && to=${TOGGLE_EACH_S:-400}
      [ $to -lt 90 ] && { echo "not started: toggle $run (budget)"; continue; }
      python3 benchmarks/gpu/toggle_ab.py --model $m --sample $s --out $T --blocks ${TOGGLE_BLOCKS:-6} --lat-iters 3 \
        --workloads $w --tag "${w//,/-}" --timeout $to 2>&1 | grep '^\[toggle_ab\]'
      echo "toggle $run done ($(( $(date +%s) - T0 )) s)"; pack
    done ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
pack
echo "round $STAGE: $(( $(date +%s) - T0 )) s"; ls -la "$OUT"
