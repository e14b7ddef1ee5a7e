# diagnostic: where the 4-layer model's +17 % comes from (latency bs1 only, one engine each)
set -u
M=/tmp/w2ext-models
python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M/l8b > /dev/null 2>&1 || true
run() {  # name, env...
  local name=$1; shift
  env "$@" python3 -m vllm.entrypoints.cli.main bench latency --model $M/l8b --load-format dummy --max-model-len 4096 \
    --hf-overrides '{"num_hidden_layers":4}' --input-len 512 --output-len 128 --batch-size 1 --num-iters-warmup 3 \
    --num-iters 15 --output-json $OUT/diag_$name.json > /tmp/diag_$name.log 2>&1
  python3 -c "import json;print('$name', round(json.load(open('$OUT/diag_$name.json'))['avg_latency'],4))"
}
run stock A=1
run hooks VLLM_W2EXT=1
run hooks_noevents VLLM_W2EXT=1 VLLM_W2EXT_DEVICE_TIMING=off
run trace VLLM_W2EXT=1 VLLM_W2EXT_TRACE_DIR=/tmp/diag_traces
run stock2 A=1
