#!/usr/bin/env bash
# The lab (issue #5) on the GPU machine (H100 in earlier rounds, H200 now; the report reads which GPU
# from env.json): vLLM 0.26.0 staged with shared/gpu (see ../shared/gpu/README.md),
# dummy Llama-3.1-8B-shaped bf16 model (--load-format dummy), max model length 4096, plugin via
# VLLM_W2EXT (every exporter on: OTLP to a loopback receiver + metrics endpoint scraped), NVML
# sampled at 5 Hz around every session. Results land in $OUT/lab.tar.gz (lab/: raw/, metrics/, profile/, logs/,
# env.json, report.*). On a cold machine stage vLLM first with benchmarks/gpu/split_stage.sh
# (call 1 carries .gpu/p1a; call 2 carries .gpu/p1b + .gpu/p2, runs `split_stage.sh two` and sources
# .gpu/p2/env.sh); later calls on the warm machine: bash .gpu/p2/stage.sh && source .gpu/p2/env.sh.
# Build the payloads with W2EXT_GPU_EXTRA="wrapt perfetto prometheus-fastapi-instrumentator" (stage C's
# `vllm serve` imports the last one; shared/gpu's list lacks it). The tree + p1b + p2 must fit 64 MiB.
# Results come back as one tarball, $OUT/lab.tar.gz: the device returns a limited number of files
# per call (stage A's raw JSON was once left out by count).
# The machine is given back after ~30 s idle: issue the next call right away. Keep each call's own
# `timeout` well under the device call limit, and write results under $OUT as they come (a call that
# hits the limit returns nothing). Do not run it here (no GPU).
#
# usage: LAB_GIT_COMMIT=<sha> [LAB_RESUME_FROM=<results dir in the tree>] [LAB_TIMEOUT_S=480] \
#          bash benchmarks/gpu/lab.sh STAGE
# One stage per 10-minute device call; the lab itself is killed (process group) after LAB_TIMEOUT_S so
# the call always returns what is written. Engine start ~80 s each (imports, EngineCore spawn,
# compile cache, CUDA graphs); the plan folds throughput, latency and the first A/B repetition into
# one engine per mode (experiments.fold):
#   A  models, throughput, latency, overhead rep 1   2 starts (ab_stock_1, ab_plugin_1)      ~5.5 min
#   B  overhead reps 2-3                              4 starts (ABBA: plugin2 stock2 stock3 plugin3) ~7 min
#   C  profile, online, gpu_monitor                   2 starts (profile bs 1 + 32; serve + 2 x bench serve) ~5 min
#   S  sglang: SGLang's bench_one_batch (staged by sglang_stage.sh: its env file, /tmp/sglang-env.sh or
#      LAB_SGLANG_ENV, is sourced for SGLang's process only) and vLLM stock at the same batch sizes and
#      lengths on one engine                                                               ~5 min
#   R  report (no GPU needed: run it anywhere on the copied results)                      < 1 min
# Total ~18 device-minutes + staging. A stage cut by the timeout loses only its unfinished session:
# run it again (resume skips every session whose raw JSON came back).
# Each stage also keeps its results in LAB_KEEP (/tmp on the device) and starts from them, so back-to-back
# calls on a warm machine resume without a round trip; after the machine was given back, unpack
# $OUT/lab.tar.gz into the tree (e.g. benchmarks/results/h200/lab) and pass it as LAB_RESUME_FROM.
set -uo pipefail
STAGE=${1:?stage: A B C S R}
OUT=${OUT:-out}; L=$OUT/lab; mkdir -p $L
KEEP=${LAB_KEEP:-/tmp/w2ext-lab}      # survives between calls while the machine stays warm
for src in "${LAB_RESUME_FROM:-}" "$KEEP"; do
  if [ -n "$src" ] && [ -d "$src" ]; then cp -rn "$src"/. $L/; fi
done
M=/tmp/llama31-8b-shaped
python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M > /dev/null
export LAB_GIT_COMMIT=${LAB_GIT_COMMIT:-unknown}
LAB=(timeout -k 15 ${LAB_TIMEOUT_S:-480} python3 benchmarks/lab.py --target gpu --size full --model $M --out $L --plugin both)
case $STAGE in
  A)  "${LAB[@]}" --only models,throughput,latency,overhead --reps 1 ;;
  B)  "${LAB[@]}" --only overhead --reps 3 ;;
  C)  "${LAB[@]}" --only ${LAB_C_ONLY:-profile,online,gpu_monitor} ;;
  S)  SGL_ENV=${LAB_SGLANG_ENV:-/tmp/sglang-env.sh}
      "${LAB[@]}" --only sglang --sglang-env "$SGL_ENV" \
        --sglang-args "$(bash -c 'source "$0" && echo "$SGLANG_STAGE_FLAGS"' "$SGL_ENV")" ;;
  R)  python3 -m vllm_w2ext.lab.report $L ;;
  *)  echo "unknown stage $STAGE (A B C S R)"; exit 2 ;;
esac
RC=$?
# keep what travels back small: compress scrapes, drop the plugin's raw trace copies beyond merged output
gzip -9f $L/metrics/*.prom 2>/dev/null
rm -rf $L/profile/profile/torch
mkdir -p $KEEP && cp -r $L/. $KEEP/
du -sh $L; ls $L/raw | grep -v result | tr '\n' ' '; echo
tar -C $OUT -czf $OUT/lab.tar.gz lab && rm -rf $L      # one file back (the device caps the file count)
exit $RC
