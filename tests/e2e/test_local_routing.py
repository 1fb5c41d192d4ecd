"""Local routing: with a config the wasm filter can decide from the body alone (keyword rules,
one model per decision), wasm mode routes without the sidecar's Route call and reports the
decision afterwards; ext_proc mode routes the same config in the sidecar. Both modes must give
the client, the provider, the decision log, feedback and accounting the same answers."""

import json
import shutil
import time
from pathlib import Path

import pytest
import requests

from conftest import MODES
from harness import CLIENT_TOKEN, Stack

CONFIG = Path(__file__).with_name("llmsoup-local.yaml")
AUTH = {"authorization": f"Bearer {CLIENT_TOKEN}"}


@pytest.fixture(scope="module", params=MODES)
def lstack(request):
    s = Stack(mode=request.param)
    shutil.copy(CONFIG, s.config)
    s.start()
    yield s
    s.stop()


def received(stack, provider: str) -> dict:
    got = requests.get(f"http://127.0.0.1:{stack.ports[provider]}/mock/received", timeout=5).json()
    assert got, "the mock received nothing"
    return got[-1]


def poll(what: str, fn, timeout: float = 5.0):
    """`fn()` once it returns something truthy (wasm mode publishes a decision with its report,
    up to one report flush after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            assert got, f"timed out waiting for {what}"
            return got
        time.sleep(0.05)


def log_entries(stack, request_id: str) -> list[dict]:
    path = stack.dir / "decisions.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    return [l for l in lines if l.get("request_id") == request_id and l.get("event") == "route"]


def sidecar_calls(stack) -> int:
    """gRPC requests Envoy sent to the sidecar (Route, Report, ext_proc streams; not health checks)."""
    stats = requests.get(f"http://127.0.0.1:{stack.ports['admin']}/stats?filter=^cluster\\.llmsoup_sidecar\\.upstream_rq_total$",
                         timeout=5).text
    return sum(int(l.split(":")[1]) for l in stats.splitlines() if l.startswith("cluster.llmsoup_sidecar.upstream_rq_total"))


@pytest.mark.parametrize("prompt,model,upstream,provider,decision,signals", [
    ("fix this python bug", "coder", "coder-v2", "beta", "coding", "keyword:code"),
    ("a poem about python", "writer", "writer-v1", "alpha", "poetry", "keyword:code,keyword:poem"),
    ("ticket ABC-123 is broken", "writer", "writer-v1", "alpha", "poetry", "keyword:ticket"),
    ("ticket abc-123 is broken", "small", "small-v1", "alpha", None, ""),
    ("hello there", "small", "small-v1", "alpha", None, ""),
])
def test_keyword_routes_reach_the_provider_and_the_client(lstack, prompt, model, upstream, provider, decision,
                                                         signals):
    rid = f"local-{lstack.mode}-{time.monotonic_ns()}"
    r = lstack.chat(prompt, headers={"x-request-id": rid})
    assert r.status_code == 200, r.text
    assert r.headers["x-llmsoup-model"] == model
    assert r.headers.get("x-llmsoup-decision") == decision
    assert r.headers.get("x-llmsoup-signals", "") == signals
    got = received(lstack, provider)
    assert got["body"]["model"] == upstream
    assert got["body"]["messages"] == [{"role": "user", "content": prompt}]
    assert got["headers"].get("x-llmsoup-model") is None or got["headers"]["x-llmsoup-model"] == model
    assert "authorization" not in got["headers"] or got["headers"]["authorization"] != f"Bearer {CLIENT_TOKEN}"
    [entry] = poll("the decision log line", lambda: log_entries(lstack, rid))
    assert (entry["model"], entry.get("decision"), entry["signals"]) == (model, decision, signals)
    assert len(entry["prompt_sha256"]) == 64 and prompt not in json.dumps(entry)


def test_feedback_and_accounting_know_a_locally_routed_request(lstack):
    rid = f"local-fb-{lstack.mode}-{time.monotonic_ns()}"
    r = lstack.chat("refactor this rust", headers={"x-request-id": rid, "x-mock-usage": "100,20"})
    assert r.status_code == 200 and r.headers["x-llmsoup-model"] == "coder"
    url = f"http://127.0.0.1:{lstack.ports['metrics']}/v1/feedback"
    fb = poll("feedback to accept the id", lambda: (
        x := requests.post(url, json={"request_id": rid, "score": 0.9}, headers=AUTH, timeout=5)).status_code == 202
        and x)
    assert fb.json()["model"] == "coder", fb.text
    unknown = requests.post(url, json={"request_id": "never-routed", "score": 0.9}, headers=AUTH, timeout=5)
    assert unknown.status_code == 404
    stats = lambda: requests.get(f"http://127.0.0.1:{lstack.ports['metrics']}/stats", headers=AUTH, timeout=5).json()
    coding = poll("the usage report", lambda: stats()["by_decision"].get("coding", {}).get("prompt_tokens", 0) >= 100
                  and stats()["by_decision"]["coding"])
    assert coding["completion_tokens"] >= 20 and coding["spent_usd"] > 0
    metrics = requests.get(f"http://127.0.0.1:{lstack.ports['metrics']}/metrics", headers=AUTH, timeout=5).text
    assert 'decision="coding"' in metrics and "local_route_invalid" not in metrics


def test_streams_and_concrete_models(lstack):
    # A stream asks the provider for usage (accounting) and the client does not see it.
    with requests.post(f"{lstack.url}/v1/chat/completions", stream=True, timeout=30,
                       headers=lstack.headers(**{"x-mock-usage": "7,3"}),
                       json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": "rust?"}]}) as r:
        assert r.status_code == 200 and r.headers["x-llmsoup-model"] == "coder"
        text = r.text
    assert "data: [DONE]" in text and '"usage"' not in text.replace('"usage":null', "")
    got = received(lstack, "beta")
    assert got["body"]["stream"] is True and got["body"]["stream_options"] == {"include_usage": True}

    # A concrete model: passed through to its provider id, no routing headers beyond the model.
    r = lstack.chat("a python poem", model="writer")
    assert r.status_code == 200 and r.headers["x-llmsoup-model"] == "writer"
    assert "x-llmsoup-decision" not in r.headers
    assert received(lstack, "alpha")["body"]["model"] == "writer-v1"

    # What the plan does not cover is still the sidecar's to answer, errors included.
    r = lstack.chat("hello", model="nope")
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found", r.text
    r = requests.post(f"{lstack.url}/v1/chat/completions", data=b"{not json", headers=lstack.headers(), timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    r = requests.post(f"{lstack.url}/v1/chat/completions", json={"model": "auto"}, headers=lstack.headers(token=None),
                      timeout=10)
    assert r.status_code == 401


def test_wasm_mode_routes_without_the_route_call(lstack):
    """20 routed requests: ext_proc opens a stream per request; the wasm filter with a local plan
    makes no Route call, only batched Report calls."""
    before = sidecar_calls(lstack)
    for i in range(20):
        assert lstack.chat(f"python question {i}").headers["x-llmsoup-model"] == "coder"
    calls = sidecar_calls(lstack) - before
    if lstack.mode == "wasm":
        assert calls < 10, f"{calls} sidecar calls for 20 requests: the Route call is still made"
        assert "local_plan" in lstack.envoy_config_text()
    else:
        assert calls >= 20


def test_reload_reaches_the_filters_plan(lstack):
    """A reload that changes a decision's model moves locally routed requests with it (the plan
    travels in the wasm filter's ECDS config), and one that turns local routing off brings the
    Route call back; both modes route every request by the config in force."""
    base = lstack.config.read_text()

    def routed(prompt: str, model: str) -> int:
        """Sends `prompt` 10 times once the new config routes it to `model`; the sidecar calls
        those 10 made."""
        eventually = lambda: lstack.chat(prompt).headers.get("x-llmsoup-model") == model
        poll(f"{prompt!r} routed to {model}", eventually)
        before = sidecar_calls(lstack)
        for _ in range(10):
            r = lstack.chat(prompt)
            assert r.status_code == 200 and r.headers["x-llmsoup-model"] == model, r.text
        return sidecar_calls(lstack) - before

    try:
        moved = base.replace("    modelRefs: [{model: coder}]", "    modelRefs: [{model: writer}]", 1)
        assert moved != base
        lstack.config.write_text(moved)
        assert "configuration reloaded" in lstack.reload()
        calls = routed("fix this python bug", "writer")
        assert received(lstack, "alpha")["body"]["model"] == "writer-v1"
        if lstack.mode == "wasm":
            assert calls < 5, f"{calls} sidecar calls for 10 requests: the reload lost the local plan"

        off = moved.replace("gateway:\n", "gateway:\n  local_routing: off\n", 1)
        lstack.config.write_text(off)
        log = lstack.reload()
        assert "configuration reloaded" in log
        if lstack.mode == "wasm":
            assert "local routing off" in log, log
        calls = routed("fix this python bug", "writer")
        assert calls >= 10, f"{calls} sidecar calls for 10 requests with local routing off"
    finally:
        lstack.config.write_text(base)
        assert "configuration reloaded" in lstack.reload()
    routed("fix this python bug", "coder")
