#!/usr/bin/env python3
"""Builds tools/data/domain-extra.jsonl: domain head examples of the kinds users send that
MMLU-Pro's non-MMLU sources (stemez, TheoremQA, SciBench: all STEM) lack (see
tools/data/README.md for sources, commits and licences).

    python3 tools/data/build_domain_extra.py MIRROR_DIR

MIRROR_DIR holds `<owner>+<repo>/repo` bare clones at the commits listed in the README (here:
abachaa/MedQuAD, clinc/oos-eval and openai/grade-school-math). Deterministic: sorted inputs, fixed seeds. Rows are `{"text", "label",
"source"}` with `label` one of the 14 built-in categories:

- `health`: consumer health questions from MedQuAD (NIH websites; CC BY 4.0), a fixed number
  per collection so no one website's templates dominate. Genetics Home Reference and GARD's
  inheritance questions are left out (genetics is `biology` in the MMLU-Pro taxonomy).
- `other`: everyday assistant requests (weather, music, restaurants, films) from the SNIPS rows
  already committed in tools/data/jailbreak-benign-train.jsonl (CC0), and everyday questions
  (cooking, travel, cars, fun facts) from CLINC150's train split (clinc/oos-eval; CC BY 3.0):
  what a router should not mistake for a specialist subject.
- `math`: grade-school word problems from GSM8K's **train** split (openai/grade-school-math; MIT),
  the maths users type ("Zoe wants to go on the field trip … How many candy bars does Zoe need
  to sell?"), which a head trained on
  college exam questions otherwise takes for `business` (money in the question) or `physics`
  (speeds and distances). Only the questions, never the solutions.

No row comes from MMLU, MMLU-Pro or MT-Bench, nor from GSM8K's test split.
"""

import io
import json
import random
import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tools" / "data" / "domain-extra.jsonl"

# MedQuAD collection -> rows drawn from it.
MEDQUAD = {
    "10_MPlus_ADAM_QA": 150,
    "11_MPlusDrugs_QA": 120,
    "12_MPlusHerbsSupplements_QA": 30,
    "1_CancerGov_QA": 50,
    "2_GARD_QA": 60,
    "4_MPlus_Health_Topics_QA": 60,
    "5_NIDDK_QA": 40,
    "6_NINDS_QA": 30,
    "7_SeniorHealth_QA": 30,
    "8_NHLBI_QA_XML": 30,
    "9_CDC_QA": 30,
}
# Question types that are about genes, not health care.
SKIP_QTYPES = {"inheritance", "genetic changes"}
SNIPS_OTHER = 200
# CLINC150 intents of everyday questions (cooking, travel, cars, small talk) -> rows per intent,
# from its `train` split (tests/data/benign-eval.jsonl samples its `test` split).
CLINC_OTHER = [
    "cook_time", "recipe", "meal_suggestion", "ingredient_substitution", "ingredients_list", "food_last",
    "shopping_list", "restaurant_suggestion", "travel_suggestion", "plug_type", "oil_change_how",
    "jump_start", "tire_change", "fun_fact",
]
CLINC_PER_INTENT = 15
# GSM8K train-split questions -> `math`.
GSM8K_MATH = 150

QUESTION = re.compile(r'<Question qid="[^"]*" qtype="([^"]*)">(.*?)</Question>', re.S)


def git(mirror, repo, *args):
    return subprocess.run(["git", "-C", f"{mirror}/{repo}/repo", *args], capture_output=True, check=True).stdout


def clean(q):
    """MedQuAD's templates as a person would type them: `What is (are) X ?` -> `What is X?`."""
    q = " ".join(q.split())
    q = q.replace("What is (are) ", "What is ").replace("what research (or clinical trials) is", "What research is")
    q = re.sub(r"\s*\?(\s*\?)*$", "?", q)
    return q


def main():
    mirror = sys.argv[1]
    repo = "abachaa+MedQuAD"
    tar = tarfile.open(fileobj=io.BytesIO(git(mirror, repo, "archive", "HEAD")))
    xml = {m.name: m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")}
    rows = []
    for collection, n in MEDQUAD.items():
        qs = set()
        for path in sorted(p for p in xml if p.startswith(collection + "/")):
            text = tar.extractfile(xml[path]).read().decode("utf-8")
            for qtype, q in QUESTION.findall(text):
                if qtype not in SKIP_QTYPES:
                    qs.add(clean(q))
        picked = random.Random(f"medquad-{collection}").sample(sorted(qs), n)
        rows += [{"text": q, "label": "health", "source": "medquad"} for q in sorted(picked)]

    benign = [json.loads(line) for line in (ROOT / "tools/data/jailbreak-benign-train.jsonl").open()]
    snips = sorted({r["text"] for r in benign if r["source"] == "snips"})
    for t in sorted(random.Random("snips-other").sample(snips, SNIPS_OTHER)):
        rows.append({"text": t, "label": "other", "source": "snips"})

    clinc = json.loads(git(mirror, "clinc+oos-eval", "show", "HEAD:data/data_full.json"))
    for intent in CLINC_OTHER:
        texts = sorted({t for t, i in clinc["train"] if i == intent})
        for t in sorted(random.Random(f"clinc-{intent}").sample(texts, CLINC_PER_INTENT)):
            rows.append({"text": t, "label": "other", "source": "clinc150"})

    gsm8k = git(mirror, "openai+grade-school-math", "show", "HEAD:grade_school_math/data/train.jsonl")
    questions = sorted({" ".join(json.loads(line)["question"].split()) for line in gsm8k.decode("utf-8").splitlines()})
    for q in sorted(random.Random("gsm8k-math").sample(questions, GSM8K_MATH)):
        rows.append({"text": q, "label": "math", "source": "gsm8k-train"})

    with OUT.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
