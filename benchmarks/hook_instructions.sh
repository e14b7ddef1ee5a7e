#!/usr/bin/env bash
# Instructions per engine step added by the plugin's hooks (valgrind callgrind), this tree vs REF.
# usage: benchmarks/hook_instructions.sh [REF] > out.json   (REF default: 0cd4bd7, before the redesign)
set -euo pipefail
REF=${1:-0cd4bd7}; PY=${PYTHON:-python3}
old=$(mktemp -d); trap 'rm -rf "$old"' EXIT
git archive "$REF" vllm_w2ext benchmarks/hook_overhead.py | tar -x -C "$old"
cp benchmarks/hook_instructions.py "$old/benchmarks/"
N=1000
count() {  # tree batch [plain] -> instructions of N steps
  (cd "$1" && PYTHONPATH="$1" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/dev/null $PY \
     benchmarks/hook_instructions.py $N "$2" ${3:-} 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
}
echo "{"
for b in 1 500; do
  for tree in "$PWD" "$old"; do
    name=$([ "$tree" = "$PWD" ] && echo this || echo "$REF")
    h=$(count "$tree" $b); p=$(count "$tree" $b plain)
    echo "  \"${name}_batch$b\": {\"hooked_per_step\": $(( h / N )), \"plain_per_step\": $(( p / N )), \"added_per_step\": $(( (h - p) / N ))},"
  done
done
echo "  \"tool\": \"valgrind --tool=callgrind, instructions (Ir) per engine step, $($PY --version 2>&1)\""
echo "}"
