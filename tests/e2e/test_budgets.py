"""Token budgets and rate limits, in both attach modes: Envoy's ratelimit filter asks the
sidecar's rate limit service (RLS v3) before each provider call; tokens and spend are charged to
Redis when the usage report arrives. Two gateways (Envoy + sidecar each) share one real
redis-server, as two replicas would."""

from __future__ import annotations

import hashlib
import time
import uuid

import pytest
import requests

from harness import Stack
from redis_server import RedisServer

MODES = ["ext_proc", "wasm"]

# Tokens of this file (besides the harness's `e2e`): name → (token, group).
TOKENS = {
    "tpm": ("budget-tpm-token-1", None),          # tokens_per_minute: 100
    "spender": ("budget-spender-token-1", "payers"),
    "spender2": ("budget-spender-token-2", "payers"),  # payers: usd_per_day 0.001
    "restart": ("budget-restart-token-1", None),  # usd_per_day 0.001 (restart test)
    "capped": ("budget-capped-token-1", None),    # usd_per_month 100 (Redis-down test)
    "rpm": ("budget-rpm-token-1", None),          # requests_per_minute 1000 (Redis-down test)
}

BUDGETS = """
budgets:
  store:
    redis_url: "redis://127.0.0.1:${E2E_REDIS_PORT}"
    timeout_ms: 200
    key_prefix: "${E2E_BUDGET_PREFIX}"
  tokens:
    tpm: {tokens_per_minute: 100}
    restart: {usd_per_day: 0.001}
    capped: {usd_per_month: 100}
    rpm: {requests_per_minute: 1000}
  groups:
    payers: {usd_per_day: 0.001}
"""


def budget_stack(mode: str, redis: RedisServer, prefix: str) -> Stack:
    s = Stack(mode=mode)
    s.env.update(E2E_REDIS_PORT=str(redis.port), E2E_BUDGET_PREFIX=prefix)
    text = s.config.read_text()
    extra = "".join(
        f'    - {{name: {name}, sha256: "{hashlib.sha256(tok.encode()).hexdigest()}"'
        + (f", group: {group}" if group else "") + "}\n"
        for name, (tok, group) in TOKENS.items()
    )
    text = text.replace("\nauth:\n  tokens:\n", "\nauth:\n  tokens:\n" + extra, 1)
    s.config.write_text(text + BUDGETS)
    return s.start()


@pytest.fixture(scope="module", params=MODES)
def gateways(request):
    """Two gateways sharing one Redis and one key prefix (two replicas of one deployment)."""
    redis = RedisServer().start()
    prefix = f"llmsoup:e2e:{uuid.uuid4().hex[:8]}"
    a = budget_stack(request.param, redis, prefix)
    try:
        b = budget_stack(request.param, redis, prefix)
    except Exception:
        a.stop()
        raise
    yield a, b, redis
    a.stop()
    b.stop()
    redis.stop()


def chat(stack: Stack, name: str, usage: str = "10,10", model: str = "small") -> requests.Response:
    rid = f"budget-{uuid.uuid4().hex[:12]}"
    return stack.chat("hello there", model=model, token=TOKENS[name][0],
                      headers={"x-mock-usage": usage, "x-request-id": rid})


def reached_provider(stack: Stack, r: requests.Response) -> bool:
    rid = r.request.headers["x-request-id"]
    return any("mock received" in line and rid in line for line in stack.log("mock").splitlines())


def until_refused(stack: Stack, name: str, timeout: float = 8.0) -> requests.Response:
    """Charges land after the response (wasm reports are flushed every 200 ms): retry until the
    budget refuses, with requests that report no usage of their own."""
    deadline = time.monotonic() + timeout
    while True:
        r = chat(stack, name, usage="0,0")
        if r.status_code != 200 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def assert_refused(r: requests.Response, status: int, code: str, stack: Stack):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code, err
    assert err["message"]
    assert int(r.headers["retry-after"]) >= 1
    assert not reached_provider(stack, r), "a refused request must not reach the provider"


def stats(stack: Stack) -> dict:
    url = f"http://127.0.0.1:{stack.ports['metrics']}/stats"
    return requests.get(url, headers={"authorization": "Bearer e2e-client-token"}, timeout=10).json()


def wait_for_fresh_minute():
    # tokens_per_minute counts in UTC minutes: keep a test's charge and check in one minute.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)


def test_over_tokens_per_minute_gets_429_json_with_retry_after(gateways):
    a, _, _ = gateways
    wait_for_fresh_minute()
    r = chat(a, "tpm", usage="60,50")
    assert r.status_code == 200, r.text
    assert reached_provider(a, r)
    refused = until_refused(a, "tpm")
    assert_refused(refused, 429, "rate_limit_exceeded", a)
    assert refused.headers["x-llmsoup-budget"] == "token:tpm:tokens_per_minute"
    assert int(refused.headers["retry-after"]) <= 60
    # Other tenants are not affected.
    assert chat(a, "rpm").status_code == 200


def test_two_replicas_enforce_one_spend_cap_per_group(gateways):
    a, b, _ = gateways
    # 1000 prompt tokens of `small` at $1/1M: $0.001, the group's whole day.
    r = chat(a, "spender", usage="1000,0")
    assert r.status_code == 200, r.text
    # The other gateway, the other token of the group: refused.
    refused = until_refused(b, "spender2")
    assert_refused(refused, 429, "insufficient_quota", b)
    assert refused.headers["x-llmsoup-budget"] == "group:payers:usd_per_day"
    assert int(refused.headers["retry-after"]) <= 86_400
    # Per-tenant accounting: spend on one replica, the refusal on the other.
    deadline = time.monotonic() + 5
    while stats(a)["by_tenant"].get("spender", {}).get("spent_usd", 0) < 0.001 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stats(a)["by_tenant"]["spender"]["spent_usd"] == pytest.approx(0.001)
    assert stats(b)["by_tenant"]["spender2"]["throttled"] >= 1
    metrics = b.metrics().text
    assert any(line.startswith("llmsoup_budget_throttled_total") and 'tenant="spender2"' in line
               and 'limit="group:usd_per_day"' in line for line in metrics.splitlines()), metrics[-3000:]
    # Finished requests count per tenant where they finished: `spender`'s on replica a. (Replica b
    # may refuse `spender2` on its very first request, when a's charge reached Redis first, so b
    # need not have finished any request of its own.)
    assert any(line.startswith("llmsoup_tenant_requests_total") and 'tenant="spender"' in line
               for line in a.metrics().text.splitlines())


def test_a_sidecar_restart_keeps_the_spent_amount(gateways):
    a, _, _ = gateways
    r = chat(a, "restart", usage="1000,0")
    assert r.status_code == 200, r.text
    assert_refused(until_refused(a, "restart"), 429, "insufficient_quota", a)
    a.kill_sidecar()
    a.start_sidecar()
    a.wait_sidecar_healthy()
    r = chat(a, "restart", usage="0,0")
    assert_refused(r, 429, "insufficient_quota", a)


def test_redis_down_fails_spend_caps_closed_and_rate_limits_open(gateways):
    a, b, redis = gateways
    assert chat(a, "capped").status_code == 200
    redis.kill()
    try:
        for stack in (a, b):
            r = chat(stack, "capped")
            assert_refused(r, 503, "budget_unavailable", stack)
            assert r.headers["x-llmsoup-budget"] == "unavailable"
            # Only rate limits apply to `rpm`: they fail open.
            r = chat(stack, "rpm")
            assert r.status_code == 200, r.text
            # No limit at all: untouched.
            assert stack.chat("hello", model="small").status_code == 200
            assert stack.procs["sidecar"].poll() is None and stack.procs["envoy"].poll() is None
    finally:
        redis.start()
    # Redis back (empty): budgets are enforced again without a restart.
    deadline = time.monotonic() + 10
    while chat(a, "capped").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert chat(a, "capped").status_code == 200
