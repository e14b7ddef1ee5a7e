#!/usr/bin/env bash
# Stage SGLang 0.5.17 on the lent GPU machine (issue #18 item 1): it has Python 3.12, torch 2.11.0+cu130 (the
# torch sglang 0.5.17 pins), triton 3.6.0 and nvcc, but no SGLang and no network, and each call carries at most
# 64 MiB (the project's tree, ~14 MiB, included). The logic is in sglang_stage.py next to this file.
#
#   here, from the project root (downloads ~520 MiB of wheels once into ~/.cache/w2ext-sglang; xz: ~3 min, 1 core):
#       bash benchmarks/gpu/sglang_stage.sh pack
#     -> .gpu/sglang/part0 .. partN-1 (git-ignored, each <= SGLANG_PART_MB=48 MiB), .gpu/sglang/manifest.json,
#        .gpu/sglang/SHA256SUMS; it prints the number of device calls and their command lines. As built on
#        2026-11-30 the archive is 45.0 MiB: ONE part, so one call (tree ~19 + 45.0 MiB: just under 64).
#   on the device, one call per part, right after each other (the machine keeps /tmp only ~30 s after a call);
#   with one part, staging and the run share the call (carry [".gpu/sglang/part0"]):
#       bash benchmarks/gpu/sglang_stage.sh part 0 && source /tmp/sglang-env.sh \
#         && bash benchmarks/gpu/sglang_stage.sh jit \
#         && python3 -m vllm_w2ext.lab.model_folders llama31-8b-shaped /tmp/llama31-8b-shaped >/dev/null \
#         && python3 -m sglang.bench_one_batch --model-path /tmp/llama31-8b-shaped --load-format dummy \
#              $SGLANG_STAGE_FLAGS --batch-size 32 64 128 --input-len 512 --output-len 256 \
#              --result-filename $OUT/sglang_one_batch.jsonl
#     With more parts (a bigger tree: SGLANG_PART_MB=30 gives two), calls 1..N-1 are just `... part K`.
#     The call that brings the last part joins the parts, checks every sha256, installs the wheels with
#     `pip install --no-index --no-deps --target /tmp/sglang-site`, writes /tmp/sglang-env.sh (PYTHONPATH, JIT
#     cache folders and toolchain paths, SGLANG_STAGE_FLAGS="--attention-backend triton --sampling-backend
#     pytorch") and checks `import sglang, sgl_kernel, flashinfer` and the modules bench_one_batch imports,
#     then `python -m sglang.bench_one_batch --help`. `jit` (optional, ~1 min) compiles the kernels the run
#     would compile at its first forward (flashinfer rmsnorm, sglang rope and KV store) so a toolchain problem
#     shows apart from the benchmark. Later calls on the same warm machine:
#       bash benchmarks/gpu/sglang_stage.sh check && source /tmp/sglang-env.sh && ...
#   Overrides: SGLANG_PART_MB, SGLANG_XZ_THREADS, SGLANG_STAGE_CACHE (pack); SGLANG_SITE, SGLANG_STAGE_DIR,
#   SGLANG_ENV_FILE, SGLANG_JIT_DIR (device); SGLANG_STAGE_PYTHON (interpreter, default python3).
# Ran on the H200 on 2026-11-30 (results/h200/sglang/); see benchmarks/README.md, "SGLang on the H200".
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${SGLANG_STAGE_PYTHON:-python3}"
case "${1:-}" in
  pack)
    [ -e .git ] || { echo "sglang_stage: run from the project root" >&2; exit 2; }
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || git check-ignore -q .gpu/sglang \
      || { echo "sglang_stage: .gpu/ is not git-ignored here; refusing to write the payload into the tree" >&2; exit 2; }
    exec "$PY" "$HERE/sglang_stage.py" pack ;;
  part)
    [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "usage: $0 part K" >&2; exit 2; }
    exec "$PY" "$HERE/sglang_stage.py" part "$2" ;;
  check|jit)
    exec "$PY" "$HERE/sglang_stage.py" "$1" ;;
  *)
    echo "usage: $0 pack | part K | check | jit   (see the header of $0)" >&2; exit 2 ;;
esac
