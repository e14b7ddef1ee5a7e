#!/usr/bin/env bash
# In-engine toggles (toggle_ab.py) of one model and VLLM_W2EXT_SAMPLE, with every exporter on and with
# none, one after the other on one machine: splits the plugin's end-to-end cost between what it does in
# vLLM's processes (hooks, recording, the export thread) and the export side's load on the host.
#
#   RUNS="l4:64 l4:1" ARMS="all none" BLOCKS=16 LAT_ITERS=5 WORKLOADS=lat1 bash benchmarks/gpu/toggle_exporters.sh
#
# Writes $OUT/toggle_exporters/toggle_<model>_s<N>[_noexp].json (+ .log.gz, .prom.gz); prints each summary.
set -uo pipefail
D="${OUT:-/tmp/w2ext-out}/toggle_exporters"
mkdir -p "$D"
for run in ${RUNS:-l4:64}; do
  m=${run%%:*} s=${run##*:}
  for e in ${ARMS:-all none}; do
    echo "== $m SAMPLE=$s exporters=$e $(date -u +%T)"
    python3 benchmarks/gpu/toggle_ab.py --model "$m" --sample "$s" --exporters "$e" --out "$D" \
      --blocks "${BLOCKS:-16}" --lat-iters "${LAT_ITERS:-5}" --workloads "${WORKLOADS:-lat1}" \
      --timeout "${TIMEOUT:-220}" 2>&1 | grep -E "^\[toggle_ab\]|Error|error:" | tail -6
  done
done
