#!/usr/bin/env bash
# Where the H200 host's run-to-run spread comes from (issue #19, target 2: a 1 % cost cannot be shown while
# stock iterations of one engine spread 10-30 %). On the device, after staging (split_stage.sh one / two):
#
#   source .gpu/p2/env.sh && bash benchmarks/gpu/noise_probe.sh
#
# 1. the host CPU alone: a pure-Python loop of fixed work, 400 x ~5 ms, wall and thread CPU time per
#    repetition (wall spread with flat CPU time = the vCPU was taken away; both spread = slower cycles),
#    unpinned and pinned to one core (taskset);
# 2. a stock engine (no plugin), 4-layer model, latency batch 1 (4 blocks x 5 iterations,
#    benchmarks/gpu/toggle_ab.py --arm stock), with the GPU's SM clock, utilization and power sampled
#    every 200 ms by nvidia-smi beside it: once placed by the kernel, once with every process on cores
#    PIN_CPUS (default 2-9).
# Writes /tmp/w2ext-noise and packs it into $OUT/noise.tar.gz after each part (a call cut short keeps what ran).
set -uo pipefail
cd "$(dirname "$0")/../.."
R=/tmp/w2ext-noise; mkdir -p $R; OUT=${OUT:-out}; mkdir -p "$OUT"
export OVERHEAD_MODELS_DIR=/tmp/w2ext-models PYTHONUNBUFFERED=1
pack() { tar -C /tmp -czf "$OUT/.noise.tmp" w2ext-noise && mv "$OUT/.noise.tmp" "$OUT/noise.tar.gz"; }
M=$OVERHEAD_MODELS_DIR/llama31-8b-shaped
[ -f $M/tokenizer.json ] || python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M >/dev/null
{ nproc; lscpu | head -20; cat /proc/loadavg; } > $R/host.txt 2>&1

pyloop() {   # $1: name; the rest: command prefix (e.g. taskset -c 3)
  local name=$1; shift
  "$@" python3 - "$R/pyloop_$name.json" <<'PY'
import json, sys, time
def work():
    s = 0
    for i in range(60000):
        s += i * i % 7
    return s
for _ in range(20):
    work()
wall, cpu = [], []
for _ in range(400):
    w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
    work()
    wall.append(time.perf_counter_ns() - w0); cpu.append(time.thread_time_ns() - c0)
json.dump({"wall_ns": wall, "cpu_ns": cpu}, open(sys.argv[1], "w"))
q = lambda v, p: sorted(v)[int(p * (len(v) - 1))] / 1e6
print(f"pyloop {sys.argv[1].rsplit('_', 1)[-1]}: wall p10/p50/p90/max {q(wall,.1):.3f}/{q(wall,.5):.3f}/{q(wall,.9):.3f}/"
      f"{max(wall)/1e6:.3f} ms, cpu p10/p50/p90/max {q(cpu,.1):.3f}/{q(cpu,.5):.3f}/{q(cpu,.9):.3f}/{max(cpu)/1e6:.3f} ms")
PY
}
pyloop free
pyloop pinned taskset -c 3
pack

engine() {   # $1: tag; the rest: command prefix
  local tag=$1; shift
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw,pstate --format=csv,noheader \
    -lms 200 > $R/smi_$tag.csv 2>&1 &
  local smi=$!
  "$@" python3 benchmarks/gpu/toggle_ab.py --arm stock --model l4 --pair 1 --blocks ${BLOCKS:-4} --lat-iters 5 \
    --workloads lat1 --tag $tag --out $R --timeout ${EACH_S:-200} 2>&1 | grep '^\[toggle_ab\]'
  kill $smi 2>/dev/null
  python3 - "$R/l4_${tag}_p1_stock.json" <<'PY'
import json, os, statistics as st, sys
p = sys.argv[1]                                   # toggle_ab's record name for --arm stock --tag TAG --pair 1
if not os.path.exists(p):
    sys.exit(print("no record"))
d = json.load(open(p))
it = [x for m in d.get("measures", []) for x in m["iters"]]
if it:
    print(f"{os.path.basename(p)}: {len(it)} iterations, min {min(it):.4f} median {st.median(it):.4f} max {max(it):.4f} s,"
          f" spread (max-min)/median {(max(it)-min(it))/st.median(it)*100:.1f} %, sd/mean {st.pstdev(it)/st.fmean(it)*100:.1f} %")
PY
  pack
}
engine free
engine pinned taskset -c ${PIN_CPUS:-2-9}
ls -la $R; echo "noise probe done"
