#!/usr/bin/env python3
"""How the routers do on RouteLLM's own benchmark data: MMLU and GSM8K with per-prompt correctness
of Mixtral-8x7B-Instruct (weak) and GPT-4-1106-preview (strong), and MT-Bench with GPT-4's 1–10
judgement of each model's two turns (the mean, routed on the first turn, as RouteLLM evaluates
it), as published in lm-sys/RouteLLM (`routellm/evals/`, Apache-2.0; measured at commit 0b64fda),
the prompts RouteLLM itself removes as contaminated removed the same way.

These are MMLU, GSM8K and MT-Bench *test* items: evaluation only. Nothing in llmsoup trains on them, and the
JSON lines this script writes stay under .cache/ (never commit them).

    python3 bench/routellm_eval.py /path/to/RouteLLM [--bin target/release/llmsoup]

For each benchmark it runs `llmsoup eval` twice — with config/examples/learned-router.yaml (the
learned `difficulty` score) and with the demo config (the hand-weighted `complexity` score) — and
prints one markdown table (APGR / CPT(50%) / CPT(80%)) with the prompt-length and random baselines
`llmsoup eval` reports on the same prompts. `BENCH_RESULTS=FILE` also writes it to FILE.
"""

import argparse
import csv
import glob
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
CONFIGS = [
    ("learned `difficulty`", os.path.join(ROOT, "config", "examples", "learned-router.yaml")),
    ("`complexity` (demo exemplars)", os.path.join(ROOT, "config", "llmsoup.yaml")),
]


def contaminated(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {json.loads(line)["eval_prompt"] for line in f if line.strip()}


def build(routellm: str, out_dir: str) -> dict[str, tuple[str, int]]:
    """Writes `{text, outcomes: {weak, strong}, source}` lines per benchmark; returns path and count."""
    evals = os.path.join(routellm, "routellm", "evals")
    benches = {
        "MMLU": (sorted(glob.glob(os.path.join(evals, "mmlu", "responses", "mmlu_*.csv"))),
                 os.path.join(evals, "mmlu", "contaminated_prompts.jsonl")),
        "GSM8K": ([os.path.join(evals, "gsm8k", "gsm8k_responses.csv")],
                  os.path.join(evals, "gsm8k", "contaminated_prompts.jsonl")),
    }
    csv.field_size_limit(1 << 30)
    os.makedirs(out_dir, exist_ok=True)
    built = {}
    for name, (files, cont) in benches.items():
        if not files or not all(os.path.exists(f) for f in files + [cont]):
            sys.exit(f"routellm_eval: {name} data not found under {evals}")
        skip = contaminated(cont)
        path = os.path.join(out_dir, f"{name.lower()}.jsonl")
        n = 0
        with open(path, "w", encoding="utf-8") as out:
            for f in files:
                with open(f, encoding="utf-8", newline="") as fh:
                    for row in csv.DictReader(fh):
                        if row["prompt"] in skip or {row[WEAK], row[STRONG]} - {"True", "False"}:
                            continue
                        out.write(json.dumps({
                            "text": row["prompt"],
                            "outcomes": {"cheap": row[WEAK] == "True", "strong": row[STRONG] == "True"},
                            "source": os.path.basename(f),
                        }) + "\n")
                        n += 1
        built[name] = (path, n)
    # MT-Bench: graded outcomes, the mean judge score of the model's two turns.
    mt = os.path.join(evals, "mt_bench")
    skip = contaminated(os.path.join(mt, "contaminated_prompts.jsonl"))
    scores: dict[tuple[int, str], list[float]] = {}
    with open(os.path.join(mt, "judgements.jsonl"), encoding="utf-8") as f:
        for line in f:
            j = json.loads(line)
            scores.setdefault((j["question_id"], j["model"]), []).append(float(j["score"]))
    path, n = os.path.join(out_dir, "mt-bench.jsonl"), 0
    with open(os.path.join(mt, "question.jsonl"), encoding="utf-8") as f, \
            open(path, "w", encoding="utf-8") as out:
        for line in f:
            q = json.loads(line)
            if any(t in skip for t in q["turns"]):
                continue
            w, s_ = (sum(v) / len(v) for v in (scores[(q["question_id"], WEAK)], scores[(q["question_id"], STRONG)]))
            out.write(json.dumps({
                "text": q["turns"][0],
                "outcomes": {"cheap": w, "strong": s_},
                "source": f"mt_bench/{q['category']}",
            }) + "\n")
            n += 1
    built["MT-Bench"] = (path, n)
    return built


def evaluate(binary: str, config: str, data: str) -> dict:
    # The pair is named for `llmsoup eval` (the outcomes' keys), whatever the config calls it.
    args = [binary, "eval", "--config", config, "--data", data, "--json", "--log", "warn",
            "--weak", "cheap", "--strong", "strong"]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, check=False)
    if r.returncode != 0:
        sys.exit(f"routellm_eval: {' '.join(args)} failed:\n{r.stderr}")
    return json.loads(r.stdout)


def cell(m: dict) -> str:
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    return f"{m['apgr']:.3f} / {pct(m['cpt50'])} / {pct(m['cpt80'])}"


def cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("routellm", help="a checkout of lm-sys/RouteLLM")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "llmsoup"))
    a = ap.parse_args()
    built = build(a.routellm, os.path.join(ROOT, ".cache", "routellm-eval"))
    rows, baselines = {}, {}
    for name, (path, _) in built.items():
        for label, config in CONFIGS:
            rep = evaluate(a.bin, config, path)
            rows.setdefault(label, {})[name] = rep
            baselines[name] = rep["baselines"]
    names = list(built)
    lines = [
        "# Routers on RouteLLM's benchmark data",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; CPU: {cpu()}",
        f"- data: lm-sys/RouteLLM `routellm/evals/` (MMLU, GSM8K), contaminated prompts removed as RouteLLM does; "
        f"pair: {WEAK.split('/')[-1]} (weak) / {STRONG} (strong); MT-Bench: the mean GPT-4 judge score "
        "of both turns, routed on the first",
        "- APGR / CPT(50%) / CPT(80%), from `llmsoup eval` (`bench/routellm_eval.py`)",
        "",
        "| router | " + " | ".join(f"{n} ({built[n][1]:,} prompts)" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, by in rows.items():
        lines.append(f"| {label} | " + " | ".join(cell(by[n]) for n in names) + " |")
    lines.append("| prompt length (longer = harder) | " + " | ".join(cell(baselines[n]["prompt_length"]) for n in names) + " |")
    lines.append("| random (expected) | " + " | ".join(cell(baselines[n]["random"]) for n in names) + " |")
    report = "\n".join(lines) + "\n"
    print(report)
    if os.environ.get("BENCH_RESULTS"):
        with open(os.environ["BENCH_RESULTS"], "w", encoding="utf-8") as f:
            f.write(report)


if __name__ == "__main__":
    main()
