#!/usr/bin/env bash
# The project's tree travels with every device call, and ../shared/gpu's p1 payload (~58 MiB) leaves it
# only ~5 MiB of the 64 MiB per call. This moves the tail of p1's vLLM archive into the second call
# (50 MiB in call 1, ~16 MiB + p2's ~30 MiB in call 2: the tree may be up to ~13 MiB):
#
#   here:      bash benchmarks/gpu/split_stage.sh pack        # after ../shared/gpu/build-payloads.sh
#   call 1:    bash benchmarks/gpu/split_stage.sh one          carry .gpu/p1a
#   call 2:    bash benchmarks/gpu/split_stage.sh two && source .gpu/p2/env.sh && ...   carry .gpu/p1b .gpu/p2
#   later calls on the same warm machine: bash .gpu/p2/stage.sh && source .gpu/p2/env.sh && ...
set -euo pipefail
STAGE="${W2EXT_SITE:-/tmp/w2ext-site}.stage"
case "${1:-}" in
  pack)
    rm -rf .gpu/p1a .gpu/p1b && mkdir -p .gpu/p1a .gpu/p1b
    split -b ${SPLIT_MB:-50}M -d -a 1 .gpu/p1/vllm.tar.xz .gpu/p1a/vllm.tar.xz.part
    mv .gpu/p1a/vllm.tar.xz.part1 .gpu/p1b/
    cp .gpu/p1/stage.sh .gpu/p1/env.sh .gpu/p1a/
    (cd .gpu/p1 && sha256sum vllm.tar.xz) > .gpu/p1b/vllm.tar.xz.sha256
    du -sh .gpu/p1a .gpu/p1b .gpu/p2 ;;
  one)
    mkdir -p "$STAGE" && cp .gpu/p1a/vllm.tar.xz.part0 "$STAGE/" && echo "split_stage: part 0 kept in $STAGE" ;;
  two)
    [ -f "$STAGE/vllm.tar.xz.part0" ] || { echo "split_stage: part 0 is gone (machine was given back): run call 1 again"; exit 3; }
    mkdir -p .gpu/p1 && cat "$STAGE/vllm.tar.xz.part0" .gpu/p1b/vllm.tar.xz.part1 > .gpu/p1/vllm.tar.xz
    (cd .gpu/p1 && sha256sum -c ../p1b/vllm.tar.xz.sha256)
    cp .gpu/p2/stage.sh .gpu/p2/env.sh .gpu/p1/
    bash .gpu/p1/stage.sh && bash .gpu/p2/stage.sh ;;
  *) echo "usage: $0 pack|one|two" >&2; exit 2 ;;
esac
