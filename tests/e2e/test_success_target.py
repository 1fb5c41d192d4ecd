"""`success_target` selection through a real Envoy, in both attach modes: one decision over three
models of rising strength and price (a configured strength and two learned from their model ids);
the learned router predicts each model's success on the request from the shared embedding, and
the cheapest model whose prediction reaches the target gets it. An easy prompt reaches the
cheapest model, a hard one a stronger model — asserted at the mock upstream, which echoes the
model id it received. The decision log and `llmsoup route`/`classify` show every candidate's
strength and predicted success; the decision's fallback chain still applies to the chosen model.
"""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import MODES
from harness import BETA_PROVIDER_KEY, Stack, llmsoup_bin

CONFIG = Path(__file__).with_name("llmsoup-success.yaml")
EASY = "hi there! how are you today?"
HARD = ("A 12 kg block slides down a 35 degree incline with kinetic friction coefficient 0.27. Using the "
        "work-energy theorem, compute the speed after 4.5 m and the rate of heat dissipation.\n"
        "A. 3.1 m/s\nB. 4.2 m/s\nC. 5.0 m/s\nD. 5.8 m/s\nE. 6.3 m/s\nF. 2.7 m/s\nG. 7.1 m/s\nH. 3.9 m/s\n"
        "I. 4.8 m/s\nJ. 6.9 m/s")
MODEL_IDS = {"small": "small-v1", "medium": "Meta-Llama-3_1-70B-Instruct", "large": "gpt-4o-2024-05-13"}


@pytest.fixture(scope="module", params=MODES)
def st_stack(request):
    s = Stack(mode=request.param)
    shutil.copy(CONFIG, s.config)
    s.start()
    yield s
    s.stop()


def routed(s, prompt: str, **headers) -> tuple[str, dict]:
    r = s.chat(prompt, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-llmsoup-decision"] == "tiered", r.headers
    return r.headers["x-llmsoup-model"], r.json()["mock"]


def log_entry(s, prompt_count: int) -> list[dict]:
    """The decision log's route lines, once `prompt_count` are written."""
    path = s.dir / "decisions.jsonl"
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []
        routes = [l for l in lines if l.get("event") == "route"]
        if len(routes) >= prompt_count or time.monotonic() > deadline:
            return routes
        time.sleep(0.05)


def test_easy_prompts_reach_the_cheapest_model_hard_ones_a_stronger_one(st_stack):
    s = st_stack
    model, mock = routed(s, EASY)
    assert model == "small" and mock["body"]["model"] == "small-v1", (model, mock["body"])
    assert mock["port"] == s.ports["alpha"]

    model, mock = routed(s, HARD)
    assert model in ("medium", "large"), model
    assert mock["body"]["model"] == MODEL_IDS[model]
    if model == "large":
        assert mock["port"] == s.ports["beta"]
        assert mock["headers"]["authorization"] == f"Bearer {BETA_PROVIDER_KEY}"

    # The decision log keeps what selection saw: every candidate's strength and predicted
    # success (rising with strength), the target and the choice.
    routes = log_entry(s, 2)
    easy, hard = routes[-2]["success"], routes[-1]["success"]
    for entry, chosen in ((easy, "small"), (hard, model)):
        assert entry["target"] == 0.5 and entry["chosen"] == chosen and entry["reached"] in (True, False)
        est = {e["model"]: e for e in entry["estimates"]}
        assert list(est) == ["small", "medium", "large"]
        assert est["small"]["strength"] == -1.5 and est["medium"]["strength"] < est["large"]["strength"]
        assert est["small"]["success"] <= est["medium"]["success"] <= est["large"]["success"]
    assert {e["model"]: e for e in easy["estimates"]}["small"]["success"] >= 0.5
    assert {e["model"]: e for e in hard["estimates"]}["small"]["success"] < 0.5


def test_the_chosen_models_fallback_chain_still_applies(st_stack):
    s = st_stack
    model, mock = routed(s, EASY, **{"x-mock-fail-for": "small-v1=503"})
    # small was chosen and failed; Envoy moved on along the decision's chain.
    assert model == "medium" and mock["body"]["model"] == MODEL_IDS["medium"], (model, mock["body"])


def test_route_and_classify_show_the_estimates(st_stack):
    s = st_stack
    out = subprocess.run([str(llmsoup_bin()), "route", "--config", str(s.config), HARD],
                         capture_output=True, text=True, env=s.env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "success_target 0.50" in out.stdout, out.stdout
    for name in ("small", "medium", "large"):
        assert any(l.strip().startswith(name) and "success" in l for l in out.stdout.splitlines()), out.stdout
    assert "<- chosen" in out.stdout
    out = subprocess.run([str(llmsoup_bin()), "classify", "--config", str(s.config)], input="".join(json.dumps({"text": t}) + "\n" for t in (EASY, HARD)),
                         capture_output=True, text=True, env=s.env, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(l) for l in out.stdout.splitlines() if l.strip()]
    assert [r["model"] for r in rows][0] == "small"
    assert all(0 <= r["difficulty"] <= 1 for r in rows)
    assert [len(r["success_target"]["estimates"]) for r in rows] == [3, 3]
    assert rows[0]["success_target"]["chosen"] == "small"
