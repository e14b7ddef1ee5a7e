#!/usr/bin/env bash
# What issue #19 still needs from an H200, one part per device call after staging (split_stage.sh one, then two in
# the call of the first part), most needed first. Each part writes its archives to $OUT as each run ends, so a call
# cut short returns what finished; a part starts a run only if BUDGET_S (default 540) leaves it TO_* seconds.
#
#   lat   target 2 at batch 1, fully traced at the plugin's defaults (VLLM_W2EXT_SAMPLE=1, every exporter on, export
#         interval auto; INTERVAL=200 for the runs before it): the switched decode (trust_round.sh t2, toggle_ab.py flip1: every process switched every
#         64 decode steps inside one running decode) on each model of MODELS (default "l4 1b"), one run each
#         (10 generates: 5 switched, 5 A/A; ~130-200 s a run). $OUT/t2_<model>_flip1.tgz
#   spy   target 1's breakdown without a timing harness: py-spy's stack samples of every process of a fully traced
#         4-layer engine at batch 1 (pyspy_share.sh SAMPLES=1: hooks, recording and the export thread by function,
#         ~110 s; py-spy at .gpu/tools/py-spy, carried with part two), then hook_cost_engine.py on the same model at
#         batch 1 through h200_round.sh cost (every hook timed, the export thread's CPU and GIL hold, its send by
#         take / encode / deliver; ~60 s). $OUT/pyspy.tgz, $OUT/round-cost.tar.gz
#   thr   target 2 at 256 requests per step: trust_round.sh t2 with WL=flip256 (16 generates, ~210-230 s a run) on
#         each model of MODELS. $OUT/t2_<model>_flip256.tgz
#   big   the 8B-shaped model (target 2: its numbers stay within 0.5 %): flip1 as in lat. $OUT/t2_8b_flip1.tgz
#   hi    target 1 at ~500 requests per step, fully traced: py-spy's stack samples in a throughput window
#         (pyspy_share.sh's recipe: 10 latency iterations, then 10,000 prompts, a 40 s window at 400 Hz 8 s after
#         the latency task's end, the process stopped for each stack; the engine's batch capped at
#         MAX_NUM_SEQS=512, as vLLM's default 1,024 filled it on an H100 host: results/h100/issue19_hi; ~160 s),
#         then hook_cost_engine.py at batch 512 with churn (requests finishing and joining all through; ~90 s).
#         $OUT/pyspy.tgz, $OUT/round-cost.tar.gz
#   layout target 1 in vLLM's own layout (front end in the driver, EngineCore in a process of its own; TP=1) from the
#         plugin's metrics endpoint, round by round (budget_settled.sh: cost_budget_engine.py): the direct counter
#         (every C front's call timed), the sampled one and the export threads' CPU per executed engine step, at batch
#         1 (4 rounds x 1,500 tokens), at 512 requests per step without churn (2 rounds of 512 x 256 tokens) and with
#         it (2 rounds of 1,024 requests of 128-384 tokens, the engine capped at 512; ~200 s in all once compiled),
#         the direct counter split by hook where the plugin has it (budget_settled_table.py --by-hook).
#         $OUT/budget_settled/
#
#   layout_ab  the same layout, two versions of the plugin interleaved (ARMS: budget_settled.sh's eighth field), each
#         arm twice per workload (WORKLOADS="b1" in one call, "c" in the next: ~300 s each once compiled).
#         $OUT/budget_settled/
#
#   call 1:  bash benchmarks/gpu/split_stage.sh one                     (carry .gpu/p1a)
#   call 2:  bash benchmarks/gpu/split_stage.sh two && source .gpu/p2/env.sh && python3 setup.py build_ext --inplace \
#              && bash benchmarks/gpu/issue19_round.sh lat               (carry .gpu/p1b .gpu/p2 .gpu/tools)
#   later:   bash .gpu/p2/stage.sh && source .gpu/p2/env.sh && bash benchmarks/gpu/issue19_round.sh spy   (etc.)
# Then here: unpack the t2 archives under benchmarks/results/h200/<folder>/ and read them with
#   python3 benchmarks/gpu/flip_summary.py <folder>/toggle_*.json --out <folder> --issue-format <folder>/issue.json
# (issue #19's {"model", "layers", "workload", "stock", "plugin"} list, pair by pair; flip_summary.py says how).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 OUT=${OUT:-out} OVERHEAD_MODELS_DIR=${OVERHEAD_MODELS_DIR:-/tmp/w2ext-models}
PART=${1:?usage: $0 lat|spy|thr|big|hi|layout|layout_ab}; T0=$(date +%s); BUDGET_S=${BUDGET_S:-540}; mkdir -p "$OUT"
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
t2() {     # MODEL WL TO [GENS]: one fully traced switched-decode run at the defaults, if the budget leaves TO
  local m=$1 wl=$2 to=$3 gens=${4:-10}
  if [ "$(left)" -lt $((to + 25)) ]; then echo "not started: $m $wl ($(left) s left)"; return; fi
  MODEL=$m WL=$wl N=1 RUNS=1 TO=$to GENS=$gens INTERVAL=${INTERVAL:-auto} bash benchmarks/gpu/trust_round.sh t2
  echo "$m $wl done ($(( $(date +%s) - T0 )) s)"
}
spy_cost() {  # MIN_S COST_ARGS [VAR=value ...]: py-spy's samples of a fully traced 4-layer engine (pyspy_share.sh, its
              # settings as given) if the budget leaves MIN_S, then hook_cost_engine.py through h200_round.sh cost
  local min=$1 cost=$2; shift 2
  if [ "$(left)" -lt "$min" ]; then echo "not started: py-spy ($(left) s left)"; else
    env MODEL=l4 SAMPLES=1 "$@" bash benchmarks/gpu/pyspy_share.sh; echo "py-spy done ($(( $(date +%s) - T0 )) s)"; fi
  COST_RUNS=l4:1 COST_ARGS="$cost" BUDGET_S=$(left) bash benchmarks/gpu/h200_round.sh cost
}
case "$PART" in
  lat) for m in ${MODELS:-l4 1b}; do t2 "$m" flip1 "${TO_LAT:-220}"; done ;;
  thr) for m in ${MODELS:-l4 1b}; do t2 "$m" flip256 "${TO_THR:-290}" 16; done ;;
  layout) RUNS=${RUNS:-"b1 0 1500 1 4 0;b512 0 256 512 2 0;b512churn 0 256 512 2 1"} EACH_S=${EACH_S:-200} \
            bash benchmarks/gpu/budget_settled.sh ;;
  layout_ab)   # two versions of the plugin (ARMS, default "ab_old ab_new": folders holding a vllm_w2ext package) in
               # vLLM's layout, interleaved a1 a2 a2 a1, for each of WORKLOADS (default "b1 c"; one per call fits its
               # limit): b1 batch 1 (4 rounds x 1,500 tokens), c 512 requests per step with churn (2 rounds);
               # SPEC_B1 / SPEC_C: another run's fields 2-7 (budget_settled.sh's RUNS)
    set -- ${ARMS:-ab_old ab_new}; a1=$1; a2=$2; runs=""
    for k in ${WORKLOADS:-b1 c}; do
      case $k in b1) f=${SPEC_B1:-0 1500 1 4 0 -} ;; c) f=${SPEC_C:-0 256 512 2 1 -} ;; *) echo "unknown workload $k"; exit 2 ;; esac
      runs="$runs;${k}_${a1#ab_}_1 $f $a1;${k}_${a2#ab_}_1 $f $a2;${k}_${a2#ab_}_2 $f $a2;${k}_${a1#ab_}_2 $f $a1"
    done
    RUNS=${runs#;} EACH_S=${EACH_S:-130} bash benchmarks/gpu/budget_settled.sh ;;
  big) t2 8b flip1 "${TO_LAT:-220}" ;;
  spy) spy_cost 150 "--batches 1 --rounds 6 --max-tokens 256" ;;
  hi) spy_cost 170 "--batches 512 --rounds 3 --max-tokens 128 --churn" LAT_ITERS=10 THR_PROMPTS=10000 AFTER_LATENCY=1 \
       WAIT_S=8 DUR_S=40 RATE=400 MAX_NUM_SEQS=${MAX_NUM_SEQS:-512} ;;
  *) echo "unknown part: $PART (lat|spy|thr|big|hi|layout|layout_ab)"; exit 2 ;;
esac
ls -la "$OUT"
