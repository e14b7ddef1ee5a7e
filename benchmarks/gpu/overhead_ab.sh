#!/usr/bin/env bash
# Overhead of the plugin with every exporter on (OTLP/gRPC spans to a loopback receiver + the metrics
# endpoint scraped every second) vs stock vLLM 0.26.0 on the H100: `bench throughput` random 256/256,
# 500 prompts and `bench latency` in 512 / out 128 batch 1; interleaved A/B pairs on one warm machine.
# Everything lands in $OUT/overhead.tar.gz.
# usage: [REPS="1 2"] [TAG=name] overhead_ab.sh thr|lat   (every run restarts the engine, ~70-100 s: split
# the repetitions over device calls with REPS, e.g. REPS="1" then REPS="2 3")
set -uo pipefail
MODE=${1:-thr}
REPS=${REPS:-1 2}; TAG=${TAG:-$MODE}
OUT=${OUT:-out}; R=/tmp/w2ext-overhead-$TAG; rm -rf $R; mkdir -p $R
M=/tmp/llama31-8b-shaped
python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M > /dev/null
python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" > $R/versions.txt
COMMON=(--model $M --load-format dummy --max-model-len 4096)
THR=(throughput "${COMMON[@]}" --dataset-name random --random-input-len 256 --random-output-len 256 --num-prompts 500)
LAT=(latency "${COMMON[@]}" --input-len 512 --output-len 128 --batch-size 1 --num-iters-warmup 3 --num-iters 10)
stock() { python3 -m vllm.entrypoints.cli.main bench "$@" > $R/$NAME.log 2>&1; }
plugin() {
  python3 -m vllm_w2ext.receiver $R/spans_$NAME.jsonl > $R/rx_$NAME.json 2>/dev/null & local RX=$!
  local j; for j in $(seq 50); do [ -s $R/rx_$NAME.json ] && break; sleep 0.2; done
  local PORT=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['grpc_port'])" $R/rx_$NAME.json)
  python3 -m vllm_w2ext.lab.scrape http://127.0.0.1:9464/metrics $R/scrape_$NAME.prom --interval 1 & local SCR=$!
  VLLM_W2EXT=1 VLLM_W2EXT_METRICS_PORT=9464 OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:$PORT \
    OTEL_EXPORTER_OTLP_TRACES_INSECURE=true python3 -m vllm.entrypoints.cli.main bench "$@" > $R/$NAME.log 2>&1
  sleep 1; kill -TERM $RX $SCR; wait $RX $SCR
  wc -l < $R/spans_$NAME.jsonl > $R/spans_$NAME.count; rm -f $R/spans_$NAME.jsonl
}
if [ "$MODE" = thr ]; then
  NAME=thr_stock_0; stock "${THR[@]}" --output-json $R/$NAME.json          # compile-cache warm-up
  for i in $REPS; do
    NAME=thr_stock_$i;  stock  "${THR[@]}" --output-json $R/$NAME.json
    NAME=thr_plugin_$i; plugin "${THR[@]}" --output-json $R/$NAME.json
  done
else
  for i in $REPS; do
    NAME=lat_plugin_$i; plugin "${LAT[@]}" --output-json $R/$NAME.json
    NAME=lat_stock_$i;  stock  "${LAT[@]}" --output-json $R/$NAME.json
  done
fi
gzip -9 $R/*.prom
python3 - $R <<'PY' | tee $R/summary.txt
import glob, json, os, sys
r = sys.argv[1]
for f in sorted(glob.glob(f"{r}/*.json")):
    n = os.path.basename(f)[:-5]
    if n.startswith("rx_"): continue
    d = json.load(open(f))
    v = d.get("tokens_per_second") or d.get("avg_latency")
    c = open(f"{r}/spans_{n}.count").read().strip() if os.path.exists(f"{r}/spans_{n}.count") else "-"
    print(n, round(v, 4), "spans", c)
PY
tar -C /tmp -czf $OUT/overhead-$TAG.tar.gz w2ext-overhead-$TAG; ls -la $OUT
