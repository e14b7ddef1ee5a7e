#!/usr/bin/env bash
# Instructions per engine step by Python function (callgrind, inclusive), for the hooks' hot path.
# usage: PYTHON=python3.12 bash benchmarks/hook_functions.sh [BATCH] [flags of hook_instructions.py] > out.txt
#
# CPython 3.12+ with `-X perf` runs every Python function through a trampoline of its own and lists the
# trampolines in /tmp/perf-PID.map; callgrind then charges each function's instructions (its callees included)
# to its trampoline's address, which this maps back to the function's name. A trampoline adds a C call to every
# Python call, so totals read higher than `hook_instructions.sh` (CPython 3.11, no trampolines): use this for
# where the instructions go, that one for how many. PYTHON needs the plugin's pure-Python dependencies (wrapt,
# opentelemetry-sdk, prometheus-client); neither vLLM nor torch is imported. VLLM_W2EXT_SAMPLE applies.
# EVENT=DLmr (or DLmw, ILmr: callgrind's simulated last-level cache misses, data reads / writes / instruction
# fetches) counts those instead of instructions; with hook_instructions.py's ``evict`` flag among the flags, the
# cache lines each function touches that vLLM's own work between two steps would have evicted. N: steps (1000).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.12}; B=${1:-1}; shift || true; N=${N:-1000}; EVENT=${EVENT:-Ir}
CACHE=(); [ "$EVENT" = Ir ] || CACHE=(--cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=2097152,16,64)
out=$(mktemp); log=$(mktemp); trap 'rm -f "$out" "$log"' EXIT
PYTHONPATH="$PWD" PYTHONHASHSEED=${SEED:-0} valgrind --tool=callgrind "${CACHE[@]}" --instr-atstart=no \
  --callgrind-out-file="$out" "$PY" -X perf benchmarks/hook_instructions.py $N "$B" "${@:-in_process}" > "$log" 2>&1
pid=$(sed -n 's/^==\([0-9]*\)==.*/\1/p' "$log" | head -1)
echo "# $($PY --version), batch $B, flags: ${*:-in_process}, VLLM_W2EXT_SAMPLE=${VLLM_W2EXT_SAMPLE:-1}, PYTHONHASHSEED=${SEED:-0}, event $EVENT"
echo "# total per step: $(callgrind_annotate --show=$EVENT "$out" | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d , | awk -v n=$N '{print int($1 / n)}')"
echo "# inclusive $EVENT per step, by function (trampoline-inflated; nested calls counted in each caller)"
callgrind_annotate --inclusive=yes --threshold=100 --show=$EVENT --sort=$EVENT "$out" | "$PY" -c '
import bisect, re, sys, sysconfig
stdlib = sysconfig.get_paths()["stdlib"] + "/"
spans = sorted((int(a, 16), int(s, 16), n.strip()) for a, s, n in (l.split(" ", 2) for l in open(sys.argv[1])))
starts = [s[0] for s in spans]
total = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) \(.*?\)\s+\?\?\?:(0x[0-9a-f]+)", line)
    if m:
        addr = int(m.group(2), 16)
        i = bisect.bisect_right(starts, addr) - 1
        name = spans[i][2] if i >= 0 and addr < spans[i][0] + spans[i][1] else hex(addr)
        name = re.sub(r"^py::", "", name).replace(sys.argv[2] + "/", "").replace(stdlib, "<stdlib>/")
        total[name] = total.get(name, 0) + int(m.group(1).replace(",", ""))
for name, n in sorted(total.items(), key=lambda kv: -kv[1])[:int(sys.argv[3])]:
    print(f"{n // int(sys.argv[4]):9d}  {name}")
' "/tmp/perf-$pid.map" "$PWD" "${TOP:-40}" $N
rm -f "/tmp/perf-$pid.map"
