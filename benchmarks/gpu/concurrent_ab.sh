#!/usr/bin/env bash
# Two engines side by side on one GPU, measured over the same seconds (concurrent_ab.py says why).
#
#   OUT=DIR PAIRS="stock:plugin stock:stock" MODEL=l4 MEASURE_S=70 bash benchmarks/gpu/concurrent_ab.sh
#
# Each pair A:B (arms of toggle_ab.py: stock, plugin, plugin64 = the plugin with VLLM_W2EXT_SAMPLE=64) runs
# both engines at once, each with GPU_SHARE of the GPU's memory, batch 1 latency iterations from one moment
# (START_S after launch: engine start and warm-up fit in it) for MEASURE_S seconds. Writes
# $OUT/concurrent/<pair>/{a,b}*.json (+ logs) and <pair>/summary.json; prints each summary line.
set -uo pipefail
D="${OUT:-/tmp/w2ext-out}/concurrent"
M=${MODEL:-l4}; START_S=${START_S:-80}; MEASURE_S=${MEASURE_S:-70}; SHARE=${GPU_SHARE:-0.4}
arm_args() {  # arm -> toggle_ab.py arguments
  case "$1" in
    stock) echo "--arm stock" ;; plugin) echo "--arm plugin" ;; plugin64) echo "--arm plugin --sample 64" ;;
    *) echo "concurrent_ab: unknown arm $1" >&2; exit 2 ;;
  esac
}
n=0
for pair in ${PAIRS:-stock:plugin stock:stock}; do
  n=$((n + 1)); a=${pair%%:*}; b=${pair##*:}; P="$D/p${n}_${a}_${b}"; mkdir -p "$P"
  start=$(( $(date +%s) + START_S )); timeout=$(( START_S + MEASURE_S + 60 ))
  echo "== pair $n: $a (A) and $b (B) side by side, $(date -u +%T)"
  for side in a b; do
    arm=$([ $side = a ] && echo "$a" || echo "$b")
    python3 benchmarks/gpu/toggle_ab.py --model "$M" $(arm_args "$arm") --pair "$n" --tag "$side" --out "$P" \
      --workloads lat1 --lat-iters 2 --blocks 100000 --start-at "$start" --timeout "$timeout" \
      --engine-json "{\"gpu_memory_utilization\": $SHARE}" > "$P/$side.driver.txt" 2>&1 &
    sleep "${STAGGER_S:-0}"
  done
  wait
  ja=$(ls "$P"/*_a_p${n}_*.json | grep -v spec.json); jb=$(ls "$P"/*_b_p${n}_*.json | grep -v spec.json)
  python3 benchmarks/gpu/concurrent_ab.py "$ja" "$jb" --out "$P/summary.json"
  grep -hE "rc=|Error" "$P/a.driver.txt" "$P/b.driver.txt" | cut -c1-240
done
