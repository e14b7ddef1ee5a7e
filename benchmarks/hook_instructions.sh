#!/usr/bin/env bash
# Instructions per engine step added by the plugin's hooks (valgrind callgrind), this tree vs REF.
# usage: benchmarks/hook_instructions.sh [REF] > out.json   (REF default: 0cd4bd7, before the redesign)
# Environment: SAMPLES="1 16" (VLLM_W2EXT_SAMPLE values; default 1: every step recorded), PATHS="multiproc
# in_process" (default multiproc), BATCHES="1 500", SAME_HARNESS=1 (REF runs this tree's
# benchmarks/hook_overhead.py stand-ins too: for a REF that has the same hook runner, so only the plugin
# differs; default: REF's own), SEEDS="0 1 2" (PYTHONHASHSEED values, default "0": each figure is the mean over
# the seeds, which are listed with their own counts). Only the calling thread is counted (callgrind
# --separate-threads, thread 1: the thread that runs the steps, vLLM's in the engine): the export thread wakes in
# some runs and not in others while the steps are counted, ~3M instructions when it does, which used to add 0 or
# ~3k per step at random (earlier sessions put that ~3k down to the hash seed).
set -euo pipefail
REF=${1:-0cd4bd7}; PY=${PYTHON:-python3}
SAMPLES=${SAMPLES:-1}; PATHS=${PATHS:-multiproc}; BATCHES=${BATCHES:-1 500}
old=$(mktemp -d); trap 'rm -rf "$old"' EXIT
git archive "$REF" vllm_w2ext benchmarks/hook_overhead.py | tar -x -C "$old"
cp benchmarks/hook_instructions.py "$old/benchmarks/"
[ "${SAME_HARNESS:-0}" = 1 ] && cp benchmarks/hook_overhead.py "$old/benchmarks/"
N=1000
SEEDS=${SEEDS:-0}
count() {  # tree batch sample flags... -> instructions of N steps on the stepping thread (PYTHONHASHSEED=$seed)
  local tree=$1 b=$2 s=$3 cg; shift 3
  cg=$(mktemp -d)
  (cd "$tree" && PYTHONHASHSEED=$seed PYTHONPATH="$tree" VLLM_W2EXT_SAMPLE=$s valgrind --tool=callgrind --instr-atstart=no \
     --separate-threads=yes --callgrind-out-file="$cg/out" $PY benchmarks/hook_instructions.py $N "$b" "$@" >/dev/null 2>&1)
  sed -n 's/^totals: \([0-9]*\)/\1/p' "$cg"/out-01
  rm -rf "$cg"
}
echo "{"
for path in $PATHS; do
  suffix=$([ "$path" = multiproc ] && echo "" || echo "_$path")
  for s in $SAMPLES; do
    ssuffix=$([ "$s" = 1 ] && echo "" || echo "_sample$s")
    for b in $BATCHES; do
      for tree in "$PWD" "$old"; do
        name=$([ "$tree" = "$PWD" ] && echo this || echo "$REF")
        H=0; P=0; per=""
        for seed in $SEEDS; do
          h=$(count "$tree" $b $s $path); p=$(count "$tree" $b $s plain $path)
          H=$((H + h)); P=$((P + p)); per="$per${per:+, }\"$seed\": $(( (h - p) / N ))"
        done
        k=$(echo $SEEDS | wc -w)
        echo "  \"${name}_batch$b$ssuffix$suffix\": {\"hooked_per_step\": $(( H / k / N )), \"plain_per_step\": $(( P / k / N )), \"added_per_step\": $(( (H - P) / k / N )), \"added_by_hash_seed\": {$per}},"
      done
    done
  done
done
echo "  \"tool\": \"valgrind --tool=callgrind, instructions (Ir) per engine step, $($PY --version 2>&1)\""
echo "}"
