#!/usr/bin/env bash
# This round's GPU runs on two H200s (device kind nvidia-h200-x2), one stage per device call, after staging
# (benchmarks/gpu/split_stage.sh one / two). Everything lands in /tmp/w2ext-round (kept while the machine
# stays warm) and is packed into $OUT/round-<stage>.tar.gz after every job, so a call cut short returns
# what finished. NVLink multicast stays off in every process (the device README says why).
#
#   tp1   host micro-benchmark (benchmarks/hook_overhead.py, nothing else running), then at once:
#         GPU 0: in-engine hook toggle A/B (benchmarks/gpu/toggle_ab.py) of the 4-layer and the 1B model;
#         GPU 1: planted causes for `vllm-w2ext explain` (benchmarks/gpu/explain_planted.py, 8B), then the
#                8B toggle A/B. The two GPUs' jobs overlap in time: each A/B pairs paused and resumed
#                blocks inside one engine, so the neighbour's load falls on both halves of every pair.
#   tp2   TP=2 separate-run pairs, stock vs plugin (every exporter on), 8B, bench latency batch 1 and 32 and
#         throughput random 256/256 x 500 in one engine per run (PAIRS, default "1 2"), then a profiled
#         decode at TP=2 with the plugin's trace files (benchmarks/gpu/profile_merge.sh, TP=2, batch 8).
#   tp2b  the remaining TP=2 pair(s) (PAIRS, default "3").
#   next  (for the next session; not run yet) every hook's cost inside a real engine on the GPU
#         (benchmarks/hook_cost_engine.py, 4-layer and 8B, batch 1/64/256) and the in-engine toggle A/B at TP=2
#         (toggle_ab.py --tp 2, which hooks/control.py now allows).
#
#   bash benchmarks/gpu/split_stage.sh two && source .gpu/p2/env.sh && bash benchmarks/gpu/h200x2_round.sh tp1
#   bash .gpu/p2/stage.sh && source .gpu/p2/env.sh && bash benchmarks/gpu/h200x2_round.sh tp2
set -uo pipefail
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
STAGE=${1:?usage: $0 tp1|tp2|tp2b|next}
T0=$(date +%s); BUDGET_S=${BUDGET_S:-540}
R=/tmp/w2ext-round; mkdir -p $R/$STAGE; OUT=${OUT:-out}; mkdir -p "$OUT"
export OVERHEAD_MODELS_DIR=/tmp/w2ext-models
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
pack() { tar -C /tmp -czf "$OUT/.round-$STAGE.tmp" w2ext-round/$STAGE && mv "$OUT/.round-$STAGE.tmp" "$OUT/round-$STAGE.tar.gz"; }
for f in llama31-8b-shaped llama32-1b-shaped; do
  [ -f $OVERHEAD_MODELS_DIR/$f/tokenizer.json ] || python3 -m vllm_w2ext.lab.model_folders $f $OVERHEAD_MODELS_DIR/$f >/dev/null
done
{ nvidia-smi; python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.device_count(), 'GPUs')"
  lscpu | head -20; git log -1 --format=%H 2>/dev/null || echo "${LAB_GIT_COMMIT:-}"; } > $R/$STAGE/env.txt 2>&1
T=$R/$STAGE
case $STAGE in
  tp1)
    python3 benchmarks/hook_overhead.py --out $T/hook_overhead.json > $T/hook_overhead.log 2>&1
    echo "hook_overhead rc=$? ($(( $(date +%s) - T0 )) s)"; pack
    ( export CUDA_VISIBLE_DEVICES=1
      M=$OVERHEAD_MODELS_DIR/llama31-8b-shaped
      for c in schedule prefill default; do
        timeout 150 python3 benchmarks/gpu/explain_planted.py $c --model $M --out $T/planted_$c > $T/planted_$c.log 2>&1
        echo "planted $c rc=$? ($(( $(date +%s) - T0 )) s)"
      done
      to=$(( $(left) - 25 ))
      [ $to -gt 120 ] && python3 benchmarks/gpu/toggle_ab.py --model 8b --out $T --blocks 4 --lat-iters 3 \
        --workloads lat1,lat32,thr --timeout $to 2>&1 | grep '^\[toggle_ab\]'
    ) &
    export CUDA_VISIBLE_DEVICES=0
    python3 benchmarks/gpu/toggle_ab.py --model l4 --out $T --blocks 6 --timeout 170 2>&1 | grep '^\[toggle_ab\]'; pack
    to=$(( $(left) - 25 )); [ $to -gt 170 ] && to=170
    python3 benchmarks/gpu/toggle_ab.py --model 1b --out $T --blocks 6 --timeout $to 2>&1 | grep '^\[toggle_ab\]'; pack
    wait ;;
  tp2|tp2b)
    [ $STAGE = tp2 ] && PAIRS=${PAIRS:-1 2} || PAIRS=${PAIRS:-3}
    for i in $PAIRS; do
      if [ $((i % 2)) -eq 1 ]; then ARMS="stock plugin"; else ARMS="plugin stock"; fi
      for arm in $ARMS; do
        to=$(( $(left) - 20 )); [ $to -gt 200 ] && to=200
        [ $to -lt 90 ] && { echo "not started: tp2 p$i $arm (budget)"; continue; }
        keep=""; [ $i = 1 ] && keep=--keep-traces
        python3 benchmarks/gpu/toggle_ab.py --arm $arm --pair $i --tp 2 $keep --model 8b --out $T --blocks 1 \
          --lat-iters 10 --workloads lat1,lat32,thr --timeout $to 2>&1 | grep '^\[toggle_ab\]'; pack
      done
    done
    if [ $STAGE = tp2 ] && [ "$(left)" -gt 130 ]; then
      OUT=$T TP=2 BATCHES=8 VLLM_W2EXT_TRACE_DIR= timeout $(( $(left) - 10 )) bash benchmarks/gpu/profile_merge.sh \
        > $T/profile.log 2>&1; echo "profile rc=$?"
    fi ;;
  next)
    for m in l4 8b; do
      ov='{}'; [ $m = l4 ] && ov='{"hf_overrides": {"num_hidden_layers": 4}}'
      CUDA_VISIBLE_DEVICES=0 timeout 200 python3 benchmarks/hook_cost_engine.py $OVERHEAD_MODELS_DIR/llama31-8b-shaped \
        --batches 1,64,256 --engine-json "$ov" --out $T/hook_cost_engine_$m.json > $T/hook_cost_engine_$m.log 2>&1
      echo "hook_cost_engine $m rc=$?"; grep '^batch' $T/hook_cost_engine_$m.log; pack
    done
    to=$(( $(left) - 20 )); [ $to -gt 120 ] && python3 benchmarks/gpu/toggle_ab.py --model 8b --tp 2 --out $T \
      --blocks 4 --lat-iters 3 --workloads lat1,lat32,thr --timeout $to 2>&1 | grep '^\[toggle_ab\]' ;;
  *) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
pack
echo "round $STAGE: $(( $(date +%s) - T0 )) s"; ls -la "$OUT"
