"""The decision log (prompts redacted), feedback scores, and calibration from the log."""

import json
import subprocess
import time

import requests

from harness import llmsoup_bin


def log_lines(stack, request_id: str) -> list[dict]:
    path = stack.dir / "decisions.jsonl"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
            found = [l for l in lines if l.get("request_id") == request_id]
            if found:
                return found
        time.sleep(0.05)
    raise AssertionError(f"no decision log line for {request_id}")


def test_decision_log_feedback_and_calibration(stack):
    rid = f"dlog-{stack.mode}-{time.monotonic_ns()}"
    secret = "my account number is 12345"
    r = stack.chat(f"please fix this python bug, {secret}", headers={"x-request-id": rid})
    assert r.headers["x-llmsoup-model"] == "coder"
    [entry] = log_lines(stack, rid)
    assert entry["event"] == "route" and entry["model"] == "coder" and entry["decision"] == "coding"
    assert 0.0 <= entry["complexity"] <= 1.0
    assert len(entry["prompt_sha256"]) == 64
    assert secret not in json.dumps(entry), "prompts are redacted by default"

    url = f"http://127.0.0.1:{stack.ports['metrics']}/v1/feedback"
    auth = {"authorization": "Bearer e2e-client-token"}
    assert requests.post(url, json={"request_id": rid, "score": 0.8}, timeout=10).status_code == 401
    r = requests.post(url, json={"request_id": rid, "score": 0.8}, headers=auth, timeout=10)
    assert r.status_code == 202, r.text
    bad = requests.post(url, json={"request_id": rid, "score": 7}, headers=auth, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_feedback"
    assert requests.post(url, data=b"{", headers=auth, timeout=10).status_code == 400
    fb = [l for l in log_lines(stack, rid) if l["event"] == "feedback"]
    deadline = time.monotonic() + 5
    while not fb and time.monotonic() < deadline:
        time.sleep(0.05)
        fb = [l for l in log_lines(stack, rid) if l["event"] == "feedback"]
    assert fb and fb[0]["score"] == 0.8

    out = subprocess.run([str(llmsoup_bin()), "calibrate", "--strong-share", "0.5", "--decisions",
                          str(stack.dir / "decisions.jsonl")], capture_output=True, text=True, check=True)
    assert "hard_from:" in out.stdout, out.stdout
