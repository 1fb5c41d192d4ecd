"""Envoy and a co-located sidecar over a Unix domain socket (`server.grpc_listen: unix:/path`), in
both attach modes through a real Envoy 1.40: Envoy's sidecar cluster is a `pipe` (ext_proc's gRPC
service, the wasm filter's Route/Report calls and the sidecar health check all use it), nothing
listens on TCP, and routing, client auth, streamed usage accounting, a fallback chain and a reload
work as over TCP. A sidecar killed with SIGKILL leaves its socket file behind: the next one
replaces it; a second sidecar never takes over a live socket; SIGTERM removes the file.

`make test-e2e-uds` runs whole e2e files over the socket too (LLMSOUP_E2E_TRANSPORT=uds)."""

import hashlib
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from conftest import MODES
from harness import BETA_PROVIDER_KEY, CLIENT_TOKEN, Stack, llmsoup_bin, port_open, unix_socket_open, wait_for

FALLBACK_CONFIG = Path(__file__).with_name("llmsoup-fallback.yaml")
NEW_TOKEN = "e2e-socket-reload-token"


@pytest.fixture(scope="module", params=MODES)
def uds_stack(request):
    s = Stack(mode=request.param, transport="uds").start()
    yield s
    s.stop()
    # SIGTERM: a clean stop leaves no socket file behind.
    assert not s.socket.exists()


def stats(s) -> dict:
    return requests.get(f"http://127.0.0.1:{s.ports['metrics']}/stats",
                        headers={"authorization": f"Bearer {CLIENT_TOKEN}"}, timeout=10).json()


def sidecar_cluster(s) -> dict:
    doc = yaml.safe_load((s.dir / "envoy.yaml").read_text())
    return next(c for c in doc["static_resources"]["clusters"] if c["name"] == "llmsoup_sidecar")


def test_envoy_reaches_the_sidecar_over_the_socket_only(uds_stack):
    s = uds_stack
    address = sidecar_cluster(s)["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address == {"pipe": {"path": str(s.socket)}}
    assert not port_open(s.ports["grpc"]), "the sidecar must not listen on TCP too"
    mode = os.stat(s.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    # Envoy's gRPC health check of the sidecar goes over the socket, and passes.
    assert s.sidecar_healthy()
    # Envoy's own view: the sidecar cluster's one host is the socket, and it carried the call.
    r = s.chat("Please refactor this Python function")
    assert r.status_code == 200 and r.headers["x-llmsoup-model"] == "coder", r.text
    clusters = requests.get(f"http://127.0.0.1:{s.ports['admin']}/clusters", timeout=5).text
    lines = [line for line in clusters.splitlines() if line.startswith(f"llmsoup_sidecar::{s.socket}::")]
    rq_total = [int(line.rsplit("::", 1)[1]) for line in lines if "::rq_total::" in line]
    assert rq_total and rq_total[0] > 0, lines


@pytest.mark.parametrize(
    "prompt, model, provider_id, decision",
    [
        ("Please refactor this Python function", "coder", "coder-v2", "coding"),
        ("Write a haiku about autumn leaves", "writer", "writer-v1", "poetry"),
        ("What is the capital of Australia?", "small", "small-v1", None),
        # An embedding signal: the model's first use over the socket.
        ("Can I get my money back for this purchase?", "support", "support-v1", "billing"),
    ],
)
def test_routes_over_the_socket(uds_stack, prompt, model, provider_id, decision):
    s = uds_stack
    r = s.chat(prompt)
    assert r.status_code == 200, r.text
    got = r.json()["mock"]
    assert got["body"]["model"] == provider_id
    assert r.headers["x-llmsoup-model"] == model
    assert r.headers.get("x-llmsoup-decision") == decision
    assert got["port"] == (s.ports["beta"] if model in ("coder", "support") else s.ports["alpha"])
    # The beta provider's key was injected by Envoy; the client's token never reaches a provider.
    if got["port"] == s.ports["beta"]:
        assert got["headers"]["authorization"] == f"Bearer {BETA_PROVIDER_KEY}"
    else:
        assert "authorization" not in got["headers"]


def test_client_auth_over_the_socket(uds_stack):
    s = uds_stack
    for token in (None, "not-a-real-token"):
        r = s.chat("Please refactor this Python function", token=token)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "invalid_api_key"
    # A client cannot pick the route either.
    r = s.chat("What is the capital of Australia?", headers={"x-llmsoup-model": "coder"})
    assert r.status_code == 200 and r.headers["x-llmsoup-model"] == "small"


def test_streamed_and_buffered_usage_is_accounted_over_the_socket(uds_stack):
    s = uds_stack
    # French prompts route to `french`, which no other test here uses: the wasm filter reports in
    # batches, so another test's late report cannot land in this count.
    prompt = "Bonjour, pouvez-vous m'aider à préparer un voyage à Lyon le mois prochain ?"
    before = stats(s)["by_model"].get("french", {})
    r = s.chat(prompt, headers={"x-mock-usage": "1000,500"})
    assert r.status_code == 200 and r.headers["x-llmsoup-model"] == "french"
    r = requests.post(
        f"{s.url}/v1/chat/completions",
        json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": prompt}]},
        headers=s.headers(**{"x-mock-chunks": "3", "x-mock-usage": "200,100"}),
        stream=True,
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-llmsoup-model"] == "french"
    events = [line for line in r.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]" and len(events) >= 4
    deadline = time.monotonic() + 5
    while True:
        after = stats(s)["by_model"].get("french", {})
        if after.get("requests", 0) - before.get("requests", 0) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert after["requests"] - before.get("requests", 0) == 2
    assert after["prompt_tokens"] - before.get("prompt_tokens", 0) == 1200
    assert after["completion_tokens"] - before.get("completion_tokens", 0) == 600


def test_a_reload_reaches_envoy_over_the_socket(uds_stack):
    s = uds_stack
    original = s.config.read_text()
    line = '    - {name: e2e, sha256: "${E2E_TOKEN_SHA256}"}\n'
    assert line in original
    new = f'    - {{name: socket-reload, sha256: "{hashlib.sha256(NEW_TOKEN.encode()).hexdigest()}"}}\n'
    try:
        assert s.chat("Please refactor this Python function", token=NEW_TOKEN).status_code == 401
        s.config.write_text(original.replace(line, line + new))
        assert "configuration reloaded" in s.reload()
        deadline = time.monotonic() + 5
        while (r := s.chat("Please refactor this Python function", token=NEW_TOKEN)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.headers["x-llmsoup-model"] == "coder"
        # The socket is the same file: a reload never rebinds it.
        assert unix_socket_open(s.socket) and s.sidecar_healthy()
    finally:
        s.config.write_text(original)
        assert "configuration reloaded" in s.reload()


@pytest.mark.parametrize("mode", MODES)
def test_a_fallback_chain_over_the_socket(mode):
    s = Stack(mode=mode, transport="uds")
    shutil.copy(FALLBACK_CONFIG, s.config)
    s.start()
    try:
        r = s.chat("hello", model="prim", headers={"x-mock-fail-for": "prim-v1=503"})
        assert r.status_code == 200, r.text
        got = r.json()["mock"]
        assert r.headers["x-llmsoup-model"] == "fb" and r.headers["x-llmsoup-attempts"] == "prim;503,fb"
        assert got["port"] == s.ports["beta"] and got["body"]["model"] == "fb-v1"
        assert got["headers"]["authorization"] == f"Bearer {BETA_PROVIDER_KEY}"
    finally:
        s.stop()


@pytest.mark.parametrize("mode", MODES)
def test_a_restarted_sidecar_replaces_its_stale_socket(mode):
    s = Stack(mode=mode, transport="uds").start()
    try:
        s.kill_sidecar()  # SIGKILL: the socket file stays behind, and nothing answers on it
        assert s.socket.exists() and not unix_socket_open(s.socket)
        # Envoy notices (the health check fails) and fails open meanwhile.
        wait_for(lambda: not s.sidecar_healthy(), "envoy to see the sidecar gone", logs=s.dir)
        r = s.chat("Please refactor this Python function")
        assert r.status_code == 200 and r.headers["x-llmsoup-decision"] == "fail-open"
        s.start_sidecar()
        assert "removing a stale gRPC socket" in s.log("sidecar")
        s.wait_sidecar_healthy()
        # Routing resumes (as over TCP, a request may still fail open while Envoy replaces its
        # connection to the killed sidecar).
        deadline = time.monotonic() + 10
        while (r := s.chat("Please refactor this Python function")).headers.get("x-llmsoup-model") != "coder":
            assert r.status_code == 200 and time.monotonic() < deadline, (r.status_code, dict(r.headers))
            time.sleep(0.2)
        assert r.json()["mock"]["body"]["model"] == "coder-v2"
        # A second sidecar on the same path is refused rather than stealing the live socket.
        second = s._spawn("sidecar2", [str(llmsoup_bin()), "serve", "--config", str(s.config)])
        assert second.wait(timeout=30) != 0
        s.procs.pop("sidecar2")
        assert "another process is serving" in s.log("sidecar2")
        assert unix_socket_open(s.socket)
        # (The refused start loaded the config and the model first: on a busy machine Envoy's
        # health check may have missed the live sidecar meanwhile.)
        s.wait_sidecar_healthy()
        r = s.chat("Please refactor this Python function")
        assert r.headers["x-llmsoup-model"] == "coder", (dict(r.headers), s.log("sidecar")[-3000:])
    finally:
        s.stop()
    assert not s.socket.exists(), "a sidecar stopped by SIGTERM removes its socket"


def test_a_regular_file_in_the_way_is_never_replaced(tmp_path):
    config = tmp_path / "llmsoup.yaml"
    path = tmp_path / "grpc.sock"
    path.write_text("not a socket")
    config.write_text(
        f"server: {{grpc_listen: 'unix:{path}', admin_listen: null}}\n"
        "providers: [{name: p, base_url: 'http://127.0.0.1:1/v1'}]\nmodels: [{name: m, provider: p}]\n"
    )
    done = subprocess.run([str(llmsoup_bin()), "serve", "--config", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "server.grpc_listen" in done.stderr + done.stdout and "is not a socket" in done.stderr + done.stdout
    assert path.read_text() == "not a socket"
