#!/usr/bin/env bash
# Issue 4 on the H100 (vLLM 0.26.0 staged with shared/gpu, dummy Llama-3.1-8B-shaped weights):
# `bench latency --profile` (in 512 / out 128, one profiled iteration = 1 prefill + 127 decode steps)
# at batch 1 and 32 with the plugin on and its per-process Perfetto span files
# (VLLM_W2EXT_TRACE_DIR), so `vllm-w2ext merge` can put spans and kernels on one clock.
# Everything lands in $OUT/prof_merge.tar (profiler traces gzip'd by vLLM, span files as written).
# Device time: ~2 engine starts (~70-100 s each). TP=2 (two GPUs) profiles both workers (one torch trace per
# rank) and the plugin writes one span file per worker: `vllm-w2ext merge` puts both GPUs on one timeline.
set -uo pipefail
OUT=${OUT:-out}; P=/tmp/w2ext-prof-merge; rm -rf $P; mkdir -p $P
M=/tmp/llama31-8b-shaped
python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M > /dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $P/gpu.csv
python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" > $P/versions.txt
export VLLM_W2EXT=1
for bs in ${BATCHES:-1 32}; do
  VLLM_W2EXT_TRACE_DIR=$P/bs$bs/spans python3 -m vllm.entrypoints.cli.main bench latency \
    --model $M --load-format dummy --max-model-len 4096 --input-len 512 --output-len 128 \
    --batch-size $bs --num-iters-warmup 2 --profile --tensor-parallel-size ${TP:-1} \
    --profiler-config "{\"profiler\":\"torch\",\"torch_profiler_dir\":\"$P/bs$bs/torch\",\"torch_profiler_with_stack\":false,\"torch_profiler_use_gzip\":true}" \
    > $P/profile_bs$bs.log 2>&1
  echo "bs$bs rc=$?"; ls -la $P/bs$bs/spans $P/bs$bs/torch
done
tar -C /tmp -cf $OUT/prof_merge.tar w2ext-prof-merge; ls -la $OUT
