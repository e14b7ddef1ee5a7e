#!/usr/bin/env bash
# Fetch the Python sources of vLLM VERSION from the package registry into DEST (DEST/vllm/...),
# the way CI does it on a fresh machine. Used by tests/test_patches.py to dry-run the patches.
#
#   patches/fetch_vllm_source.sh 0.26.0 tests/.cache/vllm-src/0.26.0
#
# The sdist cannot be fetched with pip without building its metadata (pip installs vLLM's
# build requirements, a pinned CUDA torch), so this downloads the wheel (~300 MB; pip's HTTP
# cache keeps it for the next run) and extracts only vllm/**/*.py. Exits non-zero on failure.
set -euo pipefail
VERSION=${1:?usage: fetch_vllm_source.sh VERSION DEST}
DEST=${2:?usage: fetch_vllm_source.sh VERSION DEST}
PY=${PYTHON:-python3}
if [ -f "$DEST/.complete" ] && [ "$(cat "$DEST/.complete")" = "$VERSION" ]; then
  exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download -q --no-deps --only-binary :all: --platform manylinux_2_28_x86_64 \
  --python-version 3.11 --implementation cp "vllm==$VERSION" -d "$TMP"
WHEEL=$(ls "$TMP"/vllm-"$VERSION"-*.whl)
rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" - "$WHEEL" "$DEST" <<'PYEOF'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("vllm/") and n.endswith(".py")]
    z.extractall(dest, members=names)
print(f"{len(names)} files of {wheel.rsplit('/', 1)[-1]} -> {dest}")
PYEOF
echo "$VERSION" > "$DEST/.complete"
