#!/usr/bin/env python3
"""Builds tools/data/mmlu-dev-val.jsonl (question + subject) from the MMLU repository's `dev` and
`val` splits (hendrycks/test, MIT; commit 8d4768d45e7bda4ce86f3de4073603b508bf80e8, "add val").
Never the `test` split: MMLU-Pro took its `ori_mmlu` questions from MMLU test, and the domain
head and routers are evaluated on those.

    python3 tools/data/build_mmlu_dev_val.py MIRROR_DIR
"""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "8d4768d45e7bda4ce86f3de4073603b508bf80e8"


def main():
    repo = f"{sys.argv[1]}/hendrycks+test/repo"
    names = subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only", COMMIT],
                           capture_output=True, check=True, text=True).stdout.split()
    n = 0
    with open(ROOT / "tools/data/mmlu-dev-val.jsonl", "w") as out:
        for name in sorted(names):
            parts = name.split("/")
            if len(parts) != 3 or parts[1] not in ("dev", "val") or not parts[2].endswith(".csv"):
                continue
            split = parts[1]
            subject = parts[2][: -len(f"_{split}.csv")].replace("_", " ")
            data = subprocess.run(["git", "-C", repo, "show", f"{COMMIT}:{name}"],
                                  capture_output=True, check=True).stdout.decode()
            for row in csv.reader(io.StringIO(data)):
                out.write(json.dumps({"question": row[0], "subject": subject, "split": split}) + "\n")
                n += 1
    print(f"{n} questions")


if __name__ == "__main__":
    main()
