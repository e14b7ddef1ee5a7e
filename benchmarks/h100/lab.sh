#!/usr/bin/env bash
# The lab (issue #5) on the H100: vLLM 0.26.0 staged with shared/gpu (see ../shared/gpu/README.md),
# dummy Llama-3.1-8B-shaped bf16 model (--load-format dummy), max model length 4096, plugin via
# VLLM_W2EXT (every exporter on: OTLP to a loopback receiver + metrics endpoint scraped), NVML
# sampled at 5 Hz around every session. Results land in $OUT/lab (raw/, metrics/, profile/, logs/,
# env.json, report.*). On a cold machine stage vLLM first with benchmarks/h100/split_stage.sh
# (call 1 carries .gpu/p1a; call 2 carries .gpu/p1b + .gpu/p2, runs `split_stage.sh two` and sources
# .gpu/p2/env.sh); later calls on the warm machine: bash .gpu/p2/stage.sh && source .gpu/p2/env.sh.
# The machine is given back after ~30 s idle: issue the next call right away. Keep each call's own
# `timeout` well under the device call limit, and write results under $OUT as they come (a call that
# hits the limit returns nothing). Do not run it here (no GPU).
#
# usage: LAB_GIT_COMMIT=<sha> [LAB_RESUME_FROM=<results dir in the tree>] bash benchmarks/h100/lab.sh STAGE
# One stage per 10-minute device call. Estimated device time (engine start ~55 s with torch.compile
# on a cold machine, ~60-100 s measured per start so far; each stage starts the engine N times):
#   A  models,throughput        4 starts (sharegpt + random, stock + plugin)   ~6-7 min
#   B  latency                  2 starts (bs 1/4/16/32 x 13 iters, both)       ~4-5 min
#   C  profile,online           2 starts (profile bs 1 + 32; serve + 2 x bench serve) ~4-5 min
#   D1 overhead --reps 2        4 starts (ABBA: stock1 plugin1 plugin2 stock2)  ~6-7 min
#   D2 overhead --reps 3        2 starts (resume skips reps 1-2; stock3 plugin3) ~3-4 min
#   R  report                   no engine: gpu_monitor summary + report.md/html/charts  < 1 min
# Total ~25-28 device-minutes: one session's budget. A stage killed by the time limit loses only its
# unfinished session: run it again (resume skips every run whose raw JSON came back).
# Between calls: copy $OUT/lab into the tree (e.g. benchmarks/results/h100/lab) and pass it as
# LAB_RESUME_FROM, so resume and the final report see every stage's raw JSON and NVML CSV.
set -uo pipefail
STAGE=${1:?stage: A B C D1 D2 R}
OUT=${OUT:-out}; L=$OUT/lab; mkdir -p $L
if [ -n "${LAB_RESUME_FROM:-}" ] && [ -d "$LAB_RESUME_FROM" ]; then cp -rn "$LAB_RESUME_FROM"/. $L/; fi
M=/tmp/llama31-8b-shaped
python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M > /dev/null
export LAB_GIT_COMMIT=${LAB_GIT_COMMIT:-unknown}
LAB=(python3 benchmarks/lab.py --target h100 --size full --model $M --out $L --plugin both)
case $STAGE in
  A)  "${LAB[@]}" --only models,throughput ;;
  B)  "${LAB[@]}" --only latency ;;
  C)  "${LAB[@]}" --only profile,online ;;
  D1) "${LAB[@]}" --only overhead --reps 2 ;;
  D2) "${LAB[@]}" --only overhead --reps 3 ;;
  R)  "${LAB[@]}" --only gpu_monitor && python3 -m vllm_w2ext.analysis.lab_report $L ;;
  *)  echo "unknown stage $STAGE (A B C D1 D2 R)"; exit 2 ;;
esac
RC=$?
# keep what travels back small: compress scrapes, drop the plugin's raw trace copies beyond merged output
gzip -9f $L/metrics/*.prom 2>/dev/null
rm -rf $L/profile/profile/torch
du -sh $L; ls $L/raw | tail -40
exit $RC
