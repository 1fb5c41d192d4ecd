#!/usr/bin/env python3
"""`make bench`, streaming step: what response accounting costs an SSE client. Client-side time to
first byte of the response *body* (and, for context, of the response headers) over sequential
streaming requests through Envoy, for eight gateways built from bench/bench-config.yaml and run side
by side:

  bare             Envoy -> mock, the ext_proc bootstrap without the ext_proc and Lua filters;
  ext_proc         ext_proc filter + sidecar, response accounting on (the default): inline, SSE
                   bodies STREAMED to the sidecar on the routing stream, each chunk held until
                   the sidecar answers;
  ext_proc_async   `gateway.async_response_accounting: true`: a second ext_proc filter in
                   observability mode reads the response and Envoy never waits for it;
  ext_proc_off     `gateway.response_accounting: false` (no response body to the sidecar);
  wasm             proxy-wasm filter + sidecar, accounting on (the filter reads chunks as they pass);
  wasm_off         the same with accounting off;
  ext_proc_messages, wasm_messages
                   an Anthropic Messages client (`POST /v1/messages`) routed to the same
                   OpenAI-format provider: the request and every SSE event are translated (and usage
                   is asked for upstream), compared with the same mode's OpenAI client.

Requests go one at a time over one keep-alive connection per gateway, in interleaved rounds (the
order rotates every round) so machine drift hits every mode alike. The mock streams
BENCH_TTFB_CHUNKS events BENCH_TTFB_CHUNK_DELAY_MS apart with a usage block. After the run, /stats
of each sidecar must show the exact token count for the accounting modes and none for the others.
Results are printed and written to bench/ttfb-results.md. Reports, does not gate: exit 0 whether or
not the target (accounting adds <= 0.2 ms p50 over the same mode without it) is met.

Environment: LLMSOUP_BIN (`make bench` passes the release build), LLMSOUP_WASM, ENVOY_BIN,
BENCH_TTFB_REQUESTS (per mode, default 800), BENCH_TTFB_ROUNDS (default 8),
BENCH_TTFB_CHUNKS (default 4), BENCH_TTFB_CHUNK_DELAY_MS (default 1), BENCH_TTFB_GAP_MS (idle time
between requests, default 2), BENCH_TTFB_BUDGET (seconds of
measuring before the remaining rounds are dropped, default 75), BENCH_SIDECAR_LOG (default `info`),
BENCH_KEEP=1 (keep the stacks' temp dirs and logs).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import sys
import time
from pathlib import Path

import requests

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import gateway  # noqa: E402  (bench/gateway.py: BenchStack, sanity_check, envoy_version, cpu_model)
import harness  # noqa: E402

RESULTS = BENCH_DIR / "ttfb-results.md"
REQUESTS = int(os.environ.get("BENCH_TTFB_REQUESTS", "800"))
ROUNDS = max(1, int(os.environ.get("BENCH_TTFB_ROUNDS", "8")))
CHUNKS = int(os.environ.get("BENCH_TTFB_CHUNKS", "4"))
CHUNK_DELAY_MS = int(os.environ.get("BENCH_TTFB_CHUNK_DELAY_MS", "1"))
# Idle time between requests: without it the previous request's tail work (its usage report,
# closing its gRPC streams) lands on the next request's first byte, and a mode that finishes that
# work *before* releasing the last chunk (inline accounting) looks faster than one that does not.
GAP_MS = float(os.environ.get("BENCH_TTFB_GAP_MS", "2"))
BUDGET_S = float(os.environ.get("BENCH_TTFB_BUDGET", "75"))
WARMUP = 50
KEEP = os.environ.get("BENCH_KEEP") == "1"

# The target: response accounting adds at most this to the p50 time to first body byte.
MAX_ADDED_P50_MS = 0.2

PROMPT_TOKENS, COMPLETION_TOKENS = 100, 8
# (key, label, base gateway, response accounting)
MODES = [
    ("bare", "bare Envoy → mock", "bare", None),
    ("ext_proc", "ext_proc, accounting", "ext_proc", True),
    ("ext_proc_async", "ext_proc, async accounting", "ext_proc", "async"),
    ("ext_proc_off", "ext_proc, no accounting", "ext_proc", False),
    ("wasm", "wasm, accounting", "wasm", True),
    ("wasm_off", "wasm, no accounting", "wasm", False),
    ("ext_proc_messages", "ext_proc, Anthropic client → OpenAI provider", "ext_proc", True),
    ("wasm_messages", "wasm, Anthropic client → OpenAI provider", "wasm", True),
]
LABEL = {key: label for key, label, _, _ in MODES}
# Which mode each accounting mode is compared with.
WITHOUT = {"ext_proc": "ext_proc_off", "ext_proc_async": "ext_proc_off", "wasm": "wasm_off"}
# The modes whose client speaks Anthropic Messages, and the OpenAI-client mode each is compared with:
# the difference is what translating the request and every SSE event adds.
TRANSLATED = {"ext_proc_messages": "ext_proc", "wasm_messages": "wasm"}


class TtfbStack(gateway.BenchStack):
    """A BenchStack whose sidecar serves /stats on its own port, with accounting on or off."""

    def __init__(self, key: str, base: str, accounting: bool | str | None):
        super().__init__(base)
        self.key = key
        self.accounting = bool(accounting)
        text = self.config.read_text()
        patched = text.replace("\nserver:\n", '\nserver:\n  admin_listen: "127.0.0.1:${E2E_METRICS_PORT}"\n', 1)
        gateway_line = {False: "response_accounting: false", "async": "async_response_accounting: true"}.get(accounting)
        if gateway_line:
            patched = patched.replace("\ngateway:\n", f"\ngateway:\n  {gateway_line}\n", 1)
        if patched.count("\n") != text.count("\n") + (2 if gateway_line else 1):
            raise RuntimeError("bench/bench-config.yaml: expected `server:` and `gateway:` blocks to patch")
        self.config.write_text(patched)


def request_bytes(port: int, anthropic: bool) -> bytes:
    messages = [{"role": "user", "content": gateway.PROMPTS[0][0]}]
    if anthropic:
        # What the anthropic SDK sends: no stream_options (the gateway asks the OpenAI-format
        # provider for usage itself and reports it in message_start / message_delta).
        path, extra = "/v1/messages", "anthropic-version: 2023-06-01\r\n"
        payload = {"model": "auto", "max_tokens": 64, "stream": True, "messages": messages}
    else:
        path, extra = gateway.PATH, ""
        payload = {"model": "auto", "stream": True, "stream_options": {"include_usage": True}, "messages": messages}
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n{extra}"
            f"x-mock-chunks: {CHUNKS}\r\nx-mock-chunk-delay-ms: {CHUNK_DELAY_MS}\r\n"
            f"x-mock-usage: {PROMPT_TOKENS},{COMPLETION_TOKENS}\r\ncontent-length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Client:
    """One keep-alive HTTP/1.1 connection; times each streamed response from the request's send."""

    def __init__(self, stack: TtfbStack):
        self.stack = stack
        self.port = stack.ports["listen"]
        self.anthropic = stack.key in TRANSLATED
        self.request = request_bytes(self.port, self.anthropic)
        self.sock: socket.socket | None = None

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def one(self) -> tuple[float, float, float]:
        """ms to the end of the response headers, to the first body byte, to the last byte."""
        time.sleep(GAP_MS / 1e3)
        if self.sock is None:
            self.connect()
        sock = self.sock
        buf = bytearray()
        t_headers = t_body = None
        body_at = -1
        t0 = time.perf_counter()
        sock.sendall(self.request)
        while True:
            data = sock.recv(65536)
            now = time.perf_counter()
            if not data:
                self.close()
                raise RuntimeError(f"{self.stack.key}: connection closed mid-response: {bytes(buf[:300])!r}")
            buf += data
            if body_at < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                t_headers, body_at = now, end + 4
                self.check_headers(bytes(buf[:end]).decode("latin-1"))
            if t_body is None:
                # Chunked encoding: "<size>\r\n" precedes the first body byte.
                line = buf.find(b"\r\n", body_at)
                if line < 0 or len(buf) <= line + 2:
                    continue
                t_body = now
            if buf.endswith(b"\r\n0\r\n\r\n"):
                break
        done = (b"event: message_stop" in buf and b'"output_tokens"' in buf) if self.anthropic \
            else (b"data: [DONE]" in buf and b'"usage"' in buf)
        if not done:
            raise RuntimeError(f"{self.stack.key}: incomplete stream: {bytes(buf[-300:])!r}")
        return (t_headers - t0) * 1e3, (t_body - t0) * 1e3, (now - t0) * 1e3

    def check_headers(self, head: str):
        lines = head.split("\r\n")
        if not lines[0].startswith("HTTP/1.1 200"):
            raise RuntimeError(f"{self.stack.key}: {lines[0]}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if headers.get("transfer-encoding") != "chunked" or not headers.get("content-type", "").startswith(
                "text/event-stream"):
            raise RuntimeError(f"{self.stack.key}: not a chunked SSE response: {headers}")
        routed = headers.get("x-llmsoup-model")
        if (self.stack.target == "bare") != (routed is None):
            raise RuntimeError(f"{self.stack.key}: x-llmsoup-model={routed!r}")


def sidecar_totals(stack: TtfbStack) -> dict:
    url = f"http://127.0.0.1:{stack.ports['metrics']}/stats"
    return requests.get(url, timeout=10).json()["total"]


def settled_totals(stack: TtfbStack, requests_sent: int) -> dict:
    """/stats once every request is accounted (wasm reports arrive in the background)."""
    deadline = time.monotonic() + 10
    while True:
        t = sidecar_totals(stack)
        if t["requests"] >= requests_sent or time.monotonic() > deadline:
            return t
        time.sleep(0.2)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


def report(samples: dict, per_round: dict, checks: list[str], meta: dict) -> tuple[str, bool]:
    summary = {k: {"p50": pct([b for _, b, _ in s], 50), "p99": pct([b for _, b, _ in s], 99),
                   "h50": pct([h for h, _, _ in s], 50), "gap50": pct([b - h for h, b, _ in s], 50),
                   "end50": pct([e for _, _, e in s], 50), "n": len(s)}
               for k, s in samples.items()}
    bare = summary["bare"]
    lines = [
        "# llmsoup streaming benchmark: time to first byte with and without response accounting",
        "",
        f"- date: {meta['date']}",
        f"- machine: {meta['nproc']} CPUs ({meta['cpu']}), {platform.system()} {platform.release()}; the client, "
        f"Envoy, the sidecar and the mock share these CPUs; load average before {meta['load_before']}, "
        f"after {meta['load_after']}",
        f"- Envoy {meta['envoy']} (`--concurrency 2`), sidecar `{meta['bin']}`, wasm filter `{meta['wasm']}`",
        f"- load: one request at a time over one keep-alive HTTP/1.1 connection per gateway, "
        f"{GAP_MS:g} ms apart, {meta['rounds']} interleaved rounds (order rotated each round), {WARMUP} warm-up "
        "requests per gateway; "
        f"`stream: true` chat completions, the mock streams {CHUNKS} tokens {CHUNK_DELAY_MS} ms apart plus a "
        f"usage block; config bench/bench-config.yaml (keyword rules, no auth)",
        "- TTFB = client-side time from sending the request to the first byte of the response body; "
        "headers = to the end of the response headers; body − headers = the wait between the two, per request; "
        "last byte = to the end of the response",
        "",
        "| mode | requests | TTFB p50 ms | TTFB p99 ms | headers p50 ms | body − headers p50 ms | last byte p50 ms "
        "| added p50 vs bare | added p99 vs bare | added p50 by accounting | added p99 by accounting |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts, all_met = [], True
    for key, label, _, _ in MODES:
        s = summary[key]
        vs_bare = ("–", "–") if key == "bare" else (f"{s['p50'] - bare['p50']:+.3f}", f"{s['p99'] - bare['p99']:+.3f}")
        if key in WITHOUT:
            w = summary[WITHOUT[key]]
            d50, d99 = s["p50"] - w["p50"], s["p99"] - w["p99"]
            vs_off = (f"**{d50:+.3f}**", f"{d99:+.3f}")
            met = d50 <= MAX_ADDED_P50_MS
            all_met &= met
            verdicts.append(f"- **{label}: {'MET' if met else 'MISSED'}** — {'✅' if met else '❌'} accounting adds "
                            f"{d50:+.3f} ms p50 (≤ {MAX_ADDED_P50_MS} ms) and {d99:+.3f} ms p99 to the time to "
                            f"first byte")
        else:
            vs_off = ("–", "–")
        lines.append(f"| {label} | {s['n']} | {s['p50']:.3f} | {s['p99']:.3f} | {s['h50']:.3f} | {s['gap50']:.3f} | {s['end50']:.3f} "
                     f"| {vs_bare[0]} "
                     f"| {vs_bare[1]} | {vs_off[0]} | {vs_off[1]} |")
    lines += ["", "Target (accounting vs the same attach mode without it):", ""] + verdicts
    lines += ["", "Translation (Anthropic Messages client → OpenAI-format provider, vs the same attach mode's "
              "OpenAI client; both with accounting; no target in the issue, reported):", ""]
    for key, pair in TRANSLATED.items():
        s, w = summary[key], summary[pair]
        lines.append(f"- {LABEL[key]}: TTFB {s['p50'] - w['p50']:+.3f} ms p50, {s['p99'] - w['p99']:+.3f} ms p99; "
                     f"last byte {s['end50'] - w['end50']:+.3f} ms p50")
    lines += ["", "Accounting check after the run (sidecar /stats totals):", ""] + [f"- {c}" for c in checks]
    lines += ["", "TTFB p50 per round (ms), to judge drift and noise:", "",
              "| round | " + " | ".join(LABEL[k] for k, *_ in MODES) + " |", "|---|" + "---:|" * len(MODES)]
    for i in range(meta["rounds"]):
        lines.append(f"| {i + 1} | " + " | ".join(f"{per_round[k][i]:.3f}" for k, *_ in MODES) + " |")
    return "\n".join(lines) + "\n", all_met


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if harness.envoy_bin() is None:
        print("envoy not found: run `make deps`", file=sys.stderr)
        return 1
    wasm = harness.wasm_filter()
    if wasm is None:
        print("wasm filter not built: run `make wasm`", file=sys.stderr)
        return 1
    print(f"llmsoup: {harness.llmsoup_bin()}", flush=True)
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])

    stacks: dict[str, TtfbStack] = {}
    clients: dict[str, Client] = {}
    failed = False
    samples: dict[str, list[tuple[float, float, float]]] = {k: [] for k, *_ in MODES}
    per_round: dict[str, list[float]] = {k: [] for k, *_ in MODES}
    checks: list[str] = []
    try:
        for key, label, base, accounting in MODES:
            stack = TtfbStack(key, base, accounting)
            stacks[key] = stack
            stack.start()
            gateway.sanity_check(stack)
            clients[key] = Client(stack)
            for _ in range(WARMUP):
                clients[key].one()
            print(f"started {label} on {stack.url} (logs in {stack.dir})", flush=True)
        # Sanity and warm-up requests must be accounted (wasm reports lag) before the baseline.
        baseline = {k: settled_totals(s, len(gateway.PROMPTS) + WARMUP) for k, s in stacks.items() if k != "bare"}

        per = max(1, REQUESTS // ROUNDS)
        started = time.monotonic()
        rounds = 0
        for i in range(ROUNDS):
            if time.monotonic() - started > BUDGET_S:
                print(f"time budget of {BUDGET_S:.0f} s spent: stopping after {rounds} rounds", flush=True)
                break
            order = MODES[i % len(MODES):] + MODES[:i % len(MODES)]
            for key, *_ in order:
                got = [clients[key].one() for _ in range(per)]
                samples[key] += got
                per_round[key].append(statistics.median(b for _, b, _ in got))
            rounds += 1
            print(f"[round {rounds}/{ROUNDS}] TTFB p50 ms: "
                  + "  ".join(f"{k} {per_round[k][-1]:.3f}" for k, *_ in MODES), flush=True)

        sent = per * rounds
        for key, s in stacks.items():
            if key == "bare":
                continue
            t = settled_totals(s, baseline[key]["requests"] + sent)
            d = {f: t[f] - baseline[key][f] for f in ("requests", "prompt_tokens", "completion_tokens")}
            want = (sent * PROMPT_TOKENS, sent * COMPLETION_TOKENS) if s.accounting else (0, 0)
            ok = d["requests"] == sent and (d["prompt_tokens"], d["completion_tokens"]) == want
            checks.append(f"{'✅' if ok else '❌'} {LABEL[key]}: {d['requests']} requests (sent {sent}), "
                          f"{d['prompt_tokens']} prompt / {d['completion_tokens']} completion tokens "
                          f"(expected {want[0]} / {want[1]})")
    except BaseException:
        failed = True
        raise
    finally:
        for c in clients.values():
            c.close()
        for stack in stacks.values():
            stack.stop()
            if KEEP or failed:
                print(f"kept {stack.dir}", file=sys.stderr)
            else:
                shutil.rmtree(stack.dir, ignore_errors=True)

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": gateway.cpu_model(),
        "envoy": gateway.envoy_version(),
        "bin": os.path.relpath(harness.llmsoup_bin(), ROOT),
        "wasm": os.path.relpath(wasm, ROOT),
        "rounds": rounds,
        "load_before": load_before,
        "load_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    text, all_met = report(samples, per_round, checks, meta)
    RESULTS.write_text(text)
    print()
    print(text)
    print(f"written to {os.path.relpath(RESULTS, Path.cwd())}")
    print("target met" if all_met else "target MISSED (see above); benchmarks report, they do not gate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
