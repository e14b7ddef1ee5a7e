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
# (WAIT_S after the run starts: front end ~20 s, engine ~25 s on the H200), py-spy samples every process of
# the run's tree (``pyspy_share.py --tree``: named by role) for DUR_S seconds
# (the process stopped for each stack, ``SPY_FLAGS`` below; idle samples left out, so the samples are CPU).
# Raw stacks (py-spy's collapsed format) go to pyspy/<sample>/<role>_<pid>.txt in $OUT/pyspy.tgz (packed once the
# window ends and again at the end), the run's record
# beside them; benchmarks/gpu/pyspy_share.py reads them.
#
# A throughput window (~850 requests per step on the H200's 4-layer model), timed from the latency task's end:
#   LAT_ITERS=10 THR_PROMPTS=10000 AFTER_LATENCY=1 WAIT_S=8 DUR_S=15 bash benchmarks/gpu/pyspy_share.sh
# (a fixed WAIT_S=75 from the run's start missed it on an H100 host: its 6,000 prompts were done at +64 s;
# results/h100/issue19_current).
# On a fresh machine the first engine run compiles its kernels well into the latency task (results/h200/pyspy:
# the EngineCore still compiling Triton kernels at +65 s): WARMUP=1 runs the engine once, unsampled, first.
# On the 2-core CPU machine the sampler itself can be starved until vLLM's readers stop spinning (seen: the
# window began when the latency task ended); window.json records where it really fell.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}; SPY=${SPY:-.gpu/tools/py-spy}
# The stacks are kept outside $OUT and only their archive goes there: a device call brings back a limited number of
# files (a call cut short after the window once brought back 8 of 14 loose files and no window)
KEEP=/tmp/w2ext-pyspy/keep; rm -rf "$KEEP"; mkdir -p "$OUT"
pack() { tar czf "$OUT/pyspy.tgz.part" -C "$KEEP" pyspy && mv "$OUT/pyspy.tgz.part" "$OUT/pyspy.tgz"; }
MODEL=${MODEL:-l4}; SAMPLES=${SAMPLES:-"64 1"}; WAIT_S=${WAIT_S:-65}; DUR_S=${DUR_S:-20}; RATE=${RATE:-400}
# Default: the process stopped for each stack, a consistent read. --nonblocking read a short, frequent plugin call's
# share 4-10x too low on a planted case (results/cpu/pyspy_torn_check); it stays available as SPY_FLAGS=--nonblocking
SPY_FLAGS=${SPY_FLAGS-}
export OVERHEAD_MODELS_DIR=${OVERHEAD_MODELS_DIR:-/tmp/w2ext-models} PYTHONUNBUFFERED=1
# 400 latency iterations: the 4-layer model's latency task then outlasts the window on an H100 host too (300 ended
# 2 s inside it there, at 0.19 s an iteration: results/h100/issue19_defaults; pyspy_share.py reads such a window as mixed)
export LAT_ITERS=${LAT_ITERS:-400} THR_PROMPTS=${THR_PROMPTS:-100}
chmod +x "$SPY" 2>/dev/null
{ cat /proc/sys/kernel/yama/ptrace_scope 2>/dev/null; id; nproc; } > "$OUT/pyspy_host.txt" 2>&1

if [ "${WARMUP:-0}" = 1 ]; then     # fill the kernel caches: an unsampled run, its output discarded
  python3 benchmarks/gpu/overhead_run.py --model "$MODEL" --pair 0 --arm plugin --dir /tmp/w2ext-pyspy/warmup \
    --timeout 400 > "$OUT/warmup.log" 2>&1
fi
# the run's process group (its own where setsid is there, else the run alone): TERM, up to 20 s to exit (vLLM's
# shutdown), then KILL
if command -v setsid > /dev/null; then SETSID=setsid; G=-; else SETSID=; G=; fi
stop_run() {
  kill -TERM -- "$G$RUN" 2>/dev/null || return 0
  for _ in $(seq 40); do kill -0 -- "$G$RUN" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL -- "$G$RUN" 2>/dev/null; return 0
}
for S in $SAMPLES; do
  D="$KEEP/pyspy/s$S"; R=/tmp/w2ext-pyspy/s$S; rm -rf "$R" "$D"; mkdir -p "$D" "$R"
  # in a process group of its own, killed whole if this script is (a device call's `timeout` killed the shell once,
  # and the run's engine went on holding the GPU beside the next run: results/h100/issue19_c0b6aa4)
  $SETSID python3 benchmarks/gpu/overhead_run.py --model "$MODEL" --pair 1 --arm plugin --sample "$S" --dir "$R" \
    --timeout 400 > "$D/run.log" 2>&1 &
  RUN=$!
  trap stop_run EXIT
  trap 'exit 143' TERM INT
  if [ "${AFTER_LATENCY:-0}" = 1 ]; then    # the window WAIT_S after the latency task's JSON appears (up to 300 s)
    for _ in $(seq 600); do ls "$R"/raw/*.latency.json > /dev/null 2>&1 && break; kill -0 "$RUN" 2>/dev/null || break
      sleep 0.5; done
  fi
  sleep "$WAIT_S"
  python3 benchmarks/gpu/pyspy_share.py --tree "$RUN" > "$D/processes.txt"
  # each thread's CPU time at the window's start, and each process's at its sampler's end: the per-step figures
  # (pyspy_share.py) then hold however much the stops slowed the process (a stopped thread's CPU does not grow)
  python3 benchmarks/gpu/pyspy_share.py --cpu $(cut -d' ' -f1 "$D/processes.txt") > "$D/cpu_start.json"
  T0=$(date +%s.%N)
  while read -r p role _; do
    { "$SPY" record $SPY_FLAGS --threads -r "$RATE" -d "$DUR_S" --pid "$p" -f raw -o "$D/${role}_$p.txt" \
        > "$D/${role}_$p.spy.log" 2>&1; date +%s.%N > "$D/${role}_$p.end"
      python3 benchmarks/gpu/pyspy_share.py --cpu "$p" > "$D/${role}_$p.cpu_end.json"; } &
  done < "$D/processes.txt"
  sleep $((DUR_S + 3)); SAMPLERS=$(jobs -p | grep -vx "$RUN"); [ -z "$SAMPLERS" ] || wait $SAMPLERS
  # the window, for the step-rate conversion (pyspy_share.py): start, nominal end, rate, each sampler's end,
  # whether the samplers stopped the process, each thread's CPU in the window by pid
  python3 - "$D" "$T0" "$DUR_S" "$RATE" "$SPY_FLAGS" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "benchmarks/gpu")
from pyspy_share import cpu_in_window
d, t0, dur, rate = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ends = {p.stem: min(float(p.read_text()), t0 + dur) for p in d.glob("*.end")}
cpu_ends = {}
for p in d.glob("*.cpu_end.json"):
    cpu_ends.update(json.loads(p.read_text() or "{}"))
cpu = cpu_in_window(json.loads((d / "cpu_start.json").read_text() or "{}"), cpu_ends)
(d / "window.json").write_text(json.dumps({"start": t0, "end": t0 + dur, "rate": rate, "ends": ends,
                                           "stopped": "--nonblocking" not in sys.argv[5], "cpu": cpu}))
PY
  pack      # the stacks and their window now: a call cut short while the run goes on still brings them back
  wait "$RUN"
  cp "$R"/runs/*.json "$R"/metrics/*.prom.gz "$D/" 2>/dev/null   # the record; the scrapes: the window's own steps
  cp vllm_w2ext/hooks/runner.py "$D/runner.py.txt"     # the sampled runner: its hand-off lines (pyspy_share.py)
  python3 benchmarks/gpu/pyspy_share.py "$D" > "$D/share.txt" 2>&1
  cat "$D/share.txt"
done
# the device call brings back a limited number of files: one archive, the summaries beside it
pack && for d in "$KEEP"/pyspy/s*; do cp "$d/share.txt" "$OUT/share_$(basename "$d").txt"; done
