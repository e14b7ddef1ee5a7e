#!/usr/bin/env bash
# The plugin's share of each vLLM process's CPU, read from stack samples (issue #19), on the device after
# staging (split_stage.sh one / two) with py-spy at .gpu/tools/py-spy:
#
#   source .gpu/p2/env.sh && MODEL=l4 SAMPLES="64 1" bash benchmarks/gpu/pyspy_share.sh
#
# Why: the in-engine toggles (toggle_ab.py) read the plugin's cost as a difference of two noisy times, and
# the H200 host's slow episodes (results/h200/noise) leave a 90 % interval of ~4 points on the 4-layer
# model. A stack sampler reads the plugin's own work inside vLLM's processes directly, as a share of each
# process's CPU samples: noise slows the plugin's frames and vLLM's alike, so the share keeps still.
#
# For each VLLM_W2EXT_SAMPLE in SAMPLES: one plugin-arm engine run of overhead_run.py (every exporter on;
# latency batch 1, LAT_ITERS iterations, then the throughput workload); once the latency phase is warm
# (WAIT_S after the EngineCore appears), py-spy samples every process of the run for DUR_S seconds
# (``--nonblocking``: the sampled process is never stopped; idle samples left out, so the samples are CPU).
# Raw stacks (py-spy's collapsed format) go to $OUT/pyspy/<sample>/<role>_<pid>.txt and the run's record
# beside them; benchmarks/gpu/pyspy_share.py reads them.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}; SPY=${SPY:-.gpu/tools/py-spy}
MODEL=${MODEL:-l4}; SAMPLES=${SAMPLES:-"64 1"}; WAIT_S=${WAIT_S:-30}; DUR_S=${DUR_S:-20}; RATE=${RATE:-400}
export OVERHEAD_MODELS_DIR=${OVERHEAD_MODELS_DIR:-/tmp/w2ext-models} PYTHONUNBUFFERED=1
export LAT_ITERS=${LAT_ITERS:-300} THR_PROMPTS=${THR_PROMPTS:-100}
chmod +x "$SPY" 2>/dev/null
{ cat /proc/sys/kernel/yama/ptrace_scope 2>/dev/null; id; nproc; } > "$OUT/pyspy_host.txt" 2>&1

cmd_of() { tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null; }
ppid_of() { awk '/^PPid:/{print $2}' "/proc/$1/status" 2>/dev/null; }
run_pids() {  # pids of vLLM's processes and their export processes (no pgrep/ps in the device image)
  local d c
  for d in /proc/[0-9]*; do
    c=$(cmd_of "${d#/proc/}")
    c="$c $(cat "$d/comm" 2>/dev/null)"
    case "$c" in *EngineCor*|*export_child*|*engine_driver*|*spawn_main*) echo "${d#/proc/}" ;; esac
  done
}

role_of() {   # $1: pid -> engine | export | front | other (vLLM may retitle only the comm: VLLM::EngineCor)
  local cmd; cmd="$(cmd_of "$1") $(cat "/proc/$1/comm" 2>/dev/null)"
  case "$cmd" in
    *EngineCor*|*spawn_main*) echo engine ;;   # without setproctitle: multiprocessing's spawned child
    *export_child*) echo export ;;
    *engine_driver*) echo front ;;
    *) echo other ;;
  esac
}

for S in $SAMPLES; do
  D="$OUT/pyspy/s$S"; R=/tmp/w2ext-pyspy/s$S; mkdir -p "$D" "$R"
  python3 benchmarks/gpu/overhead_run.py --model "$MODEL" --pair 1 --arm plugin --sample "$S" --dir "$R" \
    --timeout 400 > "$D/run.log" 2>&1 &
  RUN=$!
  for _ in $(seq 120); do
    for p in $(run_pids); do [ "$(role_of "$p")" = engine ] && break 2; done; sleep 1
  done
  sleep "$WAIT_S"
  for d in /proc/[0-9]*; do echo "${d#/proc/} $(ppid_of "${d#/proc/}") $(cat "$d/comm" 2>/dev/null) | $(cmd_of "${d#/proc/}" | cut -c1-160)"; done > "$D/processes.txt" 2>/dev/null
  pids=$(run_pids)
  for p in $pids; do
    role=$(role_of "$p"); [ "$role" = other ] && continue
    # an export process names the vLLM process it serves: its parent
    [ "$role" = export ] && role="export-of-$(role_of "$(ppid_of "$p")")"
    "$SPY" record --nonblocking --threads -r "$RATE" -d "$DUR_S" --pid "$p" -f raw -o "$D/${role}_$p.txt" \
      > "$D/${role}_$p.spy.log" 2>&1 &
  done
  sleep $((DUR_S + 3)); wait "$RUN"
  cp "$R"/runs/*.json "$D/" 2>/dev/null
  python3 benchmarks/gpu/pyspy_share.py "$D" > "$D/share.txt" 2>&1
  cat "$D/share.txt"
done
