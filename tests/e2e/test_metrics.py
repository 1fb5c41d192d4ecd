"""Metrics on the sidecar's admin port, in both attach modes: exact token and cost accounting
from the mock's known usage, and a Prometheus exposition `promtool` accepts."""

import os
import re
import shutil
import subprocess
import time

import pytest
import requests


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def settled(fetch):
    """A snapshot once asynchronous (wasm-mode) reports have stopped arriving."""
    before = fetch()
    for _ in range(20):
        time.sleep(0.3)
        now = fetch()
        if now == before:
            break
        before = now
    return before


def test_metrics_need_the_token(stack):
    assert stack.metrics(token=None).status_code == 401
    assert stack.metrics(token="wrong").status_code == 401
    assert stack.metrics().status_code == 200


def test_tokens_cost_and_savings_are_exact(stack):
    before = settled(lambda: stack.metrics().text)
    tag = f"metrics-{stack.mode}-{time.monotonic_ns()}"
    for _ in range(3):
        r = stack.chat("hello there", headers={"x-mock-usage": "100,50", "x-request-id": tag})
        assert r.status_code == 200 and r.headers["x-llmsoup-model"] == "small"
    # Reports are asynchronous in wasm mode (flushed every 200 ms).
    deadline = time.monotonic() + 5
    while True:
        after = stack.metrics().text
        spent = sample(after, "llmsoup_cost_usd_total", gen_ai_request_model="small") - sample(
            before, "llmsoup_cost_usd_total", gen_ai_request_model="small")
        if spent >= 3 * 0.0002 - 1e-12 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # small costs 1 $/1M in, 2 $/1M out: (100·1 + 50·2)/1e6 per request.
    assert spent == pytest.approx(3 * 0.0002), after
    # Saved is against the most expensive referenced model (coder: 10 $/1M in, 30 $/1M out).
    saved = sample(after, "llmsoup_saved_usd_total", gen_ai_request_model="small") - sample(
        before, "llmsoup_saved_usd_total", gen_ai_request_model="small")
    assert saved == pytest.approx(3 * ((100 * 10 + 50 * 30) / 1e6 - 0.0002))
    tokens = sample(after, "gen_ai_client_token_usage_sum", gen_ai_request_model="small", gen_ai_token_type="input") - sample(
        before, "gen_ai_client_token_usage_sum", gen_ai_request_model="small", gen_ai_token_type="input")
    assert tokens == 300
    routed = sample(after, "llmsoup_requests_total", model="small", decision="none", outcome="routed")
    assert routed >= 3
    assert sample(after, "llmsoup_routing_duration_seconds_count") > 0
    assert 'signal="keyword"' in after


def test_exposition_passes_promtool(stack):
    stack.chat("fix this python bug")
    stack.chat("hello", model="gpt-17")
    text = stack.metrics().text
    assert "llmsoup_rejections_total" in text and 'code="model_not_found"' in text
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not installed (make deps installs Debian's prometheus package)")
        pytest.skip("promtool not installed")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    # promtool exits 3 for lint-only findings (naming style); errors exit 1.
    assert r.returncode in (0, 3), r.stdout + r.stderr
    assert not re.search(r"error", r.stderr, re.IGNORECASE), r.stderr


def test_stats_report_exact_tokens_and_spend(stack):
    url = f"http://127.0.0.1:{stack.ports['metrics']}/stats"
    auth = {"authorization": "Bearer e2e-client-token"}
    assert requests.get(url, timeout=10).status_code == 401
    before = settled(lambda: requests.get(url, headers=auth, timeout=10).json())
    for _ in range(2):
        r = stack.chat("fix this rust crate", headers={"x-mock-usage": "1000,500"})
        assert r.headers["x-llmsoup-model"] == "coder"
    deadline = time.monotonic() + 5
    while True:
        after = requests.get(url, headers=auth, timeout=10).json()
        done = after["by_model"].get("coder", {}).get("requests", 0) - before["by_model"].get("coder", {}).get(
            "requests", 0) >= 2
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    b, a = before["by_model"].get("coder", {}), after["by_model"]["coder"]
    assert a["requests"] - b.get("requests", 0) == 2
    assert a["prompt_tokens"] - b.get("prompt_tokens", 0) == 2000
    assert a["completion_tokens"] - b.get("completion_tokens", 0) == 1000
    # coder: 10 $/1M in, 30 $/1M out; it is the baseline, so nothing is saved.
    assert a["spent_usd"] - b.get("spent_usd", 0) == pytest.approx(2 * (1000 * 10 + 500 * 30) / 1e6)
    assert a["saved_usd"] - b.get("saved_usd", 0) == pytest.approx(0)
    assert after["by_decision"]["coding"]["requests"] >= 2
    assert after["total"]["requests"] >= a["requests"]
