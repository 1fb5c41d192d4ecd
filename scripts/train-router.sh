#!/usr/bin/env bash
# `make train-router`: trains the learned router (the `difficulty` signal) on the MMLU-Pro
# per-question outcomes in ../shared/data/routing/mmlu-pro-outcomes (never committed), prints the
# leave-one-source-out validation (APGR / CPT(50%) against prompt length, random and the
# complexity score) and writes crates/router/assets/difficulty_head.json (committed).
# Single-threaded and niced: deterministic sums, and polite on a shared machine. The questions'
# embeddings are cached under .cache/router/.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${ROUTER_DATA:-../shared/data/routing/mmlu-pro-outcomes}
if [ ! -f "$DATA/questions.jsonl" ]; then
  echo "no training data at $DATA (set ROUTER_DATA)" >&2
  exit 1
fi
RAYON_NUM_THREADS=1 nice -n 10 cargo run -q -p llmsoup-tools --example train_router -- \
  "$DATA" .cache/models/all-MiniLM-L6-v2 crates/router/assets/difficulty_head.json
