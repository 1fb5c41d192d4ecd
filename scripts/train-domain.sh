#!/usr/bin/env bash
# `make train-domain`: retrains the built-in domain classifier head on the all-MiniLM-L6-v2
# embedding from the MMLU-Pro rows in ../shared/data (never committed) and MMLU's dev/val splits
# (tools/data/mmlu-dev-val.jsonl); prints the leave-one-source-out table per category, then writes
# crates/router/assets/domain_head.safetensors (committed). `EVAL_ONLY=1` prints without writing.
# Never trains on an MMLU test item: see tools/examples/train_domain.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
QUESTIONS=${DOMAIN_QUESTIONS:-../shared/data/routing/mmlu-pro-outcomes/questions.jsonl}
if [ ! -f "$QUESTIONS" ]; then
  echo "train-domain: $QUESTIONS not found (the MMLU-Pro rows live beside the repository, in ../shared/data)" >&2
  exit 1
fi
OUT=crates/router/assets/domain_head.safetensors
[ -n "${EVAL_ONLY:-}" ] && OUT=--eval-only
cargo run -q -p llmsoup-tools --example train_domain -- "$QUESTIONS" tools/data/mmlu-dev-val.jsonl \
  .cache/models/all-MiniLM-L6-v2 "$OUT"
