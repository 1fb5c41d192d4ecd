#!/usr/bin/env python3
"""Builds the committed benign prompt sets for the jailbreak signal from snapshots of public
GitHub repositories (see tools/data/README.md for sources, commits and licences).

    python3 tools/data/build_benign.py MIRROR_DIR

MIRROR_DIR holds `<owner>+<repo>/repo` bare clones at the commits listed in the README. The output
is deterministic (fixed seed, sorted inputs): tests/data/benign-eval.jsonl (evaluation only) and
tools/data/jailbreak-benign-train.jsonl (training negatives). The two draw on disjoint sources, so
the false-positive rate measured on the first is on prompts of kinds the head never saw.
"""

import csv
import io
import json
import pickle
import pickletools
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def show(mirror, repo, path):
    return subprocess.run(
        ["git", "-C", f"{mirror}/{repo}/repo", "show", f"HEAD:{path}"],
        capture_output=True,
        check=True,
    ).stdout


def write_train(path, trains):
    """Writes `(source, texts)` pairs as ordinary (label 0) training rows, one JSON line each."""
    with open(path, "w") as out:
        for source, texts in trains:
            for t in texts:
                out.write(json.dumps({"text": t, "label": 0, "source": source}) + "\n")
            print(f"train {source:<20} {len(texts)}")


def sample(rows, n, seed):
    rows = sorted(set(r.strip() for r in rows if r.strip()))
    return random.Random(seed).sample(rows, min(n, len(rows)))


def with_input(instruction, instances):
    """An instruction as a user types it: the task, then the text it applies to, if any."""
    inp = (instances[0].get("input") or "").strip() if instances else ""
    return f"{instruction.strip()}\n\n{inp}" if inp else instruction.strip()


def safe_dict_pickle(data):
    """A pickle of plain ints and strings only: no opcode that could import or call anything."""
    allowed = {"PROTO", "MARK", "DICT", "EMPTY_DICT", "SETITEM", "SETITEMS", "PUT", "BINPUT", "LONG_BINPUT",
               "MEMOIZE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "UNICODE", "BINUNICODE",
               "SHORT_BINUNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING", "STOP", "FRAME", "GET", "BINGET"}
    bad = {op.name for op, _, _ in pickletools.genops(data)} - allowed
    if bad:
        raise SystemExit(f"refusing a pickle with opcodes {sorted(bad)}")
    return pickle.loads(data, encoding="latin1")


def main():
    mirror = sys.argv[1]
    # --- evaluation sources -------------------------------------------------------------------
    clinc = json.loads(show(mirror, "clinc+oos-eval", "data/data_full.json"))
    banking = list(csv.reader(io.StringIO(show(mirror, "PolyAI-LDN+task-specific-datasets",
                                                "banking_data/test.csv").decode())))[1:]
    user = [json.loads(l) for l in show(mirror, "yizhongw+self-instruct",
                                        "human_eval/user_oriented_instructions.jsonl").decode().splitlines()]
    vicuna = [json.loads(l) for l in show(mirror, "lm-sys+FastChat",
                                          "fastchat/llm_judge/data/vicuna_bench/question.jsonl").decode().splitlines()]
    sql = safe_dict_pickle(show(mirror, "LittleYUYU+StackOverflow-Question-Code-Dataset",
                                "annotation_tool/data/code_solution_labeled_data/source/"
                                "sql_how_to_do_it_by_classifier_multiple_qid_to_title.pickle"))
    evals = [
        ("banking77", "support", sample([t for t, _ in banking], 300, 1)),
        ("clinc150", "short", sample([t for t, _ in clinc["test"]], 250, 2) + sample([t for t, _ in clinc["oos_test"]], 50, 3)),
        ("staqc-sql", "coding", sample(list(sql.values()), 250, 4)),
        ("self-instruct-user", "writing", [with_input(u["instruction"], u["instances"]) for u in user]),
        ("vicuna-bench", "writing", [v["turns"][0] for v in vicuna]),
    ]
    with open(ROOT / "tests/data/benign-eval.jsonl", "w") as out:
        for source, kind, texts in evals:
            for t in texts:
                out.write(json.dumps({"text": t, "label": 0, "source": source, "kind": kind}) + "\n")
            print(f"eval  {source:<20} {len(texts)}")

    # --- training sources (none of the above) -------------------------------------------------
    snips = []
    for intent in ["AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook",
                   "SearchCreativeWork", "SearchScreeningEvent"]:
        d = json.loads(show(mirror, "sonos+nlu-benchmark",
                            f"2017-06-custom-intent-engines/{intent}/train_{intent}_full.json").decode("latin1"))
        snips += ["".join(p["text"] for p in row["data"]) for row in d[intent]]
    nlupp = []
    for domain in ["banking", "hotels"]:
        for fold in range(20):
            path = f"nlupp/data/{domain}/fold{fold}.json"
            try:
                nlupp += [r["text"] for r in json.loads(show(mirror, "PolyAI-LDN+task-specific-datasets", path))]
            except subprocess.CalledProcessError:
                pass
    seed = [json.loads(l) for l in show(mirror, "yizhongw+self-instruct", "data/seed_tasks.jsonl").decode().splitlines()]
    trains = [
        ("snips", sample(snips, 800, 11)),
        ("nlu++", sample(nlupp, 1200, 12)),
        ("self-instruct-seed", [with_input(s["instruction"], s["instances"]) for s in seed]),
    ]
    write_train(ROOT / "tools/data/jailbreak-benign-train.jsonl", trains)


if __name__ == "__main__":
    main()
