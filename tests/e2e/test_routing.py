"""The routing table through a real Envoy: decisions, gate, errors, auth, spoofing, streaming,
fail-open and body limits."""

import json
import signal
import time

import openai
import pytest
import requests

from harness import BETA_PROVIDER_KEY, CLIENT_TOKEN


def received(resp: requests.Response) -> dict:
    """What the mock upstream says it received."""
    assert resp.status_code == 200, resp.text
    return resp.json()["mock"]


def assert_error(resp: requests.Response, status: int, code: str):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["code"] == code, err
    assert err["message"]


@pytest.mark.parametrize(
    "prompt, model, provider_id, decision, signals",
    [
        ("Please refactor this Python function", "coder", "coder-v2", "coding", "keyword:code"),
        ("Write a haiku about autumn leaves", "writer", "writer-v1", "poetry", "keyword:poem"),
        ("What is the capital of Australia?", "small", "small-v1", None, None),
        ("Bonjour, pouvez-vous m'aider à préparer un voyage à Lyon le mois prochain ?", "french", "french-v1",
         "french", "language:fr"),
    ],
)
def test_decisions_pick_the_model(stack, prompt, model, provider_id, decision, signals):
    r = stack.chat(prompt)
    got = received(r)
    assert got["body"]["model"] == provider_id
    assert r.headers["x-llmsoup-model"] == model
    assert r.headers.get("x-llmsoup-decision") == decision
    if signals:
        assert signals in r.headers["x-llmsoup-signals"]
    # Envoy routed it to the model's provider cluster (beta is a different listener).
    expected_port = stack.ports["beta"] if model in ("coder", "longctx") else stack.ports["alpha"]
    assert got["port"] == expected_port


def test_embedding_rule_routes_paraphrases(stack):
    # No keyword in common with the rule's candidates: only the embedding similarity can match.
    r = stack.chat("Can I get my money back for this purchase?")
    got = received(r)
    assert r.headers["x-llmsoup-model"] == "support"
    assert r.headers["x-llmsoup-decision"] == "billing"
    assert "embedding:refunds" in r.headers["x-llmsoup-signals"].split(",")
    assert got["body"]["model"] == "support-v1"
    assert got["port"] == stack.ports["beta"]


def test_complexity_routes_hard_requests_and_is_reported(stack):
    r = stack.chat("Prove step by step that there are infinitely many primes and discuss the edge cases")
    assert received(r)["body"]["model"] == "thinker-v1"
    assert r.headers["x-llmsoup-decision"] == "hard_reasoning"
    assert "complexity:task:hard" in r.headers["x-llmsoup-signals"]
    assert float(r.headers["x-llmsoup-complexity"]) >= 0.6
    easy = stack.chat("What is the capital of Australia?")
    assert easy.headers["x-llmsoup-model"] == "small"
    assert float(easy.headers["x-llmsoup-complexity"]) < 0.35


def test_not_condition_keeps_french_code_on_the_coder(stack):
    r = stack.chat("Bonjour, pouvez-vous m'aider à écrire une fonction python pour trier une liste ?")
    assert r.headers["x-llmsoup-model"] == "coder"


def test_long_prompt_routes_by_context(stack):
    prompt = "Summarise the following notes. " + ("The quarterly numbers were fine. " * 400)
    r = stack.chat(prompt)
    assert received(r)["body"]["model"] == "long-v1"
    assert r.headers["x-llmsoup-decision"] == "long_prompts"


def test_concrete_model_passes_through_untouched(stack):
    body = json.dumps({"model": "writer", "temperature": 0.25, "messages": [{"role": "user", "content": "python"}]},
                      separators=(",", ":"))
    r = requests.post(f"{stack.url}/v1/chat/completions", data=body, headers=stack.headers(), timeout=10)
    got = received(r)
    # The alias is rewritten to the provider id; nothing else changes and no signal ran.
    assert got["body"] == {"model": "writer-v1", "temperature": 0.25,
                           "messages": [{"role": "user", "content": "python"}]}
    assert r.headers["x-llmsoup-model"] == "writer"
    assert "x-llmsoup-decision" not in r.headers
    assert "x-llmsoup-signals" not in r.headers


def test_unknown_model_is_400(stack):
    assert_error(stack.chat("hello", model="gpt-17"), 400, "model_not_found")


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"messages": []}', b'{"model": 42}'])
def test_invalid_requests_are_400(stack, body):
    r = requests.post(f"{stack.url}/v1/chat/completions", data=body, headers=stack.headers(), timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_missing_and_wrong_tokens_are_401(stack):
    assert_error(stack.chat("hello", token=None), 401, "invalid_api_key")
    assert_error(stack.chat("hello", token="not-the-token"), 401, "invalid_api_key")
    r = requests.get(f"{stack.url}/v1/models", timeout=10)
    assert r.status_code == 401


def test_client_token_never_reaches_providers_and_credentials_are_injected(stack):
    got = received(stack.chat("compile my rust crate"))  # beta: Envoy injects its key
    assert got["headers"]["authorization"] == f"Bearer {BETA_PROVIDER_KEY}"
    got = received(stack.chat("hello there"))  # alpha: no provider credentials configured
    assert "authorization" not in got["headers"]
    assert CLIENT_TOKEN not in json.dumps(got["headers"])


def test_spoofed_routing_headers_are_ignored(stack):
    r = stack.chat("What is the capital of Australia?",
                   headers={"x-llmsoup-model": "coder", "x-llmsoup-decision": "coding", "x-llmsoup-cluster": "x"})
    got = received(r)
    assert r.headers["x-llmsoup-model"] == "small"
    assert got["body"]["model"] == "small-v1"
    assert not [h for h in got["headers"] if h.startswith("x-llmsoup-")]


def test_models_endpoint(stack):
    r = requests.get(f"{stack.url}/v1/models", headers=stack.headers(), timeout=10)
    assert r.status_code == 200
    ids = [m["id"] for m in r.json()["data"]]
    assert ids[:2] == ["auto", "MoM"] and "coder" in ids


def test_unknown_path_is_404_json(stack):
    r = requests.get(f"{stack.url}/nope", headers=stack.headers(), timeout=10)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_stream_is_not_buffered(stack):
    chunks, delay = 6, 0.25
    start = time.monotonic()
    r = requests.post(
        f"{stack.url}/v1/chat/completions",
        json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": "write rust code"}]},
        headers=stack.headers(**{"x-mock-chunks": str(chunks), "x-mock-chunk-delay-ms": str(int(delay * 1000))}),
        stream=True,
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-llmsoup-model"] == "coder"
    arrivals, events = [], []
    for line in r.iter_lines():
        if line.startswith(b"data: "):
            arrivals.append(time.monotonic() - start)
            events.append(line[6:])
    assert events[-1] == b"[DONE]"
    first = json.loads(events[0])
    assert first["model"] == "coder-v2"
    total = arrivals[-1]
    # chunks + 2 gaps of `delay` in all; the first event must not wait for the rest.
    assert total >= (chunks + 1) * delay * 0.9
    assert arrivals[0] < total - chunks * delay * 0.8, arrivals


def test_body_over_limit_is_413(stack):
    big = "x" * (1 << 20)
    r = stack.chat(big)
    assert r.status_code == 413


def test_openai_sdk_normal_and_streaming(stack):
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=CLIENT_TOKEN, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Write a sonnet about the sea"}])
    assert raw.headers["x-llmsoup-model"] == "writer"
    completion = raw.parse()
    assert completion.model == "writer-v1"
    assert completion.choices[0].message.content == "mock reply from writer-v1"
    assert completion.usage.total_tokens > 0

    with client.chat.completions.with_streaming_response.create(
        model="auto", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "fix this python bug"}],
    ) as resp:
        assert resp.headers["x-llmsoup-model"] == "coder"
        text, usage = "", None
        for chunk in resp.parse():
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage:
                usage = chunk.usage
    assert text.startswith("tok0 ")
    assert usage is not None and usage.completion_tokens > 0

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{stack.url}/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}])


def test_upstream_errors_pass_through(stack):
    r = stack.chat("hello", headers={"x-mock-status": "429"})
    assert r.status_code == 429
    assert r.headers["x-llmsoup-model"] == "small"


def test_usage_report_reaches_the_sidecar(stack):
    r = stack.chat("hello there", headers={"x-mock-usage": "123,45", "x-request-id": f"usage-{stack.mode}"})
    assert r.status_code == 200
    line = stack.wait_log("sidecar", f"usage-{stack.mode}")
    assert "usage report" in line
    for field in ("model=small", "prompt_tokens=123", "completion_tokens=45", "status=200", "usage_seen=true"):
        assert field in line, line
    # Streaming responses are accounted from the SSE usage chunk.
    r = stack.chat("hello again", stream=True, stream_options={"include_usage": True},
                   headers={"x-mock-usage": "7,9", "x-request-id": f"usage-sse-{stack.mode}"})
    assert r.status_code == 200
    line = stack.wait_log("sidecar", f"usage-sse-{stack.mode}")
    for field in ("stream=true", "prompt_tokens=7", "completion_tokens=9"):
        assert field in line, line


def test_sidecar_down_fails_open_to_the_default_model(fresh_stack):
    s = fresh_stack
    assert s.chat("fix this python bug").headers["x-llmsoup-model"] == "coder"
    s.kill_sidecar()
    r = s.chat("fix this python bug")
    got = received(r)
    # The body the provider received names a real model, not "auto".
    assert got["body"]["model"] == "small-v1"
    assert got["port"] == s.ports["alpha"]
    assert r.headers["x-llmsoup-model"] == "small"
    assert r.headers["x-llmsoup-decision"] == "fail-open"
    # A concrete model keeps its route while the sidecar is down.
    r = s.chat("hello", model="coder")
    assert received(r)["body"]["model"] == "coder-v2"
    # Streaming still works too.
    r = s.chat("hello", stream=True)
    assert r.status_code == 200 and b"[DONE]" in r.content
    # And the sidecar comes back.
    s.start_sidecar()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if s.chat("fix this python bug").headers.get("x-llmsoup-model") == "coder":
            break
        time.sleep(0.2)
    else:
        pytest.fail("routing did not resume after the sidecar restarted")


def test_sighup_reloads_config_and_keeps_the_old_one_when_bad(fresh_stack):
    s = fresh_stack
    assert s.chat("What is the capital of Australia?").headers["x-llmsoup-model"] == "small"
    original = s.config.read_text()
    s.config.write_text(original.replace("default_model: small", "default_model: writer"))
    s.procs["sidecar"].send_signal(signal.SIGHUP)
    s.wait_log("sidecar", "configuration reloaded")
    assert s.chat("What is the capital of Australia?").headers["x-llmsoup-model"] == "writer"
    # A broken file is refused with the key path, and the running config keeps serving.
    s.config.write_text(original.replace("default_model: small", "default_model: nope"))
    s.procs["sidecar"].send_signal(signal.SIGHUP)
    line = s.wait_log("sidecar", "reload refused")
    assert "routing.default_model" in line
    assert s.chat("What is the capital of Australia?").headers["x-llmsoup-model"] == "writer"


def test_sidecar_down_fails_closed_when_configured(closed_stack):
    s = closed_stack
    assert s.chat("fix this python bug").headers["x-llmsoup-model"] == "coder"
    s.kill_sidecar()
    r = s.chat("fix this python bug")
    assert r.status_code == 503, r.text


def test_upstream_reset_is_a_gateway_error_and_still_accounted(stack):
    r = stack.chat("hello there", headers={"x-mock-reset": "1", "x-request-id": f"reset-{stack.mode}"})
    assert r.status_code == 503
    line = stack.wait_log("sidecar", f"reset-{stack.mode}")
    assert "usage report" in line and "usage_seen=false" in line, line
