#!/usr/bin/env bash
# `make train-domain`: retrains the built-in domain classifier head (a linear softmax head on the
# all-MiniLM-L6-v2 embedding, 14 MMLU-Pro categories) and writes
# crates/router/assets/domain_head.safetensors (committed). Training data, none of it an MMLU,
# MMLU-Pro, GSM8K or MT-Bench test item:
# - the MMLU-Pro rows in ../shared/data/routing/mmlu-pro-outcomes/questions.jsonl (stemez,
#   TheoremQA, SciBench; read from there, never committed);
# - MMLU's dev/val splits (tools/data/mmlu-dev-val.jsonl, MIT);
# - tools/data/domain-extra.jsonl: consumer health questions (MedQuAD, CC BY 4.0) as `health`,
#   everyday requests and questions as `other` (SNIPS, CC0; CLINC150 train split, CC BY 3.0),
#   grade-school word problems as `math` (GSM8K *train* split, MIT), built by
#   tools/data/build_domain_extra.py.
# Class-balanced loss, 200 epochs, then the logits scaled by the factor (temperature scaling)
# that fits the held-out split best.
# It prints the validation first: leave-one-source-out per category, and a held-out fifth of
# every (source, category) group of the MMLU-Pro rows (the estimate for the hidden evaluation,
# which draws other rows from these same sources), each beside the committed head.
# `EVAL_ONLY=1` (`make eval-signals`) prints without writing. `--check` (`make
# check-train-domain`) trains into a temporary file and fails unless it is byte for byte the
# committed head. Single-threaded and niced: deterministic sums (candle's matmuls and the encoder
# read RAYON_NUM_THREADS), and polite on a shared machine; byte-identical on the same CPU family
# (the encoder's and candle's f32 kernels are picked per CPU). Embeddings are cached under
# .cache/domain-data/.
set -euo pipefail
cd "$(dirname "$0")/.."
QUESTIONS=${DOMAIN_QUESTIONS:-../shared/data/routing/mmlu-pro-outcomes/questions.jsonl}
if [ ! -f "$QUESTIONS" ]; then
  echo "train-domain: $QUESTIONS not found (the MMLU-Pro rows live beside the repository, in ../shared/data)" >&2
  exit 1
fi
HEAD=crates/router/assets/domain_head.safetensors
OUT=$HEAD
[ -n "${EVAL_ONLY:-}" ] && OUT=--eval-only
if [ "${1:-}" = "--check" ]; then
  OUT=$(mktemp --suffix=.safetensors)
  trap 'rm -f "$OUT"' EXIT
fi
RAYON_NUM_THREADS=1 nice -n 10 cargo run -q --release -p llmsoup-tools --example train_domain -- \
  "$QUESTIONS" tools/data/mmlu-dev-val.jsonl tools/data/domain-extra.jsonl \
  .cache/models/all-MiniLM-L6-v2 "$OUT"
if [ "$OUT" != "$HEAD" ] && [ "$OUT" != --eval-only ]; then
  if cmp -s "$OUT" "$HEAD"; then
    echo "reproduced $HEAD byte for byte"
  else
    echo "$HEAD differs from what make train-domain makes now" >&2
    exit 1
  fi
fi
