"""Fallback chains through a real Envoy, in both attach modes: a failed attempt (503, 429, reset)
is retried by Envoy on the next model of the request's chain within the same client request,
each attempt with its own provider, path, model id and credential. What the echoing mock
upstream received is the evidence; `x-llmsoup-attempts` says what was tried."""

import email.utils
import json
import shutil
import time
from pathlib import Path

import pytest
import requests

from conftest import MODES
from harness import BETA_PROVIDER_KEY, Stack

CONFIG = Path(__file__).with_name("llmsoup-fallback.yaml")


@pytest.fixture(scope="module", params=MODES)
def fb_stack(request):
    s = Stack(mode=request.param)
    shutil.copy(CONFIG, s.config)
    s.start()
    yield s
    s.stop()


def received(resp: requests.Response) -> dict:
    assert resp.status_code == 200, resp.text
    return resp.json()["mock"]


def backends(s) -> dict:
    r = requests.get(f"http://127.0.0.1:{s.ports['metrics']}/v1/backends",
                     headers={"authorization": "Bearer e2e-client-token"}, timeout=10)
    assert r.status_code == 200
    return r.json()["models"]


def attempts_received(s, mark: str) -> list[dict]:
    """Every request the mock providers received (failed attempts included) that carried this
    test's mark, in arrival order (one mock process serves every provider port)."""
    r = requests.get(f"http://127.0.0.1:{s.ports['alpha']}/mock/received", timeout=5)
    return [e for e in r.json() if e["headers"].get("x-e2e-mark") == mark]


def new_mark(s) -> str:
    return f"{s.mode}-{time.monotonic_ns()}"


def assert_no_internal_header(entries: list[dict]):
    for e in entries:
        leaked = sorted(h for h in e["headers"] if h.lower().startswith("x-llmsoup-"))
        assert not leaked, (e["body"].get("model"), leaked)


def test_happy_path_is_one_attempt_on_the_primary(fb_stack):
    s = fb_stack
    r = s.chat("hello", model="prim")
    m = received(r)
    assert r.headers["x-llmsoup-model"] == "prim"
    assert r.headers["x-llmsoup-attempts"] == "prim"
    assert m["body"]["model"] == "prim-v1"
    assert m["port"] == s.ports["alpha"]
    assert m["path"] == "/v1/chat/completions"
    assert "authorization" not in m["headers"]
    for internal in ("x-llmsoup-chain", "x-llmsoup-upstream", "x-llmsoup-upstream-provider", "x-llmsoup-model"):
        assert internal not in m["headers"], m["headers"]


@pytest.mark.parametrize("failure", [
    {"x-mock-fail-for": "prim-v1=503"},
    {"x-mock-fail-for": "prim-v1=429"},
    {"x-mock-reset-for": "prim-v1"},
    # Accepts the request and says nothing: failed over after `attempt_timeout_ms` (1 s).
    {"x-mock-delay-for": "prim-v1=8000"},
], ids=["503", "429", "reset", "silent"])
def test_a_failed_primary_is_answered_by_the_fallback_in_the_same_request(fb_stack, failure):
    s = fb_stack
    started = time.monotonic()
    r = s.chat("hello", model="prim", headers=failure)
    assert time.monotonic() - started < 5, "a silent primary must not hold the request until it answers"
    m = received(r)
    assert r.headers["x-llmsoup-model"] == "fb"
    # A failed attempt's entry carries the status it was answered with (none: no answer).
    fail = failure.get("x-mock-fail-for")
    status = ";" + fail.split("=")[1] if fail else ""
    assert r.headers["x-llmsoup-attempts"] == f"prim{status},fb"
    # The fallback's provider, model id and credential.
    assert m["port"] == s.ports["beta"]
    assert m["body"]["model"] == "fb-v1"
    assert m["headers"]["authorization"] == f"Bearer {BETA_PROVIDER_KEY}"
    assert m["path"] == "/v1/chat/completions"
    # Everything else in the body is what the client sent.
    assert m["body"]["messages"] == [{"role": "user", "content": "hello"}]
    # The chain routed the request and the attempt's model/provider picked its steps; none of
    # them, nor any other llmsoup header, reaches the provider.
    assert_no_internal_header([m])


def test_a_stream_fails_over_before_its_first_byte(fb_stack):
    s = fb_stack
    payload = {"model": "prim", "stream": True, "messages": [{"role": "user", "content": "stream please"}]}
    r = requests.post(f"{s.url}/v1/chat/completions", json=payload,
                      headers=s.headers(**{"x-mock-fail-for": "prim-v1=503"}), timeout=30, stream=True)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-llmsoup-model"] == "fb"
    assert r.headers["x-llmsoup-attempts"] == "prim;503,fb"
    events = [line[6:] for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    first = json.loads(events[0])
    assert first["mock"]["body"]["model"] == "fb-v1"
    assert first["mock"]["port"] == s.ports["beta"]


def test_a_stream_slower_than_the_attempt_timeout_is_not_cut_while_bytes_flow(fb_stack):
    # 5 chunks 400 ms apart: 2 s in all, twice `attempt_timeout_ms`, but never 1 s idle.
    s = fb_stack
    payload = {"model": "prim", "stream": True, "messages": [{"role": "user", "content": "slow stream"}]}
    r = requests.post(f"{s.url}/v1/chat/completions", json=payload, timeout=30, stream=True,
                      headers=s.headers(**{"x-mock-chunks": "5", "x-mock-chunk-delay-ms": "400"}))
    assert r.status_code == 200
    assert r.headers["x-llmsoup-attempts"] == "prim"
    events = [line[6:] for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]
                   if json.loads(e).get("choices"))
    assert text == "tok0 tok1 tok2 tok3 tok4 "


def test_the_chain_goes_on_and_no_credential_follows_the_request(fb_stack):
    s = fb_stack
    r = s.chat("hello", model="prim", headers={"x-mock-fail-for": "prim-v1=503,fb-v1=502"})
    m = received(r)
    assert r.headers["x-llmsoup-model"] == "last"
    assert r.headers["x-llmsoup-attempts"] == "prim;503,fb;502,last"
    assert (m["port"], m["body"]["model"]) == (s.ports["alpha"], "last-v1")
    # fb's attempt got beta's key; the next attempt, to a provider without one, must not.
    assert "authorization" not in m["headers"], m["headers"]
    r = s.chat("hello", model="secure", headers={"x-mock-fail-for": "secure-v1=503"})
    m = received(r)
    assert r.headers["x-llmsoup-attempts"] == "secure;503,open"
    assert (m["port"], m["body"]["model"]) == (s.ports["alpha"], "open-v1")
    assert "authorization" not in m["headers"], m["headers"]


def test_when_every_attempt_fails_the_client_gets_the_last_error_as_json(fb_stack):
    s = fb_stack
    r = s.chat("hello", model="prim", headers={"x-mock-fail-for": "prim-v1=503,fb-v1=503,last-v1=429"})
    assert r.status_code == 429
    assert r.headers["x-llmsoup-attempts"] == "prim;503,fb;503,last;429"
    assert r.headers["x-llmsoup-model"] == "last"
    assert "error" in r.json()
    r = s.chat("hello", model="secure", headers={"x-mock-reset-for": "secure-v1,open-v1"})
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "upstream_unavailable"


def test_fallbacks_that_cannot_take_the_request_are_skipped(fb_stack):
    s = fb_stack
    # Context window: tiny (200 tokens) cannot take a ~400-token prompt.
    r = s.chat("long " * 300, model="big", headers={"x-mock-fail-for": "big-v1=503"})
    m = received(r)
    assert r.headers["x-llmsoup-attempts"] == "big;503,tooless"
    assert m["body"]["model"] == "tooless-v1"
    # Tools: tooless cannot take a request that offers tools.
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = s.chat("hello", model="big", tools=tools, headers={"x-mock-fail-for": "big-v1=503,tiny-v1=503"})
    m = received(r)
    assert r.headers["x-llmsoup-attempts"] == "big;503,tiny;503,blind"
    assert m["body"]["model"] == "blind-v1"
    assert m["body"]["tools"] == tools
    # Vision: blind cannot take an image part.
    content = [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:,x"}}]
    payload = {"model": "big", "messages": [{"role": "user", "content": content}]}
    r = requests.post(f"{s.url}/v1/chat/completions", json=payload, timeout=30,
                      headers=s.headers(**{"x-mock-fail-for": "big-v1=503,tiny-v1=503,tooless-v1=503"}))
    m = received(r)
    assert r.headers["x-llmsoup-attempts"] == "big;503,tiny;503,tooless;503,roomy"
    assert m["body"]["model"] == "roomy-v1"


def test_no_silent_fall_below_the_quality_floor(fb_stack):
    s = fb_stack
    r = s.chat("hello", model="picky", headers={"x-mock-fail-for": "picky-v1=503"})
    m = received(r)
    assert r.headers["x-llmsoup-attempts"] == "picky;503,decent"
    assert m["body"]["model"] == "decent-v1"


def test_a_decision_chain_fails_over_in_listed_order(fb_stack):
    s = fb_stack
    r = s.chat("tell me about the zebra", headers={"x-mock-fail-for": "d1-v1=503"})
    m = received(r)
    assert r.headers["x-llmsoup-decision"] == "chained"
    assert r.headers["x-llmsoup-model"] == "d2"
    assert r.headers["x-llmsoup-attempts"] == "d1;503,d2"
    assert (m["port"], m["body"]["model"]) == (s.ports["beta"], "d2-v1")
    assert m["headers"]["authorization"] == f"Bearer {BETA_PROVIDER_KEY}"


def test_attempts_are_bounded_and_accounted_per_model(fb_stack):
    s = fb_stack
    time.sleep(0.5)  # earlier tests' reports are in (wasm mode flushes them every 200 ms)
    before = backends(s)
    # big's chain is big, tiny, tooless, blind, roomy: cut to routing.fallback.max_attempts (4).
    fail = "big-v1=503,tiny-v1=503,tooless-v1=503,blind-v1=503,roomy-v1=503"
    r = s.chat("hello", model="big", headers={"x-mock-fail-for": fail})
    assert r.status_code == 503
    assert r.headers["x-llmsoup-attempts"] == "big;503,tiny;503,tooless;503,blind;503"
    r = s.chat("hello", model="prim", headers={"x-mock-fail-for": "prim-v1=503"})
    assert r.status_code == 200

    def errors(view, model):
        return view.get(model, {}).get("errors", 0)

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # wasm-mode reports are flushed every 200 ms
        after = backends(s)
        if errors(after, "prim") > errors(before, "prim") and errors(after, "blind") > errors(before, "blind"):
            break
        time.sleep(0.1)
    for model in ("big", "tiny", "tooless", "blind", "prim"):
        assert errors(after, model) == errors(before, model) + 1, (model, before.get(model), after.get(model))
    assert errors(after, "roomy") == errors(before, "roomy")
    # The answering model is charged, not the primary.
    assert after["fb"]["requests"] > before.get("fb", {}).get("requests", 0)
    lines = [line for line in s.metrics().text.splitlines()
             if line.startswith("llmsoup_fallback_failed_attempts_total{")]
    assert any('gen_ai_request_model="prim"' in line for line in lines), lines


def wait_ejected(s, cluster: str, timeout: float = 5.0):
    """Envoy ejects on its main thread after the workers report the failures: wait until it has,
    so the next request sees the ejection however loaded the machine is."""
    url = f"http://127.0.0.1:{s.ports['admin']}/stats?filter=^cluster\\.{cluster}\\.outlier_detection\\.ejections_active$"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = requests.get(url, timeout=2).text
        if any(line.endswith(": 1") for line in text.splitlines()):
            return
        time.sleep(0.05)
    raise AssertionError(f"{cluster} not ejected: {text}")


def test_outlier_detection_ejects_a_failing_model_then_takes_it_back(fb_stack):
    s = fb_stack
    for _ in range(2):
        r = s.chat("hello", model="ej", headers={"x-mock-fail-for": "ej-v1=503"})
        assert r.headers["x-llmsoup-attempts"] == "ej;503,ejfb", r.headers
    wait_ejected(s, "fallback_model_ej")
    # Ejected after two failures in a row: the chain skips it without an attempt.
    r = s.chat("hello", model="ej")
    m = received(r)
    assert r.headers["x-llmsoup-attempts"] == "ejfb"
    assert r.headers["x-llmsoup-model"] == "ejfb"
    assert m["body"]["model"] == "ejfb-v1"
    # Back after base_ejection_time_ms (4 s: long enough that a loaded machine still sees the
    # ejection on the next request), healed.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.3)
        r = s.chat("hello", model="ej")
        if r.headers["x-llmsoup-attempts"] == "ej":
            break
    assert r.headers["x-llmsoup-attempts"] == "ej"
    assert received(r)["body"]["model"] == "ej-v1"


def test_an_ejected_provider_with_no_fallback_fails_fast_as_json_then_recovers(fb_stack):
    s = fb_stack
    for _ in range(2):
        r = s.chat("hello", model="solo", headers={"x-mock-fail-for": "solo-v1=503"})
        assert r.status_code == 503
    wait_ejected(s, "provider_delta")
    r = s.chat("hello", model="solo")
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("server_error", "no_healthy_upstream"), err
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.3)
        r = s.chat("hello", model="solo")
        if r.status_code == 200:
            break
    assert received(r)["body"]["model"] == "solo-v1"


NO_LEAK_CASES = {
    # name: (request headers, streamed, models the providers received, in order)
    "happy": ({}, False, ["prim-v1"]),
    "503": ({"x-mock-fail-for": "prim-v1=503"}, False, ["prim-v1", "fb-v1"]),
    "reset": ({"x-mock-reset-for": "prim-v1"}, False, ["prim-v1", "fb-v1"]),
    "three-attempts": ({"x-mock-fail-for": "prim-v1=503,fb-v1=429"}, False, ["prim-v1", "fb-v1", "last-v1"]),
    "stream": ({"x-mock-fail-for": "prim-v1=503"}, True, ["prim-v1", "fb-v1"]),
}


@pytest.mark.parametrize("case", NO_LEAK_CASES, ids=list(NO_LEAK_CASES))
def test_no_llmsoup_header_reaches_a_provider_on_any_attempt(fb_stack, case):
    """The chain, the model's byte span, the attempts so far and the first path must outlive an
    attempt; they live in Envoy's dynamic metadata, so no attempt — first, fallback or streamed —
    carries an `x-llmsoup-*` header to a provider."""
    s = fb_stack
    headers, stream, models = NO_LEAK_CASES[case]
    mark = new_mark(s)
    payload = {"model": "prim", "stream": stream, "messages": [{"role": "user", "content": "hello"}]}
    r = requests.post(f"{s.url}/v1/chat/completions", json=payload, timeout=30, stream=stream,
                      headers=s.headers(**{**headers, "x-e2e-mark": mark}))
    assert r.status_code == 200, r.text
    if stream:
        assert r.text.rstrip().endswith("data: [DONE]")
    got = attempts_received(s, mark)
    assert [e["body"]["model"] for e in got] == models, got
    assert_no_internal_header(got)
    # The last attempt (alpha's or beta's) answered: its path and id are its own.
    for e in got:
        assert e["path"] == "/v1/chat/completions"


def backends_until(s, pred, timeout: float = 5.0) -> dict:
    """/v1/backends once `pred` holds (wasm-mode reports are flushed every 200 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        view = backends(s)
        if pred(view) or time.monotonic() > deadline:
            return view
        time.sleep(0.05)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_a_retry_after_skips_the_model_for_that_long_then_it_is_used_again(fb_stack, form):
    s = fb_stack
    # Start with no window running (the other form's may still be).
    backends_until(s, lambda v: "skip_s" not in v.get("rl", {}), timeout=10)
    if form == "seconds":
        retry_after = "2"
    else:  # an HTTP date 4 s ahead: its comma travels percent-encoded in x-llmsoup-attempts
        retry_after = email.utils.formatdate(time.time() + 4, usegmt=True)
    mark = new_mark(s)
    r = s.chat("hello", model="rl", headers={"x-mock-fail-for": "rl-v1=429", "x-mock-retry-after": retry_after,
                                             "x-e2e-mark": mark})
    assert received(r)["body"]["model"] == "rlfb-v1"
    assert r.headers["x-llmsoup-model"] == "rlfb"
    attempts = r.headers["x-llmsoup-attempts"]
    assert attempts.startswith("rl;429;") and attempts.endswith(",rlfb"), attempts
    assert [e["body"]["model"] for e in attempts_received(s, mark)] == ["rl-v1", "rlfb-v1"]
    view = backends_until(s, lambda v: "skip_s" in v.get("rl", {}))
    assert 0 < view["rl"]["skip_s"] <= 4.5, view["rl"]
    started = time.monotonic()
    # Within the window: straight to the fallback, the primary never sees the request.
    mark = new_mark(s)
    r = s.chat("hello", model="rl", headers={"x-e2e-mark": mark})
    assert time.monotonic() - started < 1.5
    assert r.headers["x-llmsoup-model"] == "rlfb"
    assert received(r)["body"]["model"] == "rlfb-v1"
    got = attempts_received(s, mark)
    assert [e["body"]["model"] for e in got] == ["rlfb-v1"], got
    assert_no_internal_header(got)
    # After it: the primary again.
    backends_until(s, lambda v: "skip_s" not in v.get("rl", {}), timeout=6)
    r = s.chat("hello", model="rl")
    assert r.headers["x-llmsoup-model"] == "rl"
    assert received(r)["body"]["model"] == "rl-v1"


def test_a_long_retry_after_is_capped_by_max_skip_s(fb_stack):
    s = fb_stack
    r = s.chat("hello", model="capped", headers={"x-mock-fail-for": "capped-v1=503", "x-mock-retry-after": "3600"})
    assert received(r)["body"]["model"] == "cappedfb-v1"
    assert r.headers["x-llmsoup-attempts"] == "capped;503;3600,cappedfb"
    view = backends_until(s, lambda v: "skip_s" in v.get("capped", {}))
    assert 25 < view["capped"]["skip_s"] <= 30, view["capped"]


def decision_log_line(s, request_id: str) -> dict:
    path = s.dir / "decisions.jsonl"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip() and json.loads(line).get("request_id") == request_id:
                    return json.loads(line)
        time.sleep(0.05)
    raise AssertionError(f"no decision log line for {request_id}")


def test_the_decision_log_says_which_chain_models_were_skipped_and_why(fb_stack):
    s = fb_stack
    rid = f"skips-{s.mode}-{time.monotonic_ns()}"
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = s.chat("tell me about the walrus", tools=tools, headers={"x-request-id": rid})
    m = received(r)
    assert r.headers["x-llmsoup-decision"] == "skippy"
    # The chain Envoy got is what was left: picky, then decent.
    assert r.headers["x-llmsoup-attempts"] == "picky"
    assert m["body"]["model"] == "picky-v1"
    line = decision_log_line(s, rid)
    assert line["model"] == "picky"
    assert line["skipped_fallbacks"] == [
        {"model": "weak", "reason": "quality_floor"},
        {"model": "tooless", "reason": "tools"},
    ], line


# Adversarial: the chain routes match on `x-llmsoup-chain`, so a client must not be able to pick a
# chain (or a model span, or the tried list) itself: every client `x-llmsoup-*` header is removed
# before routing, and only the sidecar's decision selects a chain route.
FORGED = {"x-llmsoup-chain": "fb,last", "x-llmsoup-model-span": "0-3", "x-llmsoup-tried": "prim"}


def test_a_forged_chain_is_ignored(fb_stack):
    s = fb_stack
    r = s.chat("hello", model="fb", headers=FORGED)
    m = received(r)
    assert r.headers["x-llmsoup-model"] == "fb"
    # `fb` has no fallbacks: its plain model route answered, not a chain route.
    assert "x-llmsoup-attempts" not in r.headers
    assert m["port"] == s.ports["beta"]
    assert m["body"]["model"] == "fb-v1"
    assert m["headers"].get("x-llmsoup-chain") in (None, "fb")
    # A failing model without fallbacks is not retried on the forged chain's `last`.
    r = s.chat("hello", model="fb", headers={**FORGED, "x-mock-fail-for": "fb-v1=503"})
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/json")
