"""`llmsoup eval` end to end: the real binary routes a small labelled set with the learned-router
example config and reports the pair's quality–cost curve, APGR, CPT and the config's operating
point; `--plot` writes an SVG. (A command-line tool: no Envoy, so no attach modes.)"""

import json
import subprocess
import xml.etree.ElementTree as ET

from harness import ROOT, llmsoup_bin

CONFIG = ROOT / "config" / "examples" / "learned-router.yaml"
FIXTURE = ROOT / "tests" / "data" / "eval-fixture.jsonl"


def run(*args):
    return subprocess.run([str(llmsoup_bin()), "eval", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_eval_reports_the_curve_and_the_config(tmp_path):
    plot = tmp_path / "curve.svg"
    r = run("--config", CONFIG, "--data", FIXTURE, "--plot", plot)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # The pair comes from the config: default model weak, the difficulty decision's model strong.
    assert "weak `cheap` (61.5% correct), strong `strong` (92.3%)" in out, out
    assert "APGR: " in out and "CPT(50%): " in out and "CPT(80%): " in out
    assert "config as written: accuracy" in out
    assert "prompt length (longer = harder): " in out and "random (expected): 0.500 / 50.0% / 80.0%" in out, out
    root = ET.parse(plot).getroot()
    assert root.tag.endswith("svg")
    assert any(e.tag.endswith("polyline") for e in root.iter())


def test_eval_json_is_consistent(tmp_path):
    r = run("--config", CONFIG, "--data", FIXTURE, "--weak", "cheap", "--strong", "strong", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["n"] == 13
    assert abs(rep["weak_quality"] - 8 / 13) < 1e-9 and abs(rep["strong_quality"] - 12 / 13) < 1e-9
    # The learned router ranks the numeric exam-style prompts above the small talk.
    assert rep["apgr"] > 0.6, rep
    assert 0 <= rep["cpt50"] <= rep["cpt80"] <= 1
    curve = rep["curve"]
    assert curve[0]["strong_share"] == 0 and abs(curve[0]["quality"] - 8 / 13) < 1e-9
    assert abs(curve[-1]["quality"] - 12 / 13) < 1e-9
    cfg = rep["config"]
    assert sum(cfg["per_model"].values()) == 13
    assert abs(cfg["strong_share"] - cfg["per_model"].get("strong", 0) / 13) < 1e-9
    # Costs: the fixture prices the hard prompts; strong-only costs at least what the config does.
    assert cfg["weak_only_cost"] <= cfg["cost"] <= cfg["strong_only_cost"]


def apgr(items, score) -> float:
    """RouteLLM's APGR of ordering `items` by `score` (ties as one block, the curve linear across
    it), computed independently of the binary."""
    n = len(items)
    weak = sum(i["outcomes"]["cheap"] for i in items) / n
    strong = sum(i["outcomes"]["strong"] for i in items) / n
    ranked = sorted(items, key=score, reverse=True)
    points, gain, k = [(0.0, 0.0)], 0.0, 0
    while k < n:
        j = k
        while j < n and score(ranked[j]) == score(ranked[k]):
            gain += (ranked[j]["outcomes"]["strong"] - ranked[j]["outcomes"]["cheap"]) / n
            j += 1
        points.append((j / n, gain / (strong - weak)))
        k = j
    return sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(points, points[1:]))


def test_eval_prints_the_prompt_length_and_random_baselines(tmp_path):
    r = run("--config", CONFIG, "--data", FIXTURE, "--json")
    assert r.returncode == 0, r.stderr
    base = json.loads(r.stdout)["baselines"]
    items = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    assert abs(base["prompt_length"]["apgr"] - apgr(items, lambda i: len(i["text"]))) < 1e-9, base
    assert base["random"] == {"apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8}


def test_eval_takes_graded_scores(tmp_path):
    """Judge scores (MT-Bench's 1–10) instead of right/wrong: the curve is the mean score."""
    items = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    for k, item in enumerate(items):
        item["outcomes"] = {m: (9.0 if ok else 4.0) - (k % 3) * 0.5 for m, ok in item["outcomes"].items()}
    graded = tmp_path / "graded.jsonl"
    graded.write_text("".join(json.dumps(i) + "\n" for i in items))
    r = run("--config", CONFIG, "--data", graded, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    want = sum(i["outcomes"]["cheap"] for i in items) / len(items)
    assert abs(rep["weak_quality"] - want) < 1e-9, rep
    assert abs(rep["baselines"]["prompt_length"]["apgr"] - apgr(items, lambda i: len(i["text"]))) < 1e-9
    text = run("--config", CONFIG, "--data", graded).stdout
    assert f"weak `cheap` ({want:.3f} mean score)" in text, text
    assert "config as written: mean score " in text, text


def test_eval_refuses_bad_input(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi", "outcomes": {"cheap": true}}\n{"text": 3}\n')
    r = run("--config", CONFIG, "--data", bad)
    assert r.returncode != 0 and "line 2" in r.stderr, r.stderr
    r = run("--config", CONFIG, "--data", FIXTURE, "--weak", "nope", "--strong", "strong")
    assert r.returncode != 0 and "nope" in r.stderr, r.stderr
