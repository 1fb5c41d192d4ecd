#!/usr/bin/env python3
"""`make bench` (response cache): latency of a cache hit answered by the gateway against a
provider call to the mock upstream, through a real Envoy, per attach mode and store (in-process
and a real redis-server), measured in the same run on the same stack.

One client on one keep-alive connection sends BENCH_CACHE_REQUESTS (default 1000) requests of each
kind after a warm-up: `hit` repeats a prompt whose answer is cached (exact match; the decision
also has semantic matching on, so the shared query embedding is computed once and then comes from
the embedding cache), `provider` sends a concrete model name (no routing, no cache), which Envoy
forwards to the mock. Prints a table and writes bench/cache-results.md. Reports, does not gate.

Environment: LLMSOUP_BIN (`make bench` passes the release build), LLMSOUP_WASM, ENVOY_BIN,
BENCH_CACHE_REQUESTS.
"""

from __future__ import annotations

import datetime
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import requests

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import harness  # noqa: E402
from redis_server import RedisServer  # noqa: E402

sys.path.insert(0, str(BENCH_DIR))
from gateway import cpu_model, envoy_version  # noqa: E402

CONFIG = ROOT / "tests" / "e2e" / "llmsoup-cache.yaml"
RESULTS = BENCH_DIR / "cache-results.md"
N = int(os.environ.get("BENCH_CACHE_REQUESTS", "1000"))


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(session: requests.Session, url: str, payload: dict, headers: dict, n: int, want: str | None) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = session.post(url, json=payload, headers=headers, timeout=30)
        out.append((time.perf_counter() - t) * 1e3)
        assert r.status_code == 200, r.text
        if want is not None:
            assert r.headers.get("x-llmsoup-cache") == want, r.headers
    return out


def run(mode: str, backend: str) -> dict:
    redis = RedisServer().start() if backend == "redis" else None
    s = harness.Stack(mode=mode)
    s.env["E2E_CACHE_BACKEND"] = backend
    s.env["E2E_CACHE_REDIS_URL"] = redis.url if redis else "redis://127.0.0.1:1"
    s.env["LLMSOUP_LOG"] = "info"
    shutil.copy(CONFIG, s.config)
    try:
        s.start()
        url = f"{s.url}/v1/chat/completions"
        headers = s.headers()
        session = requests.Session()
        hit = {"model": "auto", "messages": [{"role": "user", "content": "What is the tallest mountain on Earth?"}]}
        provider = {"model": "general", "messages": [{"role": "user", "content": "What is the tallest mountain?"}]}
        timed(session, url, hit, headers, 1, "miss")
        time.sleep(0.5)  # the wasm filter reports the captured answer within 200 ms
        timed(session, url, hit, headers, 50, "hit")
        timed(session, url, provider, headers, 50, None)
        hits = timed(session, url, hit, headers, N, "hit")
        calls = timed(session, url, provider, headers, N, None)
        return {"hit": hits, "provider": calls}
    finally:
        s.stop()
        if redis:
            redis.stop()


def main() -> int:
    rows = []
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    for mode in ("ext_proc", "wasm"):
        for backend in ("memory", "redis"):
            if backend == "redis" and shutil.which("redis-server") is None:
                print("redis-server not installed: skipping the Redis store", flush=True)
                continue
            print(f"cache bench: {mode} / {backend} ...", flush=True)
            r = run(mode, backend)
            rows.append((mode, backend, r))
    lines = [
        "# Response cache: hit latency vs a provider call (through Envoy)",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, `bench/cache.py`, Envoy {envoy_version()}, "
        f"sidecar: {harness.llmsoup_bin()} ({harness.llmsoup_bin().parent.name} build), "
        f"CPU: {cpu_model()} ({os.cpu_count()} cores; load average before {load_before}, after "
        f"{' '.join(open('/proc/loadavg').read().split()[:3])}), one client, one keep-alive connection, "
        f"{N} requests of each kind after a warm-up. The provider is the local mock upstream (no "
        "network, no model time): real providers take 100s of ms, so this compares the gateway's "
        "own cost of a hit with its cost of a forwarded request.",
        "",
        "| mode | store | hit p50 ms | hit p99 ms | provider p50 ms | provider p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for mode, backend, r in rows:
        h, p = r["hit"], r["provider"]
        lines.append(f"| {mode} | {backend} | {statistics.median(h):.2f} | {percentile(h, 99):.2f} | "
                     f"{statistics.median(p):.2f} | {percentile(p, 99):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
