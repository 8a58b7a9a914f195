#!/usr/bin/env bash
# Regenerates the Python/transformers reference side of sieve:
#   models/tiny-clip/                   tiny random CLIP + real CLIP tokenizer
#   models/clip-vit-base-patch32/*.json ViT-B/32 config files (no weights)
#   tests/fixtures/{images,captions.json,golden/}
#
# Usage: scripts/make_reference.sh            (VENV=/path overrides the venv)
#
# Needs only PyPI. Creates (or reuses) a throwaway venv with torch +
# transformers (~5.6 GB, ~4 min the first time), fetches the real CLIP BPE
# vocabulary out of the open-clip-torch wheel, then runs make_reference.py.
# Idempotent: running it twice gives the same files.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-/tmp/sieve-ref-venv}"
PY="$VENV/bin/python"

if [[ ! -x "$PY" ]] || ! "$PY" -c 'import torch, transformers, PIL, numpy, safetensors, tokenizers' 2>/dev/null; then
    echo "==> creating venv at $VENV (torch + transformers from PyPI, takes a few minutes)" >&2
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet torch transformers pillow numpy safetensors
else
    echo "==> reusing venv at $VENV" >&2
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "==> fetching the CLIP BPE vocabulary from the open-clip-torch wheel" >&2
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$TMP/wheel" open-clip-torch
WHEEL="$(ls "$TMP"/wheel/open_clip_torch-*.whl | head -n 1)"
"$PY" - "$WHEEL" "$TMP/bpe_simple_vocab_16e6.txt.gz" <<'EOF'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, open(dest, "wb") as f:
    f.write(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
EOF

echo "==> generating model, fixtures and goldens" >&2
cd "$ROOT"
"$PY" scripts/make_reference.py --bpe "$TMP/bpe_simple_vocab_16e6.txt.gz" --root "$ROOT"
