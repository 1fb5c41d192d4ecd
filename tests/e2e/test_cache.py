"""The response cache through a real Envoy, in both attach modes and with both stores (in-process
and a real redis-server; ext_proc also with `async_response_accounting`): hits are answered by the gateway (the mock upstream's request counter
is the evidence), paraphrases hit above the threshold only, streaming clients get valid SSE (the
openai SDK parses it), other histories and tenants miss, identical concurrent requests reach the
provider once, and a Redis that goes away only turns hits into misses."""

import concurrent.futures
import re
import time
from pathlib import Path

import openai
import pytest
import requests

from conftest import MODES
from harness import CLIENT_TOKEN, Stack
from redis_server import RedisServer

CONFIG = Path(__file__).with_name("llmsoup-cache.yaml")
OTHER_TOKEN = "e2e-other-tenant-token"
BACKENDS = ["memory", "redis"]


# Every mode with every store, plus ext_proc with `async_response_accounting` (responses read by a
# second, observability-mode ext_proc filter: the cache must capture answers from that path too).
STACKS = [(m, b) for m in MODES for b in BACKENDS] + [("ext_proc", "memory-async")]


@pytest.fixture(scope="module", params=STACKS, ids=lambda p: f"{p[0]}-{p[1]}")
def cache_stack(request):
    mode, backend = request.param
    redis = RedisServer().start() if backend == "redis" else None
    s = Stack(mode=mode)
    s.env["E2E_CACHE_BACKEND"] = backend.removesuffix("-async")
    s.env["E2E_CACHE_REDIS_URL"] = redis.url if redis else "redis://127.0.0.1:1"
    text = CONFIG.read_text()
    if backend.endswith("-async"):
        text = text.replace("\ngateway:\n", "\ngateway:\n  async_response_accounting: true\n", 1)
        assert "async_response_accounting" in text
    s.config.write_text(text)
    s.redis = redis
    s.start()
    yield s
    s.stop()
    if redis:
        redis.stop()


def mock_count(s) -> int:
    """Requests the mock upstream has answered so far (a concrete model is never cached)."""
    r = s.chat("count me", model="general")
    assert r.status_code == 200, r.text
    return int(r.json()["id"].rsplit("-", 1)[1])


def stats(s) -> dict:
    return requests.get(f"http://127.0.0.1:{s.ports['metrics']}/stats", headers=s.headers(), timeout=5).json()


def wait_stored(s, before: int, n: int = 1):
    """Waits until `n` more answers were stored (wasm reports arrive up to 200 ms later)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if stats(s)["cache"]["stored"] >= before + n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no answer stored: {stats(s)['cache']}")


def ask(s, messages, token=CLIENT_TOKEN, headers=None, **body):
    payload = {"model": "auto", "messages": messages, **body}
    return requests.post(f"{s.url}/v1/chat/completions", json=payload,
                         headers=s.headers(token, **(headers or {})), timeout=60)


def user(text):
    return [{"role": "user", "content": text}]


def prime(s, messages, **kw):
    """Sends a first request (a miss) and waits until its answer is stored."""
    before = stats(s)["cache"]["stored"]
    r = ask(s, messages, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["x-llmsoup-cache"] == "miss"
    wait_stored(s, before)
    return r


def test_second_identical_request_is_answered_by_the_gateway(cache_stack):
    s = cache_stack
    first = prime(s, user("Tell me about the Eiffel tower"), temperature=0)
    n = mock_count(s)
    again = ask(s, user("Tell me about the Eiffel tower"), temperature=0)
    assert again.status_code == 200, again.text
    assert again.headers["x-llmsoup-cache"] == "hit"
    assert again.headers["x-llmsoup-model"] == "strong"
    assert again.headers["x-llmsoup-decision"] == "cached"
    assert "x-mock-upstream" not in again.headers
    assert again.json()["id"] == first.json()["id"], "the stored answer, not a new one"
    assert again.json()["choices"] == first.json()["choices"]
    assert mock_count(s) == n + 1, "only the counting request reached the mock"
    # Field order does not matter; a different sampling parameter does.
    r = requests.post(f"{s.url}/v1/chat/completions", headers=s.headers(),
                      data='{"temperature":0,"messages":[{"content":"Tell me about the Eiffel tower","role":"user"}],'
                           '"model":"auto"}', timeout=30)
    assert r.headers["x-llmsoup-cache"] == "hit"
    assert ask(s, user("Tell me about the Eiffel tower"), temperature=0.3).headers["x-llmsoup-cache"] == "miss"


def test_paraphrases_hit_above_the_threshold_and_miss_below(cache_stack):
    s = cache_stack
    first = prime(s, user("What is the capital of France?"))
    r = ask(s, user("What's the capital city of France?"))
    assert r.headers["x-llmsoup-cache"] == "hit", r.headers
    assert r.json()["id"] == first.json()["id"]
    assert ask(s, user("How do I bake sourdough bread at home?")).headers["x-llmsoup-cache"] == "miss"
    # The `strict` decision asks for 0.999: the same paraphrase misses there.
    prime(s, user("Strictly: what is the capital of Italy?"))
    r = ask(s, user("Strictly: what's the capital city of Italy?"))
    assert r.headers["x-llmsoup-decision"] == "strict"
    assert r.headers["x-llmsoup-cache"] == "miss"


def openai_client(s, token=CLIENT_TOKEN):
    return openai.OpenAI(base_url=f"{s.url}/v1", api_key=token, max_retries=0)


def test_a_streaming_client_gets_the_cached_answer_as_sse(cache_stack):
    s = cache_stack
    first = prime(s, user("Describe the water cycle"))
    n = mock_count(s)
    raw = openai_client(s).chat.completions.with_raw_response.create(
        model="auto", messages=user("Describe the water cycle"), stream=True,
        stream_options={"include_usage": True})
    assert raw.headers["x-llmsoup-cache"] == "hit"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.json()["choices"][0]["message"]["content"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == first.json()["usage"]["completion_tokens"]
    assert mock_count(s) == n + 1
    # A streamed answer is reassembled and stored: a JSON client then gets it.
    before = stats(s)["cache"]["stored"]
    raw = openai_client(s).chat.completions.with_raw_response.create(
        model="auto", messages=user("Explain photosynthesis"), stream=True)
    assert raw.headers["x-llmsoup-cache"] == "miss"
    streamed = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    wait_stored(s, before)
    r = ask(s, user("Explain photosynthesis"))
    assert r.headers["x-llmsoup-cache"] == "hit"
    assert r.json()["object"] == "chat.completion"
    assert r.json()["choices"][0]["message"]["content"] == streamed == "tok0 tok1 tok2 tok3 "


def test_other_histories_and_tenants_miss(cache_stack):
    s = cache_stack
    convo = [{"role": "user", "content": "Pick a fruit"}, {"role": "assistant", "content": "Apple."},
             {"role": "user", "content": "Why that one?"}]
    prime(s, convo)
    assert ask(s, convo).headers["x-llmsoup-cache"] == "hit"
    other_history = [{"role": "user", "content": "Pick a vegetable"}, {"role": "assistant", "content": "Apple."},
                     {"role": "user", "content": "Why that one?"}]
    assert ask(s, other_history).headers["x-llmsoup-cache"] == "miss"
    with_system = [{"role": "system", "content": "Answer in French."}, *convo]
    assert ask(s, with_system).headers["x-llmsoup-cache"] == "miss"
    assert ask(s, convo, token=OTHER_TOKEN).headers["x-llmsoup-cache"] == "miss", "tenants are scoped"
    # A decision configured `scope: shared` shares answers between tenants.
    prime(s, user("Everyone: what is two plus two?"))
    assert ask(s, user("Everyone: what is two plus two?"), token=OTHER_TOKEN).headers["x-llmsoup-cache"] == "hit"


def test_uncacheable_requests_and_errors_are_not_stored(cache_stack):
    s = cache_stack
    n = mock_count(s)
    for _ in range(2):
        r = ask(s, user("Write a haiku"), n=2)
        assert r.status_code == 200 and r.headers["x-llmsoup-cache"] == "miss", "n > 1 is not cached"
        r = ask(s, user("Write a limerick"), temperature=1.5)
        assert r.status_code == 200 and r.headers["x-llmsoup-cache"] == "miss", "too hot to cache"
    bad = ask(s, user("Fail this one"), headers={"x-mock-status": "500"})
    assert bad.status_code == 500
    time.sleep(0.4)
    ok = ask(s, user("Fail this one"))
    assert ok.status_code == 200 and ok.headers["x-llmsoup-cache"] == "miss", "an error is never replayed"
    # The mock numbers only the answers it gives (not its told-to-fail ones): 4 uncached, the
    # retried one and the counting request.
    assert mock_count(s) == n + 4 + 1 + 1


def test_identical_concurrent_requests_reach_the_provider_once(cache_stack):
    s = cache_stack
    n = mock_count(s)

    def one(_):
        return ask(s, user("Summarise the history of Rome"), headers={"x-mock-delay-ms": "700"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(8)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1, "one answer for all eight"
    assert sorted(a.headers["x-llmsoup-cache"] for a in answers) == ["hit"] * 7 + ["miss"]
    assert mock_count(s) == n + 1 + 1, "the mock saw one of the eight"

    # Streams: the duplicates wait for the first stream to finish and get it replayed as SSE.
    def stream(_):
        raw = openai_client(s).chat.completions.with_raw_response.create(
            model="auto", messages=user("List three rivers"), stream=True,
            extra_headers={"x-mock-chunk-delay-ms": "100"})
        return raw.headers["x-llmsoup-cache"], "".join(
            c.choices[0].delta.content or "" for c in raw.parse() if c.choices)

    n = mock_count(s)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        streams = list(pool.map(stream, range(8)))
    assert {t for _, t in streams} == {"tok0 tok1 tok2 tok3 "}, streams
    assert sorted(h for h, _ in streams) == ["hit"] * 7 + ["miss"]
    assert mock_count(s) == n + 1 + 1


def test_hits_and_savings_per_tenant_in_stats_and_metrics(cache_stack):
    s = cache_stack
    prime(s, user("Name a prime number"), headers={"x-mock-usage": "1000,2000"})
    for _ in range(2):
        assert ask(s, user("Name a prime number")).headers["x-llmsoup-cache"] == "hit"
    c = stats(s)["cache"]
    e2e = c["by_tenant"]["e2e"]
    assert e2e["hits"] >= 2 and e2e["misses"] >= 1, c
    # Each hit saved 1000 prompt + 2000 completion tokens of `strong` (10 + 30 USD per 1M).
    assert e2e["saved_usd"] >= 2 * (1000 * 10 + 2000 * 30) / 1e6 - 1e-9, c
    assert c["hits"] >= e2e["hits"]
    m = s.metrics().text
    assert re.search(r'llmsoup_cache_lookups_total\{[^}]*result="hit"[^}]*tenant="e2e"', m), m
    saved = [float(v) for v in re.findall(r'^llmsoup_cache_saved_usd_total\{[^}]*tenant="e2e"[^}]*\} (\S+)$', m, re.M)]
    assert saved and sum(saved) >= 2 * (1000 * 10 + 2000 * 30) / 1e6 - 1e-9, m


# Only the Redis store can go away: this test runs on the Redis stacks alone (no skipped variants).
@pytest.mark.parametrize(
    "cache_stack", [(m, "redis") for m in MODES], ids=lambda p: f"{p[0]}-{p[1]}", indirect=True
)
def test_redis_going_away_turns_hits_into_misses(cache_stack):
    s = cache_stack
    assert s.redis is not None
    prime(s, user("What colour is the sky?"))
    assert ask(s, user("What colour is the sky?")).headers["x-llmsoup-cache"] == "hit"
    assert s.redis.keys("llmsoup:cache:e:*") >= 1, "entries live in Redis"
    s.redis.kill()
    try:
        n = mock_count(s)
        for _ in range(2):
            r = ask(s, user("What colour is the sky?"))
            assert r.status_code == 200, r.text
            assert r.headers["x-llmsoup-cache"] == "miss"
        assert mock_count(s) == n + 2 + 1, "both went to the provider"
        assert re.search(r'llmsoup_cache_errors_total\{[^}]*backend="redis"', s.metrics().text)
        assert s.sidecar_healthy()
    finally:
        s.redis.start()
    # Back: the store works again (a fresh, empty Redis).
    deadline = time.monotonic() + 10
    while ask(s, user("Is Redis back?")).headers["x-llmsoup-cache"] != "hit":
        assert time.monotonic() < deadline, "the cache did not come back with Redis"
        time.sleep(0.2)
