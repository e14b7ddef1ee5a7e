#!/usr/bin/env bash
# Which part of the plugin costs batch-1 latency on the H100 (vLLM 0.26.0 staged with shared/gpu):
# one `bench latency` (in 512 / out 128, batch 1, 3 warm-up + 10 iterations) per configuration, each
# with one part of the plugin on. This is what produced benchmarks/results/h100/overhead/diag/ (run
# there as two device calls, the first three configurations, then the last two). Results in $OUT/diag.
# Device time: ~80 s per configuration.
set -uo pipefail
OUT=${OUT:-out}; R=$OUT/diag; mkdir -p $R
M=/tmp/llama31-8b-shaped
python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M > /dev/null
L="python3 -m vllm.entrypoints.cli.main bench latency --model $M --load-format dummy --max-model-len 4096
   --input-len 512 --output-len 128 --batch-size 1 --num-iters-warmup 3 --num-iters 10"
python3 -m vllm_w2ext.receiver $R/spans.jsonl > $R/rx.json 2>/dev/null & RX=$!
sleep 3; PORT=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['grpc_port'])" $R/rx.json)
OTLP="VLLM_W2EXT_OTLP=on OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:$PORT OTEL_EXPORTER_OTLP_TRACES_INSECURE=true"
for cfg in "hooks_only:VLLM_W2EXT_OTLP=off VLLM_W2EXT_NVTX=0" \
           "nvtx_only:VLLM_W2EXT_OTLP=off" \
           "trace_dir:VLLM_W2EXT_OTLP=off VLLM_W2EXT_NVTX=0 VLLM_W2EXT_TRACE_DIR=/tmp/td" \
           "otlp_only:$OTLP" \
           "metrics_only:VLLM_W2EXT_OTLP=off VLLM_W2EXT_METRICS_PORT=9464" \
           ${EXTRA_CONFIGS:-}; do
  n=${cfg%%:*}; e=${cfg#*:}
  env VLLM_W2EXT=1 $e $L --output-json $R/$n.json > $R/$n.log 2>&1
  python3 -c "import json,sys;print(sys.argv[2], json.load(open(sys.argv[1]))['avg_latency'])" $R/$n.json $n
done
kill $RX; wait $RX 2>/dev/null; rm -f $R/spans.jsonl
