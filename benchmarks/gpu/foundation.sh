#!/usr/bin/env bash
# Issue 2 on the H100 (vLLM 0.26.0 staged with shared/gpu): `vllm bench throughput`, random 256/256,
# 500 prompts, dummy Llama-3.1-8B-shaped model, stock and with the plugin (OTLP/gRPC to a receiver on
# loopback) interleaved A/B/A/B on one warm machine. Everything lands in $OUT/foundation.tar.gz plus a
# printed summary.
set -uo pipefail
OUT=${OUT:-out}; R=/tmp/w2ext-foundation; rm -rf $R; mkdir -p $R
M=/tmp/llama31-8b-shaped
python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M > /dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > $R/gpu.csv
python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" > $R/versions.txt
python3 -m vllm_w2ext.cli doctor > $R/doctor.txt 2>&1
VLLM_W2EXT=1 python3 -m vllm_w2ext.cli doctor --attach > $R/doctor_enabled.txt 2>&1
BENCH=(python3 -m vllm.entrypoints.cli.main bench throughput --model $M --load-format dummy
       --dataset-name random --random-input-len 256 --random-output-len 256 --num-prompts 500
       --max-model-len 4096)
run_stock() { "${BENCH[@]}" --output-json $R/throughput_stock_$1.json > $R/throughput_stock_$1.log 2>&1; }
run_plugin() {
  python3 -m vllm_w2ext.receiver $R/spans_$1.jsonl > $R/rx_$1.json 2> $R/receiver_$1.err & RX=$!
  for i in $(seq 50); do [ -s $R/rx_$1.json ] && break; sleep 0.2; done
  PORT=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['grpc_port'])" $R/rx_$1.json)
  VLLM_W2EXT=1 OTEL_SERVICE_NAME=vllm-h100 OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:$PORT \
    OTEL_EXPORTER_OTLP_TRACES_INSECURE=true OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc \
    "${BENCH[@]}" --output-json $R/throughput_plugin_$1.json > $R/throughput_plugin_$1.log 2>&1
  sleep 2; kill -TERM $RX; wait $RX
}
run_stock 0            # warms the torch.compile cache; reported but not paired
for i in 1 2; do run_stock $i; run_plugin $i; done
python3 -m vllm_w2ext.analysis.spans.report $R/spans_2.jsonl --out $R/span_summary.json --excerpt-from 150 --excerpt-steps 4
gzip -9 $R/spans_*.jsonl
python3 - $R <<'PY' | tee $R/summary.txt
import json, sys, glob, os
r = sys.argv[1]
for f in sorted(glob.glob(f"{r}/throughput_*.json")):
    d = json.load(open(f)); print(os.path.basename(f), round(d["tokens_per_second"], 1), "tok/s", round(d["elapsed_time"], 3), "s")
s = json.load(open(f"{r}/span_summary.json"))["summary"]
print(json.dumps(s["span_counts"]), "steps", s["num_steps"], "with links", s["steps_with_links"],
      "children ending after their step", s["child_spans_ending_after_their_step"])
PY
tar -C /tmp -czf $OUT/foundation.tar.gz w2ext-foundation; ls -la $OUT
