#!/usr/bin/env bash
# `make train-router`: trains the learned router (the `difficulty` signal) on the MMLU-Pro
# per-question outcomes in ../shared/data/routing/mmlu-pro-outcomes (never committed), prints the
# leave-one-source-out validation (APGR / CPT(50%) against prompt length, random and the
# complexity score) and writes crates/router/assets/difficulty_head.json (committed).
# `--check` (`make check-train-router`) trains into a temporary file instead and fails unless it
# is byte for byte the committed head: the weights in the repository are the ones this program
# makes from the data.
# Single-threaded and niced: deterministic sums (candle's matmuls and the encoder read
# RAYON_NUM_THREADS), and polite on a shared machine. The questions' embeddings are cached under
# .cache/router/.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${ROUTER_DATA:-../shared/data/routing/mmlu-pro-outcomes}
HEAD=crates/router/assets/difficulty_head.json
if [ ! -f "$DATA/questions.jsonl" ]; then
  echo "no training data at $DATA (set ROUTER_DATA)" >&2
  exit 1
fi
OUT=$HEAD
if [ "${1:-}" = "--check" ]; then
  OUT=$(mktemp --suffix=.json)
  trap 'rm -f "$OUT"' EXIT
fi
RAYON_NUM_THREADS=1 nice -n 10 cargo run -q -p llmsoup-tools --example train_router -- \
  "$DATA" .cache/models/all-MiniLM-L6-v2 "$OUT"
if [ "$OUT" != "$HEAD" ]; then
  if cmp -s "$OUT" "$HEAD"; then
    echo "reproduced $HEAD byte for byte"
  else
    echo "$HEAD differs from what make train-router makes now:" >&2
    diff "$HEAD" "$OUT" | head -20 >&2 || true
    exit 1
  fi
fi
