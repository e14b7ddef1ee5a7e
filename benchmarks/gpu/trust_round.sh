#!/usr/bin/env bash
# The twenty-fifth session's H200 checks of the device timeline's launch fix (576ec4f) and the cost budget with
# its corrected idle bound (issue #19), one part per device call after staging:
#   flip     the plugin's cost per decode step at this commit, fully traced (4-layer model, batch 1,
#            toggle_ab.py flip1: the forward-launch hook included)
#   budget   the same switched decode with VLLM_W2EXT_COST_BUDGET=1 (the N it settles on is in the log), then the
#            device timeline against CUPTI on the 1B-shaped model at batch 1 (device_busy_check.py)
#   sample   the same switched decode with VLLM_W2EXT_SAMPLE=$N (default 32: the N the budget settled near)
#   scope    where the cost that sampling leaves comes from: the switched decode at VLLM_W2EXT_SAMPLE=$N (default 32)
#            with only the engine's processes switched (the front end stays on), then only the front end
#   noexp    the same switched decode at VLLM_W2EXT_SAMPLE=$N (default 32) with no exporter configured
#            (toggle_ab.py --exporters none: no export process, receiver or scraper), every process switched, then
#            the front end alone
#   cut1, cut2  after the front end's sampled process_outputs (3c63f4a): the switched decode at
#            VLLM_W2EXT_SAMPLE=$N (default 32), front end alone / every process, alternating (cut1: front all front,
#            cut2: all front all; run i of a part is tagged _i)
#   rot      whether the shares add up (results/h200/cut: front end +0.22, engine +0.13, every process +1.18 %):
#            $RUNS (default 3: fits a call with staging; 4 in a later call) runs that each rotate the three scopes through 12 generates (toggle_ab.py
#            --flip-scope all,front,engine), so the whole and both shares are read on one host in one engine;
#            flip_summary.py pools their gaps (all - front - engine) between runs. ~110 s a run.
#   t2       target 2 beyond the 4-layer model at batch 1 (results/h200/rot): the switched decode at
#            VLLM_W2EXT_SAMPLE=$N (default 32), every process switched, on MODEL (l4|1b, default 1b) with workload
#            WL (flip1: batch 1; flip256: 256 requests per step), $RUNS runs (default 3) of $GENS generates
#            (default 10), read between runs by flip_summary.py. ~90-150 s a run of 10 at batch 1 (1B). At 256 a
#            generate takes ~10 s and a run stops at its deadline (TO less 60 s from its start): GENS=16 TO=290,
#            two runs a call, ~210-230 s a run (results/h200/t2b; t2's runs there stopped after 5-8 generates).
#            flip256 switches every 24 steps since the thirty-third session (was 48: results/h200/flip_power).
#            INTERVAL: the export interval in ms (default 50, as all runs before; the plugin's default is 200).
#            Keep TO at 240 or more for flip1: a run stops at TO less 60 s, and TO=150 stopped the first run
#            (it compiles the model) after 1 of 10 generates and the others after 7 and 9 (results/h200/t2c).
#   ratio    the plugin's self-cost counter against hook_cost_engine.py's direct timing on this host
#            (results/cpu/selfcost_vs_direct): $PAIRS (default 3) pairs of a timed run and a --counter-only run,
#            fully traced, 4-layer model, batch 1, the order alternating; selfcost_shares.py reads them. ~40 s a run.
#            RATIO_ARGS: more hook_cost_engine.py arguments, ENGINE_JSON: its --engine-json (the CPU smoke:
#            RATIO_ARGS=--cpu ENGINE_JSON={} with OVERHEAD_MODELS_DIR holding the tiny model as llama31-8b-shaped).
#   served   target 1 where users run it, at the plugin's defaults (export interval 200 ms): one engine on MODEL
#            (default 1b) with the plugin on and never switched (toggle_ab.py --arm plugin), workload WL (default
#            lat1: batch 1, 512 in, 128 out), $BLOCKS (16) x $ITERS (10) iterations, once per VLLM_W2EXT_SAMPLE in
#            $SAMPLES (default "32 1"); toggle_counters.py reads each run's last full scrape (counters.md). No paused
#            steps, so unlike the flip runs' the export thread's figure is not inflated. ~60-90 s a run.
#   explain  planted causes on the 8B-shaped model with the new timeline (explain_planted.py: prepare, schedule,
#            default), checked by explain_check.py
#   source .gpu/p2/env.sh && bash benchmarks/gpu/trust_round.sh PART      (results: $OUT/PART.tgz; t2: $OUT/t2_MODEL_WL.tgz)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}; PART=${1:?flip|budget|sample|scope|noexp|cut1|cut2|rot|t2|ratio|served|explain}; T0=$(date +%s)
NAME=$PART; [ "$PART" = t2 ] && NAME="t2_${MODEL:-1b}_${WL:-flip1}"
D="$OUT/$NAME"; mkdir -p "$D"
pack() { (cd "$OUT" && tar czf ".$NAME.tmp" "$NAME" && mv ".$NAME.tmp" "$NAME.tgz" && rm -rf "$NAME"); }
# the switched decode at VLLM_W2EXT_SAMPLE=$N (default 32) once per --flip-scope in $1, the other arguments added
switched_runs() {     # SCOPES [ARGS]; with INDEX=1 run i is tagged _i (a scope may then come twice)
  local scopes=$1 i=0; shift
  for sc in $scopes; do
    i=$((i + 1))
    timeout $(( ${TO:-210} + 20 )) python3 benchmarks/gpu/toggle_ab.py --model "${MODEL:-l4}" --out "$D" \
      --workloads "${WL:-flip1}" --flip-gens 10 --export-interval-ms "${INTERVAL:-50}" --sample "${N:-32}" \
      --flip-scope $sc "$@" --tag "${TAG:-head}_i${INTERVAL:-50}${INDEX:+_$i}" --timeout ${TO:-210} 2>&1 \
      | grep '^\[toggle_ab\]' | tee -a "$D/summary.txt"
  done
}
# provenance: the device copy's git metadata can be stale (results/h200/t2c); each file's sum, in a fixed order, is not
{ git log -1 --format='%h %s' 2>/dev/null | cut -c1-120; LC_ALL=C md5sum vllm_w2ext/hooks/*.py vllm_w2ext/steps/*.py; nvidia-smi -L;
  python3 -c 'import vllm, torch, sys; print(vllm.__version__, torch.__version__, sys.version.split()[0])'; } \
  > "$D/env.txt" 2>&1
case "$PART" in
  flip)
    timeout 300 python3 benchmarks/gpu/toggle_ab.py --model l4 --out "$D" --workloads flip1 --flip-gens 10 \
      --export-interval-ms 50 --tag head_i50 --timeout 280 2>&1 | grep '^\[toggle_ab\]' | tee "$D/summary.txt" ;;
  budget)
    timeout 300 python3 benchmarks/gpu/toggle_ab.py --model l4 --out "$D" --workloads flip1 --flip-gens 10 \
      --export-interval-ms 50 --cost-budget 1 --tag head_i50 --timeout 280 2>&1 | grep '^\[toggle_ab\]' \
      | tee "$D/summary.txt"
    zcat "$D"/*.log.gz | grep -a "vllm_w2ext: the plugin took" > "$D/budget_lines.txt"
    timeout 200 python3 benchmarks/gpu/device_busy_check.py --model 1b --batch 1 --out-tokens 300 \
      --out "$D/busy_1b_b1.json" > "$D/busy_1b_b1.log" 2>&1; echo "busy 1b rc=$?" ;;
  sample)
    timeout 300 python3 benchmarks/gpu/toggle_ab.py --model l4 --out "$D" --workloads flip1 --flip-gens 10 \
      --export-interval-ms 50 --sample "${N:-32}" --tag head_i50 --timeout 280 2>&1 | grep '^\[toggle_ab\]' \
      | tee "$D/summary.txt" ;;
  scope) switched_runs "engine front" ;;
  noexp) switched_runs "all front" --exporters none ;;
  cut1) INDEX=1 switched_runs "front all front" ;;
  cut2) INDEX=1 switched_runs "all front all" ;;
  rot) TO=260 INDEX=1 switched_runs "$(printf 'all,front,engine %.0s' $(seq "${RUNS:-3}"))" --flip-gens 12 ;;
  t2) MODEL=${MODEL:-1b} TAG="${WL:-flip1}" INDEX=1 TO=${TO:-240} \
        switched_runs "$(printf 'all %.0s' $(seq "${RUNS:-3}"))" --flip-gens "${GENS:-10}" ;;
  ratio)
    M=${OVERHEAD_MODELS_DIR:-/tmp/w2ext-models}/llama31-8b-shaped
    [ -f $M/tokenizer.json ] || python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M >/dev/null
    OV='{"hf_overrides": {"num_hidden_layers": 4}}'; EJ=${ENGINE_JSON:-$OV}
    for p in $(seq "${PAIRS:-3}"); do
      order="timed counter"; [ $((p % 2)) = 0 ] && order="counter timed"
      for m in $order; do
        f=""; [ $m = counter ] && f=--counter-only
        VLLM_W2EXT_SAMPLE=1 timeout 150 python3 benchmarks/hook_cost_engine.py "$M" --batches 1 --rounds 6 \
          --max-tokens 256 --engine-json "$EJ" --sample-every 8 $f ${RATIO_ARGS:-} \
          --out "$D/${m}_$p.json" > "$D/${m}_$p.log" 2>&1
        echo "$m $p rc=$? ($(( $(date +%s) - T0 )) s)"; gzip -f "$D/${m}_$p.log"
      done
    done
    python3 benchmarks/selfcost_shares.py "$D" | tee "$D/shares.md" | tail -1 ;;
  served)
    for s in ${SAMPLES:-32 1}; do
      timeout 300 python3 benchmarks/gpu/toggle_ab.py --arm plugin --model "${MODEL:-1b}" --out "$D" \
        --workloads "${WL:-lat1}" --blocks "${BLOCKS:-16}" --lat-iters "${ITERS:-10}" --sample "$s" --tag served \
        --timeout 280 2>&1 | grep '^\[toggle_ab\]' | tee -a "$D/summary.txt"
    done
    python3 benchmarks/gpu/toggle_counters.py "$D"/*.prom.gz | tee "$D/counters.md" ;;
  explain)
    MD=${OVERHEAD_MODELS_DIR:-/tmp/w2ext-models}; M=$MD/llama31-8b-shaped; P=/tmp/w2ext-planted; rm -rf $P
    [ -d "$M" ] || python3 -c "import sys; sys.path.insert(0, 'benchmarks/gpu'); import overhead_run as o; \
      from pathlib import Path; o.model_folder('l4', Path('$MD'))"
    for c in prepare schedule default; do
      timeout 150 python3 benchmarks/gpu/explain_planted.py $c --model $M --out $P/planted_$c \
        > "$D/planted_$c.log" 2>&1
      echo "planted $c rc=$? ($(( $(date +%s) - T0 )) s)"
      gzip -f "$D/planted_$c.log"
    done
    python3 benchmarks/gpu/explain_check.py $P/planted_* --out "$D/explain" 2>&1 | tail -6 ;;
esac
pack; ls -la "$OUT"
