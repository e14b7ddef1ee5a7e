#!/usr/bin/env bash
# Issue 2 on the H100 (vLLM 0.26.0 staged with shared/gpu): `vllm bench throughput`, random 256/256,
# 500 prompts, dummy Llama-3.1-8B-shaped model; stock once, then with the plugin exporting OTLP/gRPC
# to a receiver on loopback. Writes raw outputs, doctor output, span counts and a step excerpt to $OUT.
set -uo pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
M=/tmp/llama31-8b-shaped
python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped $M > /dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv"
python3 -c "import vllm, torch; print(vllm.__version__, torch.__version__)" > "$OUT/versions.txt"
python3 -m vllm_w2ext.cli doctor > "$OUT/doctor.txt" 2>&1
VLLM_W2EXT=1 python3 -m vllm_w2ext.cli doctor --attach --json > "$OUT/doctor.json" 2>/dev/null
BENCH=(python3 -m vllm.entrypoints.cli.main bench throughput --model $M --load-format dummy
       --dataset-name random --random-input-len 256 --random-output-len 256 --num-prompts 500
       --max-model-len 4096)
"${BENCH[@]}" --output-json "$OUT/throughput_stock.json" > "$OUT/throughput_stock.log" 2>&1
python3 -m vllm_w2ext.receiver /tmp/spans.jsonl > /tmp/rx.json 2> "$OUT/receiver.err" & RX=$!
for i in $(seq 50); do [ -s /tmp/rx.json ] && break; sleep 0.2; done
PORT=$(python3 -c "import json;print(json.load(open('/tmp/rx.json'))['grpc_port'])")
VLLM_W2EXT=1 OTEL_SERVICE_NAME=vllm-h100 OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:$PORT \
  OTEL_EXPORTER_OTLP_TRACES_INSECURE=true OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc \
  "${BENCH[@]}" --output-json "$OUT/throughput_plugin.json" > "$OUT/throughput_plugin.log" 2>&1
sleep 2; kill -TERM $RX; wait $RX
python3 -m vllm_w2ext.analysis.span_report /tmp/spans.jsonl --out "$OUT/span_summary.json" --excerpt-from 200 --excerpt-steps 6
gzip -c /tmp/spans.jsonl > "$OUT/spans.jsonl.gz"; ls -la "$OUT"
python3 - "$OUT" <<'PY'
import json, sys
o = sys.argv[1]
for k in ("stock", "plugin"):
    try: print(k, json.load(open(f"{o}/throughput_{k}.json")))
    except Exception as e: print(k, "missing", e)
print(json.dumps(json.load(open(f"{o}/span_summary.json"))["summary"], indent=1)[:3000])
PY
