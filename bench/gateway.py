#!/usr/bin/env python3
"""`make bench`: requests/s and p50/p99 latency at concurrency 16 for three gateways built from
the same config (bench/bench-config.yaml, keyword rules only, no auth), measured in the same run:

  bare      Envoy -> mock upstream: the ext_proc bootstrap with the ext_proc and Lua filters
            removed and the first model route opened to every request, so each one goes straight
            to the mock;
  ext_proc  Envoy's ext_proc filter + the llmsoup sidecar;
  wasm      the proxy-wasm filter + the sidecar's Router gRPC service;
and variants of the routed modes (a suffix of the key, combinable: `ext_proc+uds+noacct`):
  +fallback a fallback chain on every routed model (no failures: the happy path's cost);
  +uds      Envoy reaches the sidecar over a Unix domain socket (`server.grpc_listen: unix:/...`)
            instead of loopback TCP;
  +noacct   `gateway.response_accounting: false` (no response body reaches the sidecar);
  +remote   wasm only: `gateway.local_routing: off`, so the filter makes the Route call for every
            request (the bench config is one it otherwise routes itself);
  +1x       ext_proc only, a diagnostic floor, not a working gateway: Envoy sends the sidecar the
            request headers and nothing else (no body, no response), the fail-open Lua step is
            removed, and the first model route takes every request as in `bare` — what one
            ext_proc stream with one exchange costs;
  +base     the same stack from another llmsoup build (BENCH_BASELINE_BIN: renders the Envoy
            config, runs the sidecar and the mock), to measure a change against the build before
            it in the same run (BENCH_BASELINE_LABEL names it in the report).

The stacks (mock upstream + sidecar + Envoy on free 127.0.0.1 ports) come from the end-to-end
harness (tests/e2e/harness.py). The load tool is wrk (installed from Debian when missing; oha is
used instead when wrk cannot be installed and oha is on PATH). Results are printed and written to
bench/results.md. Benchmarks report, they do not gate: the exit status is 0 whether or not the
targets are met (non-zero only when the benchmark itself could not run).

Environment: LLMSOUP_BIN (the harness default is the debug build; `make bench` passes the release
one), LLMSOUP_WASM, ENVOY_BIN, BENCH_DURATION (s, default 10), BENCH_WARMUP (s, default 2),
BENCH_ROUNDS (default 1; >1 interleaves the modes and reports the per-mode median),
BENCH_SIDECAR_LOG (sidecar log filter, default `info` = the production default), BENCH_KEEP=1
(keep the stacks' temp dirs and logs), BENCH_TARGETS (comma-separated keys to run instead of the
default five, e.g. `ext_proc,ext_proc+uds`; bare Envoy always runs, as the baseline),
BENCH_CLIENT_HEADERS (`sdk`: send the headers the openai Python SDK sends, not just a
content-type), BENCH_BASELINE_BIN / BENCH_BASELINE_WASM / BENCH_BASELINE_LABEL (the `+base` variant's build,
its wasm filter and its name), BENCH_RESULTS (the results file; default bench/results.md at c=16, bench/results-c<N>.md else).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import requests
import yaml

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import harness  # noqa: E402  (tests/e2e/harness.py: Stack, envoy_bin, wasm_filter, llmsoup_bin)

CONFIG = BENCH_DIR / "bench-config.yaml"

CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
# c=16 (the default) writes results.md; any other concurrency its own file (results-c1.md, ...).
RESULTS = Path(os.environ.get("BENCH_RESULTS")
               or BENCH_DIR / ("results.md" if CONCURRENCY == 16 else f"results-c{CONCURRENCY}.md"))
THREADS = min(2, CONCURRENCY)
DURATION_S = int(os.environ.get("BENCH_DURATION", "10"))
WARMUP_S = int(os.environ.get("BENCH_WARMUP", "2"))
ROUNDS = max(1, int(os.environ.get("BENCH_ROUNDS", "1")))
SIDECAR_LOG = os.environ.get("BENCH_SIDECAR_LOG", "info")
KEEP = os.environ.get("BENCH_KEEP") == "1"

# Targets from the issue: each mode adds <= 0.3 ms p50 and <= 1 ms p99 over bare Envoy, and keeps
# >= 80% of its requests/s.
MAX_ADDED_P50_MS = 0.3
MAX_ADDED_P99_MS = 1.0
MIN_RPS_RATIO = 0.80

PATH = "/v1/chat/completions"
# (prompt, model picked by the keyword rules, that model's provider id). Every prompt hits a rule;
# the load tool cycles through them.
PROMPTS = [
    ("Please refactor this Python function so it handles empty lists", "coder", "coder-v2"),
    ("Write a haiku about autumn leaves falling on a quiet river", "writer", "writer-v1"),
]
TARGETS = [
    ("bare", "bare Envoy → mock"),
    ("ext_proc", "ext_proc"),
    ("wasm", "wasm"),
    # The same, with a fallback chain on every routed model (no failures): the happy-path cost of
    # the chain route, its retry policy and the per-attempt upstream filters.
    ("ext_proc+fallback", "ext_proc + fallback chain"),
    ("wasm+fallback", "wasm + fallback chain"),
]
# Variants that run only when BENCH_TARGETS names them (`make bench` compares transports in a
# step of its own, interleaved over several rounds).
VARIANTS = {
    "uds": "Unix socket",
    # `gateway.response_accounting: false`: no response body to the sidecar (ext_proc: one
    # exchange fewer per JSON response; wasm: chunks not copied into the VM) — what the
    # response-side exchanges cost, i.e. the most that trimming them can save.
    "noacct": "no response accounting",
    # wasm with `gateway.local_routing: off`: the Route call on every request even though the
    # bench config is one the filter could route itself (what local routing saves).
    "remote": "Route call per request (local routing off)",
    # ext_proc with the request-headers exchange alone (no routing): the floor of any ext_proc
    # design, since Envoy opens one gRPC stream per request whatever it sends on it.
    "1x": "request headers only (diagnostic floor, no routing)",
    # Another build of llmsoup (BENCH_BASELINE_BIN), e.g. the commit before a change.
    "base": os.environ.get("BENCH_BASELINE_LABEL", "baseline build"),
}
BASELINE_BIN = os.environ.get("BENCH_BASELINE_BIN")
# The `+base` variant's wasm filter (default: the same filter as the other stacks).
BASELINE_WASM = os.environ.get("BENCH_BASELINE_WASM")


def target_label(key: str) -> str:
    base, *variants = key.split("+")
    labels = dict(TARGETS)
    if key in labels:
        return labels[key]
    if base == "bare" and variants and set(variants) <= {"fallback", "base"}:
        # Envoy alone (no sidecar): what the chain's route and upstream filters cost Envoy.
        return ", ".join(["bare Envoy → mock"] + [VARIANTS.get(v, "fallback chain") for v in variants])
    if base not in ("ext_proc", "wasm") or any(v not in VARIANTS and v != "fallback" for v in variants):
        raise SystemExit(f"BENCH_TARGETS: unknown target {key!r}: bare, ext_proc or wasm, then any of "
                         f"+{', +'.join(['fallback', *VARIANTS])}")
    return ", ".join([base] + [VARIANTS.get(v, "fallback chain") for v in variants])


if os.environ.get("BENCH_TARGETS"):
    _keys = [k.strip() for k in os.environ["BENCH_TARGETS"].split(",") if k.strip() and k.strip() != "bare"]
    TARGETS = [("bare", "bare Envoy → mock")] + [(k, target_label(k)) for k in dict.fromkeys(_keys)]
# Fallbacks for the `+fallback` targets: every routed model fails over to the other provider.
FALLBACKS = {"coder": "small", "writer": "coder"}
# Filters that make the routed modes; removed from the bare bootstrap.
ACCOUNTING_FILTER = "llmsoup.response_accounting"
ROUTING_FILTERS = {"envoy.filters.http.ext_proc", "envoy.filters.http.lua", "envoy.filters.http.wasm",
                   ACCOUNTING_FILTER}


def body(prompt: str) -> str:
    return json.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}]}, separators=(",", ":"))


class BenchStack(harness.Stack):
    """A harness Stack on the bench config. `bare` renders the ext_proc bootstrap, strips the
    routing filters from it and runs no sidecar."""

    def __init__(self, target: str):
        variants = set(target.split("+")[1:])
        # Everything inline (no xDS files): `bare` edits the bootstrap's route table, and the
        # data path is the same either way.
        super().__init__(mode="wasm" if target.startswith("wasm") else "ext_proc", xds=False,
                         transport="uds" if "uds" in variants else "tcp")
        self.target = target
        self.variants = variants
        # `bare+fallback`: the bare gateway on the fallback config, every request through the
        # first chain route (its aggregate cluster's upstream filters, no sidecar).
        self.bare = target.split("+")[0] == "bare"
        if "1x" in variants and target.split("+")[0] != "ext_proc":
            raise SystemExit(f"BENCH_TARGETS: {target!r}: +1x is an ext_proc variant")
        shutil.copy(CONFIG, self.config)  # replaces the e2e template the harness copied
        if "fallback" in variants:
            text = self.config.read_text()
            for model, fallback in FALLBACKS.items():
                text = re.sub(rf"(\{{name: {model}, [^}}]*)\}}", rf"\1, fallbacks: [{fallback}]}}", text, count=1)
            self.config.write_text(text)
        if "remote" in variants:
            if target.split("+")[0] != "wasm":
                raise SystemExit(f"BENCH_TARGETS: {target!r}: +remote is a wasm variant")
            text = self.config.read_text()
            self.config.write_text(text.replace("\ngateway:\n", "\ngateway:\n  local_routing: off\n", 1))
        if "noacct" in variants:
            text = self.config.read_text()
            self.config.write_text(text.replace("\ngateway:\n", "\ngateway:\n  response_accounting: false\n", 1))
        self.env["LLMSOUP_LOG"] = SIDECAR_LOG
        self.envoy_concurrency = "?"
        if "base" in variants and not BASELINE_BIN:
            raise SystemExit(f"BENCH_TARGETS: {target!r} needs BENCH_BASELINE_BIN (another llmsoup build)")

    def start(self):
        if "base" not in self.variants:
            return super().start()
        # The harness calls llmsoup_bin() for the render, the mock and the sidecar.
        own, own_wasm = harness.llmsoup_bin, harness.wasm_filter
        harness.llmsoup_bin = lambda: Path(BASELINE_BIN)
        if BASELINE_WASM:
            harness.wasm_filter = lambda: Path(BASELINE_WASM)
        try:
            return super().start()
        finally:
            harness.llmsoup_bin, harness.wasm_filter = own, own_wasm

    def start_sidecar(self):
        if not self.bare:
            super().start_sidecar()

    def _spawn(self, name, args):
        if name == "envoy":
            if "--concurrency" in args:
                self.envoy_concurrency = args[args.index("--concurrency") + 1]
            if self.bare:
                strip_routing_filters(self.dir / "envoy.yaml")
            if "1x" in self.variants:
                headers_exchange_only(self.dir / "envoy.yaml")
        return super()._spawn(name, args)


def open_first_model_route(hcm: dict):
    """Nothing sets the routing header: let the first model route take every request (the
    rendered table has no route to a provider without it)."""
    for vhost in hcm["route_config"]["virtual_hosts"]:
        first = next(r for r in vhost["routes"] if "route" in r)
        first["match"].pop("headers", None)


def headers_exchange_only(path: Path):
    """`+1x`: the ext_proc filter sends the request headers and nothing else."""
    doc = yaml.safe_load(path.read_text())
    found = False
    for listener in doc["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                hcm = f.get("typed_config", {})
                # The fail-open Lua step would route the unrouted request itself (it rewrites the
                # body to the default model): not part of the exchange being measured.
                if "http_filters" in hcm:
                    hcm["http_filters"] = [h for h in hcm["http_filters"] if h["name"] != "envoy.filters.http.lua"]
                for h in hcm.get("http_filters", []):
                    if h["name"] == "envoy.filters.http.ext_proc":
                        h["typed_config"]["processing_mode"] = {
                            "request_header_mode": "SEND", "request_body_mode": "NONE",
                            "request_trailer_mode": "SKIP", "response_header_mode": "SKIP",
                            "response_body_mode": "NONE", "response_trailer_mode": "SKIP"}
                        found = True
                if "route_config" in hcm:
                    open_first_model_route(hcm)
    if not found:
        raise RuntimeError(f"no ext_proc filter in {path}")
    path.write_text("# bench +1x: ext_proc sends the request headers only\n"
                    + yaml.safe_dump(doc, sort_keys=False))


def strip_routing_filters(path: Path):
    doc = yaml.safe_load(path.read_text())
    removed = []
    for listener in doc["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                hcm = f.get("typed_config", {})
                if "http_filters" in hcm:
                    removed += [h["name"] for h in hcm["http_filters"] if h["name"] in ROUTING_FILTERS]
                    hcm["http_filters"] = [h for h in hcm["http_filters"] if h["name"] not in ROUTING_FILTERS]
                    open_first_model_route(hcm)
    if set(removed) - {ACCOUNTING_FILTER} != {"envoy.filters.http.ext_proc", "envoy.filters.http.lua"}:
        raise RuntimeError(f"expected to strip the ext_proc and lua filters from {path}, stripped {removed}")
    path.write_text("# bench: ext_proc bootstrap without the ext_proc and lua filters\n"
                    + yaml.safe_dump(doc, sort_keys=False))


def sanity_check(stack: BenchStack):
    """One request per prompt before the load: the bare gateway must reach the mock untouched, the
    routed ones must apply the keyword rules."""
    for prompt, model, provider_id in PROMPTS:
        r = requests.post(stack.url + PATH, data=body(prompt), headers={"content-type": "application/json"},
                          timeout=10)
        if r.status_code != 200:
            raise RuntimeError(f"{stack.target}: {r.status_code} {r.text[:300]}")
        got_model = r.json()["mock"]["body"]["model"]
        if "1x" in stack.variants:
            # Not routed by the sidecar: whatever the opened first model route sends (its own
            # per-route rewrite may name its model) is what this floor measures.
            ok = True
        elif stack.bare:
            ok = got_model == "auto" and "x-llmsoup-model" not in r.headers
            if "fallback" in stack.variants:
                ok &= bool(r.headers.get("x-llmsoup-attempts"))
        else:
            ok = got_model == provider_id and r.headers.get("x-llmsoup-model") == model
            if "fallback" in stack.variants:
                ok &= r.headers.get("x-llmsoup-attempts") == model
        if not ok:
            raise RuntimeError(f"{stack.target}: {prompt!r} reached the mock as {got_model!r} "
                               f"(x-llmsoup-model={r.headers.get('x-llmsoup-model')!r})")


# --- load tools --------------------------------------------------------------------------------

def ensure_load_tool() -> str:
    if shutil.which("wrk"):
        return "wrk"
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is not None and shutil.which("apt-get"):
        print("installing wrk (apt-get install wrk)...", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = sudo + ["apt-get", "install", "-y", "-qq", "wrk"]
        for cmd in (install, sudo + ["apt-get", "update", "-qq"], install):
            if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, timeout=600).returncode == 0 \
                    and shutil.which("wrk"):
                return "wrk"
    if shutil.which("oha"):
        print("wrk is not available; using oha", flush=True)
        return "oha"
    raise RuntimeError("no load tool: install wrk (apt-get install wrk) or oha")


def tool_version(tool: str) -> str:
    r = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
    first = ((r.stdout or r.stderr).strip().splitlines() or [tool])[0]
    return first.split(" [")[0].split(" Copyright")[0]


CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCS = ("envoy", "sidecar", "mock")


def cpu_seconds(stack: BenchStack) -> dict:
    """User + system CPU seconds so far of each process of the stack (all its threads)."""
    out = {}
    for name in PROCS:
        p = stack.procs.get(name)
        if p is None:
            continue
        fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[name] = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    return out


WRK_LUA = """-- generated by bench/gateway.py: POSTs the bench prompts in turn, reports raw numbers.
local bodies = {
%s
}
local headers = %s
local reqs = {}
local n = 0
function init(args)
  for i, b in ipairs(bodies) do
    reqs[i] = wrk.format("POST", "%s", headers, b)
  end
end
function request()
  n = n %% #reqs + 1
  return reqs[n]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%%.0f duration_us=%%.0f p50_us=%%.0f p99_us=%%.0f mean_us=%%.1f max_us=%%.0f " ..
    "connect=%%.0f read=%%.0f write=%%.0f status=%%.0f timeout=%%.0f\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# BENCH_CLIENT_HEADERS=sdk: the headers the official openai Python SDK sends with every call
# (what a real client puts on each request; the default is a bare content-type).
SDK_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate",
    "User-Agent": "OpenAI/Python 1.109.1",
    "Authorization": "Bearer sk-bench-0000000000000000000000000000000000000000",
    "X-Stainless-Lang": "python",
    "X-Stainless-Package-Version": "1.109.1",
    "X-Stainless-OS": "Linux",
    "X-Stainless-Arch": "x64",
    "X-Stainless-Runtime": "CPython",
    "X-Stainless-Runtime-Version": "3.11.2",
    "X-Stainless-Async": "false",
    "X-Stainless-Retry-Count": "0",
    "X-Stainless-Read-Timeout": "600",
}
CLIENT_HEADERS = os.environ.get("BENCH_CLIENT_HEADERS", "")
if CLIENT_HEADERS not in ("", "sdk"):
    raise SystemExit("BENCH_CLIENT_HEADERS: `sdk` or unset")


def write_wrk_script(path: Path):
    entries = ",\n".join(f"  [==[{body(p)}]==]" for p, _, _ in PROMPTS)
    headers = SDK_HEADERS if CLIENT_HEADERS == "sdk" else {"Content-Type": "application/json"}
    table = "{" + ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items()) + "}"
    path.write_text(WRK_LUA % (entries, table, PATH))


def run_wrk(url: str, script: Path, seconds: int) -> dict:
    cmd = ["wrk", "-t", str(THREADS), "-c", str(CONCURRENCY), "-d", f"{seconds}s", "--timeout", "5s",
           "--latency", "-s", str(script), url + PATH]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^BENCH (.*)$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    v = {k: float(x) for k, x in (kv.split("=") for kv in m.group(1).split())}
    return {
        "rps": v["requests"] / (v["duration_us"] / 1e6),
        "p50": v["p50_us"] / 1000,
        "p99": v["p99_us"] / 1000,
        "requests": int(v["requests"]),
        "errors": int(v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"]),
    }


def run_oha(url: str, seconds: int) -> dict:
    base = ["oha", "--no-tui", "-z", f"{seconds}s", "-c", str(CONCURRENCY), "-m", "POST",
            "-H", "content-type: application/json", "-d", body(PROMPTS[0][0]), url + PATH]
    for fmt in (["--output-format", "json"], ["-j"]):
        r = subprocess.run(base[:1] + fmt + base[1:], capture_output=True, text=True, timeout=seconds + 60)
        if r.returncode == 0:
            break
    else:
        raise RuntimeError(f"oha failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    out = json.loads(r.stdout)
    codes = {int(k): n for k, n in out.get("statusCodeDistribution", {}).items()}
    ok = sum(n for c, n in codes.items() if 200 <= c < 400)
    errors = sum(n for c, n in codes.items() if not 200 <= c < 400) + sum(out.get("errorDistribution", {}).values())
    return {
        "rps": out["summary"]["requestsPerSec"],
        "p50": out["latencyPercentiles"]["p50"] * 1000,
        "p99": out["latencyPercentiles"]["p99"] * 1000,
        "requests": ok + errors,
        "errors": errors,
    }


# --- report ------------------------------------------------------------------------------------

def envoy_version() -> str:
    r = subprocess.run([str(harness.envoy_bin()), "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"/(\d+\.\d+\.\d+)/", r.stdout)
    return m.group(1) if m else r.stdout.strip()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(results: dict, meta: dict) -> tuple[str, bool]:
    bare = results["bare"]
    lines = [
        "# llmsoup gateway benchmark",
        "",
        f"- date: {meta['date']}",
        f"- machine: {meta['nproc']} CPUs ({meta['cpu']}), {platform.system()} {platform.release()}; "
        "the load tool, Envoy, the sidecar and the mock share these CPUs; "
        f"load average before the run {meta['loadavg']}",
        f"- Envoy {meta['envoy']} with `--concurrency {meta['envoy_concurrency']}` for every mode",
        f"- load: {meta['tool']}, {meta['load']}",
        f"- config: bench/bench-config.yaml (keyword rules only, no auth); sidecar log `{SIDECAR_LOG}`",
        f"- wasm filter: {meta['wasm_path']}: **{meta['wasm_size']} bytes**",
        "",
        "| mode | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | % of bare req/s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    all_met = True
    for key, label in TARGETS:
        r = results[key]
        if key == "bare":
            lines.append(f"| {label} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | – | – | 100% "
                         f"| {r['errors']} |")
            continue
        d50, d99, ratio = r["p50"] - bare["p50"], r["p99"] - bare["p99"], r["rps"] / bare["rps"]
        lines.append(f"| {label} | {r['rps']:.0f} | {r['p50']:.3f} | {r['p99']:.3f} | {d50:+.3f} | {d99:+.3f} "
                     f"| {ratio:.0%} | {r['errors']} |")
        if key.startswith("bare+") or "1x" in key.split("+"):
            continue  # Envoy alone, or a diagnostic floor that does not route: no target applies
        checks = [
            (d50 <= MAX_ADDED_P50_MS, f"added p50 {d50:+.3f} ms (≤ {MAX_ADDED_P50_MS} ms)"),
            (d99 <= MAX_ADDED_P99_MS, f"added p99 {d99:+.3f} ms (≤ {MAX_ADDED_P99_MS} ms)"),
            (ratio >= MIN_RPS_RATIO, f"req/s {ratio:.0%} of bare (≥ {MIN_RPS_RATIO:.0%})"),
            (r["errors"] == 0, f"{r['errors']} errors (0)"),
        ]
        met = all(ok for ok, _ in checks)
        all_met &= met
        verdicts.append(f"- **{label}: {'MET' if met else 'MISSED'}** — "
                        + "; ".join(f"{'✅' if ok else '❌'} {text}" for ok, text in checks))
    if bare["errors"]:
        verdicts.append(f"- ⚠️ the bare gateway had {bare['errors']} errors: the baseline is suspect")
    lines += ["", "Targets (each mode vs bare Envoy):", ""] + verdicts
    lines += ["", "CPU time per request (µs, user + system, all threads; from /proc during the measured "
              "run; the load tool's own CPU is not counted):", "",
              "| mode | " + " | ".join(PROCS) + " | total |", "|---|" + "---:|" * (len(PROCS) + 1)]
    for key, label in TARGETS:
        cpu = results[key]["cpu_us"]
        lines.append(f"| {label} | " + " | ".join(f"{cpu[n]:.0f}" if n in cpu else "–" for n in PROCS)
                     + f" | {sum(cpu.values()):.0f} |")
    lines += variant_ratios(meta["rounds"])
    if ROUNDS > 1:
        lines += ["", f"Median of {ROUNDS} interleaved rounds per mode. Per round:", "",
                  "| round | " + " | ".join(f"{label} req/s, p50, p99, CPU µs/req Envoy/sidecar"
                                            for _, label in TARGETS) + " |",
                  "|---|" + "---|" * len(TARGETS)]
        for i in range(ROUNDS):
            cells = [f"{r['rps']:.0f}, {r['p50']:.3f}, {r['p99']:.3f}, "
                     f"{r['cpu_us'].get('envoy', 0):.0f}/{r['cpu_us'].get('sidecar', 0):.0f}"
                     for r in (meta["rounds"][key][i] for key, _ in TARGETS)]
            lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", all_met


def variant_ratios(rounds: dict) -> list[str]:
    """Each variant against the same mode without it (`ext_proc+uds` against `ext_proc`), as the
    median of per-round ratios: the two ran back to back in every round, so load that other
    processes put on the machine hits both alike."""
    keys = [k for k, _ in TARGETS]
    pairs = []
    for key in keys:
        parts = key.split("+")
        for v in parts[1:]:
            base = "+".join(p for p in parts if p != v)
            if base in keys:
                pairs.append((key, base, v))
    if not pairs:
        return []
    lines = ["", "Variants against the same mode without them (median of per-round ratios; < 1 is "
             "less for req/s, CPU and latency alike):", "",
             "| variant | against | req/s × | p50 × | p99 × | Envoy CPU/req × | sidecar CPU/req × | "
             "Envoy µs/req Δ | sidecar µs/req Δ |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, base, _ in pairs:
        a, b = rounds[key], rounds[base]
        med = lambda f: statistics.median(f(x, y) for x, y in zip(a, b))  # noqa: E731
        cpu = lambda x, n: x["cpu_us"].get(n, 0.0)  # noqa: E731
        lines.append(
            f"| {dict(TARGETS)[key]} | {dict(TARGETS)[base]} | {med(lambda x, y: x['rps'] / y['rps']):.3f} "
            f"| {med(lambda x, y: x['p50'] / y['p50']):.3f} | {med(lambda x, y: x['p99'] / y['p99']):.3f} "
            f"| {med(lambda x, y: cpu(x, 'envoy') / max(cpu(y, 'envoy'), 1e-9)):.3f} "
            f"| {med(lambda x, y: cpu(x, 'sidecar') / max(cpu(y, 'sidecar'), 1e-9)):.3f} "
            f"| {med(lambda x, y: cpu(x, 'envoy') - cpu(y, 'envoy')):+.1f} "
            f"| {med(lambda x, y: cpu(x, 'sidecar') - cpu(y, 'sidecar')):+.1f} |")
    return lines


# --- main --------------------------------------------------------------------------------------

def main() -> int:
    # Stop the stacks (finally below) on SIGTERM too, not only on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if harness.envoy_bin() is None:
        print("envoy not found: run `make deps`", file=sys.stderr)
        return 1
    wasm = harness.wasm_filter()
    if wasm is None:
        print("wasm filter not built: run `make wasm`", file=sys.stderr)
        return 1
    print(f"llmsoup: {harness.llmsoup_bin()}")
    tool = ensure_load_tool()
    loadavg = Path("/proc/loadavg").read_text().split()[:3]

    stacks: dict[str, BenchStack] = {}
    failed = False
    try:
        for key, label in TARGETS:
            stack = BenchStack(key)
            stacks[key] = stack
            stack.start()
            sanity_check(stack)
            print(f"started {label} on {stack.url} (logs in {stack.dir})", flush=True)
        script = next(iter(stacks.values())).dir / "bench.lua"
        write_wrk_script(script)

        def load(stack: BenchStack, seconds: int) -> dict:
            return run_wrk(stack.url, script, seconds) if tool == "wrk" else run_oha(stack.url, seconds)

        def measure(stack: BenchStack) -> dict:
            before = cpu_seconds(stack)
            r = load(stack, DURATION_S)
            after = cpu_seconds(stack)
            r["cpu_us"] = {n: (after[n] - before[n]) * 1e6 / max(r["requests"], 1) for n in before}
            return r

        rounds: dict[str, list[dict]] = {key: [] for key, _ in TARGETS}
        for i in range(ROUNDS):
            for key, label in TARGETS:
                if WARMUP_S > 0:
                    load(stacks[key], WARMUP_S)
                r = measure(stacks[key])
                rounds[key].append(r)
                print(f"[round {i + 1}/{ROUNDS}] {label:18} {r['rps']:8.0f} req/s  p50 {r['p50']:.3f} ms  "
                      f"p99 {r['p99']:.3f} ms  errors {r['errors']}", flush=True)
        results = {key: {m: statistics.median(r[m] for r in rs) for m in ("rps", "p50", "p99")}
                   | {"errors": sum(r["errors"] for r in rs),
                      "cpu_us": {n: statistics.median(r["cpu_us"][n] for r in rs) for n in rs[0]["cpu_us"]}}
                   for key, rs in rounds.items()}
        concurrency = {s.envoy_concurrency for s in stacks.values()}
    except BaseException:
        failed = True
        raise
    finally:
        for stack in stacks.values():
            stack.stop()
            if KEEP or failed:
                print(f"kept {stack.dir}", file=sys.stderr)
            else:
                shutil.rmtree(stack.dir, ignore_errors=True)

    if tool == "wrk":
        load_desc = (f"`wrk -t {THREADS} -c {CONCURRENCY} -d {DURATION_S}s --latency` (Lua: POST, "
                     f"{len(PROMPTS)} keyword prompts in turn"
                     + (f", the openai Python SDK's {len(SDK_HEADERS)} request headers" if CLIENT_HEADERS else "")
                     + f"), {WARMUP_S}s warm-up per mode")
    else:
        load_desc = f"`oha -c {CONCURRENCY} -z {DURATION_S}s` (one keyword prompt), {WARMUP_S}s warm-up per mode"
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "envoy": envoy_version(),
        "envoy_concurrency": ",".join(sorted(concurrency)),
        "tool": tool_version(tool),
        "load": load_desc,
        "wasm_path": os.path.relpath(wasm, ROOT),
        "wasm_size": wasm.stat().st_size,
        "rounds": rounds,
        "loadavg": " ".join(loadavg),
    }
    text, all_met = report(results, meta)
    RESULTS.write_text(text)
    print()
    print(text)
    print(f"written to {os.path.relpath(RESULTS, Path.cwd())}")
    print("all targets met" if all_met else "some targets MISSED (see above); benchmarks report, they do not gate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
