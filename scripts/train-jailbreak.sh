#!/usr/bin/env bash
# `make train-jailbreak`: rebuilds the jailbreak signal's classifier head on the all-MiniLM-L6-v2
# embedding and prints, for each candidate (a head trained here, the jailguard crate's published
# weights, their probability mean, their calibrated logit mean, and that with a lexical member on
# hashed word n-grams), false positives on ordinary traffic (tests/data/benign-eval.jsonl) and
# recall per injection source, leave-one-source-out; writes the chosen one (HEAD=fused, the
# default, with the lexical member; HEAD=embedding, HEAD=own, HEAD=jailguard, HEAD=mean) to
# crates/router/assets/jailbreak_head.safetensors (committed). Deterministic: two runs write the
# same bytes.
# HEAD=shipped only measures the committed head (`make eval-signals`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-jailbreak-data.sh >/dev/null
cargo run --release -q -p llmsoup-tools --example train_jailbreak -- .cache/jailbreak-data .cache/models/all-MiniLM-L6-v2 \
  crates/router/assets/jailbreak_head.safetensors --head "${HEAD:-fused}"
