"""Selection that learns from responses, in both attach modes: a slow upstream is avoided by
`latency_aware`, a failing one is marked down and skipped (and shows in /v1/backends)."""

import time

import requests


def backends(stack) -> dict:
    r = requests.get(f"http://127.0.0.1:{stack.ports['metrics']}/v1/backends",
                     headers={"authorization": "Bearer e2e-client-token"}, timeout=10)
    assert r.status_code == 200
    return r.json()["models"]


def test_latency_aware_avoids_the_slow_upstream(stack):
    slow = {"x-mock-delay-for": "tortoise-v1=300"}
    picked = []
    for _ in range(8):
        r = stack.chat("tell me about the turtle", headers=slow)
        assert r.status_code == 200
        picked.append(r.headers["x-llmsoup-model"])
        time.sleep(0.3)  # wasm-mode reports are flushed every 200 ms
    assert "tortoise" in picked[:3], picked  # measured at first
    assert picked[-3:] == ["hare"] * 3, picked
    seen = backends(stack)
    assert seen["tortoise"]["ttft_ms"][0] >= 300 > seen["hare"]["ttft_ms"][0]


def test_failing_upstream_is_marked_down_and_skipped(stack):
    broken = {"x-mock-fail-for": "shaky-v1=503"}
    statuses = []
    for _ in range(6):
        r = stack.chat("zebra facts please", headers=broken)
        statuses.append((r.status_code, r.headers.get("x-llmsoup-model")))
        time.sleep(0.3)
    assert statuses[0] == (503, "shaky"), statuses
    assert statuses[-2:] == [(200, "steady")] * 2, statuses
    assert backends(stack)["shaky"]["status"] == "down"
    assert backends(stack)["steady"]["status"] == "healthy"


def test_latency_signal_falls_back_while_the_primary_is_slow(stack):
    slow = {"x-mock-delay-for": "primary-v1=300"}
    picked = []
    for _ in range(5):
        r = stack.chat("giraffe facts please", headers=slow)
        assert r.status_code == 200
        picked.append((r.headers["x-llmsoup-model"], r.headers["x-llmsoup-decision"]))
        time.sleep(0.3)
    assert picked[0] == ("primary", "giraffe"), picked
    assert picked[-2:] == [("secondary", "giraffe_fallback")] * 2, picked
    assert backends(stack)["primary"]["in_flight"] == 0
