"""End-to-end harness: real Envoy + the real llmsoup sidecar + the llmsoup mock upstream, on free
127.0.0.1 ports. Each Stack owns its processes and a temp dir with their logs.

Envoy reaches the sidecar over loopback TCP, or over a Unix domain socket in the stack's temp dir
with `Stack(transport="uds")`; LLMSOUP_E2E_TRANSPORT=uds makes that the default, which runs any
e2e file over the socket (`make test-e2e-uds`). The configs say `grpc_listen: ${E2E_GRPC_LISTEN}`."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG_TEMPLATE = Path(__file__).with_name("llmsoup-e2e.yaml")
CLIENT_TOKEN = "e2e-client-token"
BETA_PROVIDER_KEY = "sk-beta-provider-key"
# The sidecar's gRPC secret (server.grpc_token); Envoy and the wasm filter send it.
GRPC_TOKEN = "e2e-grpc-token-0123456789"


_HANDED_OUT: set[int] = set()
# Its own generator: a test seeding `random` must not make two stacks draw the same ports.
_PORTS_RNG = random.Random()


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands out as a connection's source port."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free 127.0.0.1 port below the kernel's ephemeral range. A port the kernel hands out for
    `bind(0)` is an ephemeral port: between this check and the process binding it, an outgoing
    connection (Envoy to a mock, a client to Envoy) may take it as its source port, and Envoy
    then fails with "Address already in use". Below the range only listeners compete."""
    lo = _ephemeral_floor()
    if lo > 12000:
        for _ in range(200):
            port = _PORTS_RNG.randrange(10000, lo)
            if port in _HANDED_OUT:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llmsoup_bin() -> Path:
    path = Path(os.environ.get("LLMSOUP_BIN", ROOT / "target" / "debug" / "llmsoup"))
    if not path.exists():
        raise RuntimeError(f"llmsoup binary not found at {path}; run `make build`")
    return path


def wasm_filter() -> Path | None:
    path = Path(os.environ.get("LLMSOUP_WASM",
                               ROOT / "target" / "wasm" / "wasm32-unknown-unknown" / "wasm" / "llmsoup_filter.wasm"))
    return path if path.exists() else None


def envoy_bin() -> Path | None:
    env = os.environ.get("ENVOY_BIN")
    candidates = [Path(env)] if env else [ROOT / ".cache" / "venv" / "bin" / "envoy"]
    found = shutil.which("envoy")
    if found and not env:
        candidates.append(Path(found))
    for c in candidates:
        if c.exists():
            return c
    return None


def wait_for(predicate, what: str, timeout: float = 15.0, logs: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, requests.RequestException):
            pass
        time.sleep(0.05)
    detail = ""
    if logs is not None:
        for f in sorted(logs.glob("*.log")):
            detail += f"\n--- {f.name} ---\n" + f.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{what} did not become ready in {timeout}s{detail}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def unix_socket_open(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(0.2)
        return s.connect_ex(str(path)) == 0


# How Envoy reaches the sidecar: loopback TCP, or a Unix domain socket (`server.grpc_listen: unix:`).
TRANSPORTS = ("tcp", "uds")


class Stack:
    """One gateway: mock upstreams (alpha, beta), the sidecar and Envoy."""

    def __init__(self, mode: str = "ext_proc", failure_mode: str = "open", max_body_bytes: int = 1 << 20,
                 tls: bool = False, xds: bool = True, transport: str | None = None):
        self.mode = mode
        self.transport = transport or os.environ.get("LLMSOUP_E2E_TRANSPORT", "tcp")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport {self.transport!r} is not one of {TRANSPORTS}")
        self.dir = Path(tempfile.mkdtemp(prefix=f"llmsoup-e2e-{mode}-"))
        # Short enough for sun_path (107 bytes): the temp dir is /tmp/llmsoup-e2e-<mode>-<8 chars>.
        self.socket = self.dir / "grpc.sock"
        # Envoy's routes, clusters, credentials and token/model filter configs come from files
        # here, rewritten by the sidecar on reload (`--xds-dir`); None renders them inline.
        self.xds_dir = self.dir / "xds" if xds else None
        self.ports = {k: free_port() for k in ("listen", "admin", "grpc", "alpha", "beta", "metrics")}
        # An HTTPS mock listener ("secure") with a fresh self-signed certificate for `localhost`,
        # which is also the gateway's CA bundle (E2E_CA_BUNDLE).
        self.tls = tls
        if tls:
            self.ports["secure"] = free_port()
        self.env = dict(os.environ)
        self.env.update(
            E2E_LISTEN_PORT=str(self.ports["listen"]),
            E2E_ADMIN_PORT=str(self.ports["admin"]),
            E2E_GRPC_PORT=str(self.ports["grpc"]),
            E2E_GRPC_LISTEN=self.grpc_listen,
            E2E_METRICS_PORT=str(self.ports["metrics"]),
            E2E_DECISION_LOG=str(self.dir / "decisions.jsonl"),
            E2E_ALPHA_PORT=str(self.ports["alpha"]),
            E2E_BETA_PORT=str(self.ports["beta"]),
            E2E_MODE=mode,
            E2E_FAILURE_MODE=failure_mode,
            E2E_MAX_BODY=str(max_body_bytes),
            E2E_TOKEN_SHA256=hashlib.sha256(CLIENT_TOKEN.encode()).hexdigest(),
            E2E_GRPC_TOKEN=GRPC_TOKEN,
            E2E_MODEL_DIR=os.environ.get("LLMSOUP_MODEL_DIR", str(ROOT / ".cache" / "models" / "all-MiniLM-L6-v2")),
            # Every routing decision must be the same on every precision path (`auto`, `f32`, ...).
            E2E_PRECISION=os.environ.get("LLMSOUP_E2E_PRECISION", "auto"),
            # Read by Envoy (credential injector), never by llmsoup.
            LLMSOUP_E2E_BETA_KEY=BETA_PROVIDER_KEY,
            LLMSOUP_LOG="info,llmsoup=debug",
        )
        if tls:
            self.env.update(E2E_SECURE_PORT=str(self.ports["secure"]), E2E_CA_BUNDLE=str(self._certificate()))
        self.config = self.dir / "llmsoup.yaml"
        shutil.copy(CONFIG_TEMPLATE, self.config)
        self.procs: dict[str, subprocess.Popen] = {}
        self.url = f"http://127.0.0.1:{self.ports['listen']}"

    @property
    def grpc_listen(self) -> str:
        """`server.grpc_listen` (and what Envoy's sidecar cluster dials)."""
        return f"unix:{self.socket}" if self.transport == "uds" else f"127.0.0.1:{self.ports['grpc']}"

    @property
    def grpc_target(self) -> str:
        """The sidecar's gRPC address as a gRPC client names it."""
        return self.grpc_listen

    def sidecar_listening(self) -> bool:
        if self.transport == "uds":
            return unix_socket_open(self.socket)
        return port_open(self.ports["grpc"])

    def _certificate(self) -> Path:
        """A self-signed P-256 certificate for DNS:localhost (key next to it); its path."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("openssl not found: the HTTPS provider tests need it (apt-get install openssl)")
        cert, key = self.dir / "provider-cert.pem", self.dir / "provider-key.pem"
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
        return cert

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.dir)
        self.procs[name] = p
        return p

    def start(self) -> "Stack":
        """Starts the mock, the sidecar and Envoy; if any of them fails to come up, stops the
        others before raising (a fixture whose setup raises never reaches its teardown, and an
        orphaned sidecar would keep its ports and answer a later stack's requests)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> "Stack":
        envoy = envoy_bin()
        if envoy is None:
            raise RuntimeError("envoy binary not found; run `make deps`")
        bin_ = str(llmsoup_bin())
        envoy_yaml = self.dir / "envoy.yaml"
        render = [bin_, "envoy-config", "--config", str(self.config), "--output", str(envoy_yaml)]
        if self.xds_dir is not None:
            render += ["--xds-dir", str(self.xds_dir)]
        if self.mode == "wasm":
            wasm = wasm_filter()
            if wasm is None:
                raise RuntimeError("wasm filter not built; run `make wasm`")
            render += ["--mode", "wasm", "--wasm", str(wasm)]
        subprocess.run(render, check=True, env=self.env)
        mock = [bin_, "mock-upstream", "--listen", f"127.0.0.1:{self.ports['alpha']}",
                "--listen", f"127.0.0.1:{self.ports['beta']}", "--name", "mock"]
        if self.tls:
            mock += ["--tls-listen", f"127.0.0.1:{self.ports['secure']}", "--tls-cert", self.env["E2E_CA_BUNDLE"],
                     "--tls-key", str(self.dir / "provider-key.pem")]
        self._spawn("mock", mock)
        self.start_sidecar()
        self._spawn(
            "envoy",
            [str(envoy), "-c", str(envoy_yaml), "--base-id", str(random.randint(1000, 60000)),
             "--concurrency", "2", "-l", "warning"],
        )
        for name in ("alpha", "beta") + (("secure",) if self.tls else ()):
            wait_for(lambda n=name: port_open(self.ports[n]), f"mock upstream {name}", logs=self.dir)
        admin = f"http://127.0.0.1:{self.ports['admin']}/ready"
        wait_for(lambda: requests.get(admin, timeout=1).status_code == 200, "envoy", logs=self.dir)
        if "sidecar" in self.procs:  # the benchmark's bare-Envoy stack runs none
            self.wait_sidecar_healthy()
        return self

    def start_sidecar(self):
        args = [str(llmsoup_bin()), "serve", "--config", str(self.config)]
        if self.xds_dir is not None:
            args += ["--xds-dir", str(self.xds_dir)]
        self._spawn("sidecar", args)
        wait_for(self.sidecar_listening, f"llmsoup sidecar ({self.grpc_listen})", logs=self.dir)

    def reload(self, timeout: float = 10.0) -> str:
        """SIGHUP: the sidecar reloads its config file (and rewrites Envoy's xDS files). Returns
        the sidecar's log from this reload on, once it says how the reload went."""
        path = self.dir / "sidecar.log"
        before = path.stat().st_size
        self.procs["sidecar"].send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(path, "rb") as f:
                f.seek(before)
                tail = f.read().decode(errors="replace")
            if "configuration reloaded" in tail or "reload refused" in tail:
                return tail
            time.sleep(0.05)
        raise AssertionError(f"no reload in sidecar.log:\n{self.log('sidecar')[-3000:]}")

    def envoy_config_text(self) -> str:
        """The whole Envoy configuration as rendered: the bootstrap and every xDS file."""
        text = (self.dir / "envoy.yaml").read_text()
        if self.xds_dir is not None:
            for f in sorted(self.xds_dir.glob("*.yaml")):
                text += f"\n# --- {f.name}\n" + f.read_text()
        return text

    def http_filters(self) -> dict:
        """The listener's HTTP filters by name, each with its typed_config (read from its ECDS
        file when the filter is discovered)."""
        doc = yaml.safe_load((self.dir / "envoy.yaml").read_text())
        hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        out = {}
        for f in hcm["http_filters"]:
            if "config_discovery" in f:
                path = f["config_discovery"]["config_source"]["path_config_source"]["path"]
                f = yaml.safe_load(Path(path).read_text())["resources"][0]
            out[f["name"]] = f["typed_config"]
        return out

    def sidecar_healthy(self) -> bool:
        """Whether Envoy's active health check currently takes the sidecar in. Until it does,
        Envoy fails the sidecar calls at once (the circuit breaker), so requests fail open."""
        clusters = requests.get(f"http://127.0.0.1:{self.ports['admin']}/clusters", timeout=1).text
        flags = [line.rsplit("::", 1)[1] for line in clusters.splitlines()
                 if line.startswith("llmsoup_sidecar::") and "::health_flags::" in line]
        return flags == ["healthy"]

    def wait_sidecar_healthy(self, timeout: float = 15.0):
        # A first health check that times out on a loaded machine leaves the sidecar out until
        # the next one passes: wait for it rather than let the first requests fail open.
        wait_for(self.sidecar_healthy, "envoy to see the sidecar healthy", timeout=timeout, logs=self.dir)

    def metrics(self, token: str | None = CLIENT_TOKEN) -> requests.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return requests.get(f"http://127.0.0.1:{self.ports['metrics']}/metrics", headers=headers, timeout=10)

    def kill_sidecar(self):
        p = self.procs.pop("sidecar")
        p.kill()
        p.wait(timeout=5)

    def wait_log(self, name: str, needle: str, timeout: float = 5.0) -> str:
        """Waits for a log line containing `needle`; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log(name).splitlines():
                if needle in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no line with {needle!r} in {name}.log:\n{self.log(name)[-3000:]}")

    def log(self, name: str) -> str:
        return (self.dir / f"{name}.log").read_text(errors="replace")

    def stop(self):
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()

    # --- client helpers -------------------------------------------------------------------

    def headers(self, token: str | None = CLIENT_TOKEN, **extra) -> dict:
        h = {"content-type": "application/json"}
        if token is not None:
            h["authorization"] = f"Bearer {token}"
        h.update(extra)
        return h

    def chat(self, prompt: str, model: str = "auto", token: str | None = CLIENT_TOKEN, headers: dict | None = None,
             **body) -> requests.Response:
        payload = {"model": model, "messages": [{"role": "user", "content": prompt}], **body}
        return requests.post(f"{self.url}/v1/chat/completions", json=payload,
                             headers=self.headers(token, **(headers or {})), timeout=30)
