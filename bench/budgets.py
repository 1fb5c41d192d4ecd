#!/usr/bin/env python3
"""`make bench`: the happy-path cost of budgets. For each attach mode, two gateways from the same
config (bench/bench-config.yaml), measured interleaved in the same run: without budgets, and with
request and token limits on every routed model that no request reaches, so every request makes
Envoy's ratelimit filter call the sidecar's rate limit service, which counts it in a real
redis-server (one pipelined round trip) and allows it. Reports p50/p99 and the added p50 per mode,
written to bench/budgets-results.md. Reports, does not gate.

Environment: as bench/gateway.py (LLMSOUP_BIN, BENCH_DURATION, BENCH_WARMUP, BENCH_ROUNDS).
"""

from __future__ import annotations

import datetime
import os
import shutil
import statistics
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import gateway  # noqa: E402  (bench/gateway.py: BenchStack, wrk helpers)
from redis_server import RedisServer  # noqa: E402

# c=16 (the default) writes budgets-results.md; any other concurrency its own file (budgets-results-c1.md, ...).
RESULTS = BENCH_DIR / ("budgets-results.md" if gateway.CONCURRENCY == 16 else f"budgets-results-c{gateway.CONCURRENCY}.md")
HUGE = 10**12
BUDGETS = f"""
budgets:
  store: {{redis_url: "redis://127.0.0.1:${{E2E_REDIS_PORT}}", timeout_ms: 100}}
  models:
    coder: {{requests_per_minute: {HUGE}, tokens_per_minute: {HUGE}}}
    writer: {{requests_per_minute: {HUGE}, tokens_per_minute: {HUGE}}}
"""


class Stack(gateway.BenchStack):
    def __init__(self, mode: str, redis: RedisServer | None):
        super().__init__(mode)
        self.budgets = redis is not None
        if redis is not None:
            self.env["E2E_REDIS_PORT"] = str(redis.port)
            self.config.write_text(self.config.read_text() + BUDGETS)


def main() -> int:
    if gateway.harness.envoy_bin() is None or gateway.harness.wasm_filter() is None:
        print("envoy or the wasm filter missing: run `make deps wasm`", file=sys.stderr)
        return 1
    tool = gateway.ensure_load_tool()
    if tool != "wrk":
        print("bench/budgets.py needs wrk", file=sys.stderr)
        return 1
    loadavg = Path("/proc/loadavg").read_text().split()[:3]
    redis = RedisServer().start()
    stacks: dict[tuple[str, bool], Stack] = {}
    rounds: dict[tuple[str, bool], list[dict]] = {}
    try:
        for mode in ("ext_proc", "wasm"):
            for with_budgets in (False, True):
                s = Stack(mode, redis if with_budgets else None)
                stacks[(mode, with_budgets)] = s
                s.start()
                gateway.sanity_check(s)
                rounds[(mode, with_budgets)] = []
        script = next(iter(stacks.values())).dir / "bench.lua"
        gateway.write_wrk_script(script)
        for i in range(gateway.ROUNDS):
            for key, s in stacks.items():
                if gateway.WARMUP_S > 0:
                    gateway.run_wrk(s.url, script, gateway.WARMUP_S)
                r = gateway.run_wrk(s.url, script, gateway.DURATION_S)
                rounds[key].append(r)
                print(f"[round {i + 1}] {key[0]:8} budgets={'on ' if key[1] else 'off'} {r['rps']:8.0f} req/s  "
                      f"p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  errors {r['errors']}", flush=True)
    finally:
        for s in stacks.values():
            s.stop()
            shutil.rmtree(s.dir, ignore_errors=True)
        redis.stop()

    med = {k: {m: statistics.median(r[m] for r in rs) for m in ("rps", "p50", "p99")}
           | {"errors": sum(r["errors"] for r in rs)} for k, rs in rounds.items()}
    lines = [
        "# Budgets: happy-path cost of the rate limit check",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {len(os.sched_getaffinity(0))} CPUs ({gateway.cpu_model()}); wrk, Envoy, the sidecar, "
        "the mock and redis-server share them",
        f"- sidecar: `{os.path.relpath(gateway.harness.llmsoup_bin(), ROOT)}`; load average before: "
        f"{' '.join(loadavg)}",
        f"- load: `wrk -t {gateway.THREADS} -c {gateway.CONCURRENCY} -d {gateway.DURATION_S}s`, "
        f"{gateway.ROUNDS} round(s), median; bench/bench-config.yaml, budgets: rpm + tpm on every routed model",
        "",
        "| mode | budgets | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in ("ext_proc", "wasm"):
        off, on = med[(mode, False)], med[(mode, True)]
        lines.append(f"| {mode} | off | {off['rps']:.0f} | {off['p50']:.3f} | {off['p99']:.3f} | – | – | {off['errors']} |")
        lines.append(f"| {mode} | on | {on['rps']:.0f} | {on['p50']:.3f} | {on['p99']:.3f} | "
                     f"{on['p50'] - off['p50']:+.3f} | {on['p99'] - off['p99']:+.3f} | {on['errors']} |")
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
