#!/usr/bin/env bash
# Issue 3 on the H100 (vLLM 0.26.0 staged with shared/gpu): with the plugin's metrics endpoint on,
# `bench throughput` (random 256/256, 500 prompts) and `bench latency` (in 512 / out 128) at batch 1
# and 32; our endpoint scraped every 0.5 s and NVML sampled every 0.1 s over each run.
# Everything lands in $OUT/metrics.tar.gz.
set -uo pipefail
OUT=${OUT:-out}; R=/tmp/w2ext-metrics; rm -rf $R; mkdir -p $R
M=/tmp/llama31-8b-shaped
python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M > /dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $R/gpu.csv
python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" > $R/versions.txt
export VLLM_W2EXT=1 VLLM_W2EXT_METRICS_PORT=9464 VLLM_W2EXT_METRICS_INTERVAL_MS=250
COMMON=(--model $M --load-format dummy --max-model-len 4096)
run() {   # name, then the bench arguments
  local name=$1; shift
  python3 -m vllm_w2ext.lab.gpu_monitor $R/nvml_$name.csv --interval 0.1 --phase $name & local MON=$!
  python3 -m vllm_w2ext.lab.scrape http://127.0.0.1:9464/metrics $R/scrape_$name.prom --interval 0.5 & local SCR=$!
  date +%s.%N > $R/start_$name.txt
  python3 -m vllm.entrypoints.cli.main bench "$@" > $R/bench_$name.log 2>&1
  date +%s.%N > $R/end_$name.txt
  kill -TERM $MON $SCR; wait $MON $SCR
}
run throughput throughput "${COMMON[@]}" --dataset-name random --random-input-len 256 --random-output-len 256 \
  --num-prompts 500 --output-json $R/throughput.json
run latency_bs1 latency "${COMMON[@]}" --input-len 512 --output-len 128 --batch-size 1 --num-iters-warmup 3 \
  --num-iters 10 --output-json $R/latency_bs1.json
run latency_bs32 latency "${COMMON[@]}" --input-len 512 --output-len 128 --batch-size 32 --num-iters-warmup 3 \
  --num-iters 10 --output-json $R/latency_bs32.json
for f in $R/*.prom; do gzip -9 $f; done
python3 -m vllm_w2ext.analysis.metrics.report $R > $R/summary.txt 2>&1; cat $R/summary.txt
tar -C /tmp -czf $OUT/metrics.tar.gz w2ext-metrics; ls -la $OUT
# Raw material for the Perfetto/analyzer issue: torch-profiler traces of decode at batch 1 and 32
# (in 512 / out 128; no Python stacks or shapes, gzip), plugin on. Packed separately.
P=/tmp/w2ext-prof; rm -rf $P; mkdir -p $P
unset VLLM_W2EXT_METRICS_PORT
for bs in 1 32; do
  python3 -m vllm.entrypoints.cli.main bench latency "${COMMON[@]}" --input-len 512 --output-len 128 \
    --batch-size $bs --num-iters-warmup 2 --profile \
    --profiler-config "{\"profiler\":\"torch\",\"torch_profiler_dir\":\"$P/bs$bs\",\"torch_profiler_with_stack\":false,\"torch_profiler_use_gzip\":true}" \
    > $P/profile_bs$bs.log 2>&1
done
ls -laR $P | head -30
tar -C /tmp -cf $OUT/prof.tar w2ext-prof; ls -la $OUT
