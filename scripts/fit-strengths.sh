#!/usr/bin/env bash
# `make fit-strengths`: fits the built-in model strengths (the default of `models[].strength`, and
# the learned router's reference strengths) — a Rasch model over the per-question outcomes of 30
# LLMs in ../shared/data/routing/mmlu-pro-outcomes (never committed) — and writes
# crates/config/assets/model_strengths.json (committed). `--check` fits into a temporary file and
# fails unless it is byte for byte the committed table. Plain f64 arithmetic in a fixed order: the
# same bytes on every machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${ROUTER_DATA:-../shared/data/routing/mmlu-pro-outcomes}
TABLE=crates/config/assets/model_strengths.json
if [ ! -f "$DATA/outcomes.csv" ]; then
  echo "no outcome data at $DATA (set ROUTER_DATA)" >&2
  exit 1
fi
OUT=$TABLE
if [ "${1:-}" = "--check" ]; then
  OUT=$(mktemp --suffix=.json)
  trap 'rm -f "$OUT"' EXIT
fi
nice -n 10 cargo run -q -p llmsoup-tools --example fit_strengths -- "$DATA" "$OUT"
if [ "$OUT" != "$TABLE" ]; then
  if cmp -s "$OUT" "$TABLE"; then
    echo "reproduced $TABLE byte for byte"
  else
    echo "$TABLE differs from what make fit-strengths makes now:" >&2
    diff "$TABLE" "$OUT" | head -20 >&2 || true
    exit 1
  fi
fi
