#!/usr/bin/env bash
# One end event per step, placed by the export thread's anchors (hooks/gpu_timing.py), on the H200 host, in one
# device call after staging (issue #19):
#   1. the hooks' cost, old timing (start + end events, ab_old) against new (ab_new), interleaved, fully traced
#      (VLLM_W2EXT_SAMPLE=1), batch 1 and 64 (hook_cost_ab.sh; each run's device timeline read back by explain);
#   2. the planted causes (explain_planted.py, 8B-shaped model) with the new timing, checked by explain_check.py:
#      the device idle explain attributes must still find what was planted.
#   source .gpu/p2/env.sh && bash benchmarks/gpu/device_timing_round.sh      (results: $OUT/$NAME.tgz)
# NAME (default device_timing), BATCHES (default 1,64), PAIRS (2): later rounds of a timing change reuse it.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}; T0=$(date +%s); BUDGET_S=${BUDGET_S:-420}
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
NAME=${NAME:-device_timing}
pack() { (cd "$OUT" && tar czf .dt.tmp "$NAME" explain planted_*.log 2>/dev/null; mv .dt.tmp "$NAME.tgz"); }
NAME=$NAME ARMS="ab_old ab_new" BATCHES=${BATCHES:-1,64} CHURN=0 SAMPLE=1 PAIRS=${PAIRS:-2} EACH_S=110 \
  bash benchmarks/gpu/hook_cost_ab.sh; pack
M=${OVERHEAD_MODELS_DIR:-/tmp/w2ext-models}/llama31-8b-shaped; P=/tmp/w2ext-planted; rm -rf $P
for c in schedule default prefill; do
  [ "$(left)" -lt 100 ] && { echo "not started: planted $c (budget)"; continue; }
  PYTHONPATH="ab_new:$PYTHONPATH" timeout 95 python3 benchmarks/gpu/explain_planted.py $c --model $M --out $P/planted_$c \
    > "$OUT/planted_$c.log" 2>&1
  echo "planted $c rc=$? ($(( $(date +%s) - T0 )) s)"
done
PYTHONPATH="ab_new:$PYTHONPATH" python3 benchmarks/gpu/explain_check.py $P/planted_* --out "$OUT/explain" 2>&1 | tail -6
pack; ls -la "$OUT"
