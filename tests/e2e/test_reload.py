"""Reload reaches Envoy, in both attach modes, through a real Envoy 1.40: the harness runs the
sidecar and Envoy with an xDS directory (`envoy-config --xds-dir`, `serve --xds-dir`), so a
SIGHUP that adds a provider, a model and a client token rewrites Envoy's route table (RDS),
clusters (CDS), the provider's credential (SDS) and the token-holding filter config (ECDS: the
client-auth Lua step in ext_proc mode, the wasm filter's plugin config in wasm mode). Evidence is
what the new provider's mock received (its port, credential and model id) and Envoy's own
counters; a reload under load fails no request.
"""

import concurrent.futures
import hashlib
import re
import subprocess
import threading
import time

import pytest
import requests

from conftest import MODES
from harness import CLIENT_TOKEN, Stack, free_port, llmsoup_bin, port_open, wait_for

NEW_TOKEN = "e2e-newbie-client-token"
NEW_PROVIDER_KEY = "sk-gamma-provider-key"
WRONG_BODY = {"error": {"message": "Incorrect API key provided.", "type": "authentication_error",
                        "param": None, "code": "invalid_api_key"}}


def grown(base: str, gamma_port: int, key_file: str, keep_old_token: bool = True) -> str:
    """`base` plus a provider (its own mock address and credential file), a model on it and a
    client token; without `keep_old_token`, the harness's token is gone. Provider alpha's
    connect timeout changes too, so its cluster is replaced while requests use it."""
    text = base.replace(
        "\nmodels:\n",
        f"""
  - name: gamma
    api: openai
    base_url: "http://127.0.0.1:{gamma_port}/v1"
    credentials: {{file: "{key_file}"}}

models:
  - {{name: newbie, provider: gamma, model_id: newbie-v9}}
""", 1)
    text = text.replace(
        'base_url: "http://127.0.0.1:${E2E_ALPHA_PORT}/v1"',
        'base_url: "http://127.0.0.1:${E2E_ALPHA_PORT}/v1"\n    connect_timeout_ms: 4000', 1)
    new = f'    - {{name: newbie-client, sha256: "{hashlib.sha256(NEW_TOKEN.encode()).hexdigest()}"}}\n'
    tokens = "auth:\n  tokens:\n"
    assert tokens in text
    if keep_old_token:
        return text.replace(tokens, tokens + new, 1)
    head, _ = text.split(tokens, 1)
    return head + tokens + new


@pytest.fixture(scope="module", params=MODES)
def rstack(request):
    s = Stack(mode=request.param)
    s.ports["gamma"] = free_port()
    s.key_file = s.dir / "gamma.key"
    s.key_file.write_text(NEW_PROVIDER_KEY)  # Envoy reads it as is: no newline
    s.base_config = s.config.read_text()
    s.start()
    s._spawn("mock-gamma", [str(llmsoup_bin()), "mock-upstream", "--listen", f"127.0.0.1:{s.ports['gamma']}",
                            "--name", "gamma"])
    wait_for(lambda: port_open(s.ports["gamma"]), "mock upstream gamma", logs=s.dir)
    yield s
    s.stop()


@pytest.fixture
def stack(rstack):
    """The module's stack, back on its original config after each test."""
    yield rstack
    if rstack.config.read_text() != rstack.base_config:
        rstack.config.write_text(rstack.base_config)
        assert "configuration reloaded" in rstack.reload()


def chat(s, model: str, token: str, **headers) -> requests.Response:
    return s.chat("hello there", model=model, token=token, headers=headers)


def eventually(call, accept, timeout: float = 5.0) -> requests.Response:
    """Envoy applies a rewritten file asynchronously (milliseconds after the rename): the last
    response, once `accept` holds or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        r = call()
        if accept(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def envoy_stat(s, name: str) -> int:
    text = requests.get(f"http://127.0.0.1:{s.ports['admin']}/stats", params={"filter": f"^{re.escape(name)}$"},
                        timeout=5).text
    values = [int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.split(":")[0] == name]
    assert values, f"no Envoy stat {name}:\n{text}"
    return values[0]


def stats(s) -> dict:
    return requests.get(f"http://127.0.0.1:{s.ports['metrics']}/stats",
                        headers={"authorization": f"Bearer {CLIENT_TOKEN}"}, timeout=10).json()


def ready(s) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{s.ports['metrics']}/ready", timeout=5)


def test_reload_adds_a_provider_model_and_token_in_envoy(stack):
    s = stack
    before = chat(s, "newbie", NEW_TOKEN)
    assert before.status_code == 401, before.text
    assert before.json() == WRONG_BODY
    rds = envoy_stat(s, "http.llmsoup.rds.llmsoup.update_success")

    s.config.write_text(grown(s.base_config, s.ports["gamma"], str(s.key_file)))
    log = s.reload()
    assert "configuration reloaded" in log, log
    assert "Envoy resources updated" in log and "cluster added: provider_gamma" in log, log
    assert "ENVOY IS NOT RUNNING" not in log, log

    r = eventually(lambda: chat(s, "newbie", NEW_TOKEN), lambda r: r.status_code == 200)
    assert r.status_code == 200, r.text
    assert r.headers["x-llmsoup-model"] == "newbie"
    got = r.json()["mock"]
    # The new provider's own address, credential (from its SDS file) and model id.
    assert got["port"] == s.ports["gamma"]
    assert got["headers"]["authorization"] == f"Bearer {NEW_PROVIDER_KEY}"
    assert got["body"]["model"] == "newbie-v9"
    assert NEW_TOKEN not in str(got["headers"])
    # Envoy took a new route table without a restart (RDS).
    assert envoy_stat(s, "http.llmsoup.rds.llmsoup.update_success") > rds

    # What was there keeps working, with the old token too.
    r = chat(s, "coder", CLIENT_TOKEN)
    assert r.status_code == 200, r.text
    assert r.json()["mock"]["port"] == s.ports["beta"]
    assert r.json()["mock"]["body"]["model"] == "coder-v2"
    assert ready(s).status_code == 200, ready(s).text

    # serve and envoy-config write the same files for the same config.
    files = {f.name: f.read_text() for f in s.xds_dir.glob("*.yaml")}
    cmd = [str(llmsoup_bin()), "envoy-config", "--config", str(s.config), "--xds-dir", str(s.xds_dir),
           "--output", str(s.dir / "envoy-check.yaml")]
    if s.mode == "wasm":
        cmd += ["--mode", "wasm", "--wasm", str(s.http_filters()["envoy.filters.http.wasm"]["config"]
                                                 ["vm_config"]["code"]["local"]["filename"])]
    subprocess.run(cmd, check=True, env=s.env, capture_output=True)
    assert {f.name: f.read_text() for f in s.xds_dir.glob("*.yaml")} == files
    assert (s.dir / "envoy-check.yaml").read_text() == (s.dir / "envoy.yaml").read_text()


def test_reload_removes_a_token_and_a_provider_in_envoy(stack):
    s = stack
    s.config.write_text(grown(s.base_config, s.ports["gamma"], str(s.key_file), keep_old_token=False))
    assert "configuration reloaded" in s.reload()
    # The removed token is refused by Envoy (ext_proc: the client-auth Lua step; wasm: the
    # filter) with the JSON 401, before any provider sees the request.
    r = eventually(lambda: chat(s, "small", CLIENT_TOKEN), lambda r: r.status_code == 401)
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == WRONG_BODY
    assert "x-mock-upstream" not in r.headers
    ok = chat(s, "newbie", NEW_TOKEN)
    assert ok.status_code == 200 and ok.json()["mock"]["port"] == s.ports["gamma"], ok.text

    # Back to the original: the provider, its model and the new token leave Envoy.
    s.config.write_text(s.base_config)
    log = s.reload()
    assert "route removed: model_newbie" in log, log
    r = eventually(lambda: chat(s, "newbie", CLIENT_TOKEN), lambda r: r.status_code == 400)
    assert r.status_code == 400, r.text  # the sidecar no longer knows the model
    r = eventually(lambda: chat(s, "small", NEW_TOKEN), lambda r: r.status_code == 401)
    assert r.status_code == 401 and r.json() == WRONG_BODY, r.text
    # The dropped cluster and its credential file leave a moment later (after the routes).
    wait_for(lambda: "provider_gamma" not in (s.xds_dir / "clusters.yaml").read_text()
             and not list(s.xds_dir.glob("secret-provider_gamma*")), "cluster and secret pruned", timeout=5)
    wait_for(lambda: "provider_gamma::" not in requests.get(
        f"http://127.0.0.1:{s.ports['admin']}/clusters", timeout=5).text, "Envoy to drop provider_gamma", timeout=5)
    assert chat(s, "small", CLIENT_TOKEN).status_code == 200


def test_a_bootstrap_change_is_reported_until_envoy_can_have_it(stack):
    s = stack
    # The listener's buffer limit is in the bootstrap: only a restart of Envoy applies it.
    assert "max_body_bytes: ${E2E_MAX_BODY}" in s.base_config
    s.config.write_text(s.base_config.replace("max_body_bytes: ${E2E_MAX_BODY}", "max_body_bytes: 2097152"))
    log = s.reload()
    assert "ENVOY IS NOT RUNNING THE SIDECAR'S CONFIG" in log and "needs an Envoy restart" in log, log
    r = ready(s)
    assert r.status_code == 503
    assert r.json()["status"] == "degraded"
    assert any("restart" in line for line in r.json()["envoy"]), r.json()
    # Requests still flow on what Envoy runs.
    assert chat(s, "small", CLIENT_TOKEN).status_code == 200
    s.config.write_text(s.base_config)
    assert "configuration reloaded" in s.reload()
    assert ready(s).status_code == 200


def test_reload_under_load_fails_no_request(stack):
    """16 clients for 30 s (plain, slow and streamed requests to providers whose clusters are
    replaced by the reloads) while the config alternates every 2 s between the base and one with
    another provider, model and token: every request gets its 200 from the right upstream."""
    s = stack
    configs = [grown(s.base_config, s.ports["gamma"], str(s.key_file)), s.base_config]
    stop = threading.Event()
    reloads = []

    def reloader():
        i = 0
        while not stop.wait(2.0):
            s.config.write_text(configs[i % 2])
            reloads.append(s.reload())
            i += 1

    def client(n: int) -> list[str]:
        problems, i = [], 0
        while not stop.is_set():
            model, upstream, model_id = [("small", "alpha", "small-v1"), ("coder", "beta", "coder-v2")][(n + i) % 2]
            kind = ["plain", "slow", "stream"][i % 3]
            extra = {"slow": {"x-mock-delay-ms": "400"},
                     "stream": {"x-mock-chunks": "6", "x-mock-chunk-delay-ms": "60"}}.get(kind, {})
            i += 1
            try:
                body = {"model": model, "messages": [{"role": "user", "content": f"hello {n}-{i}"}]}
                if kind == "stream":
                    body["stream"] = True
                r = requests.post(f"{s.url}/v1/chat/completions", json=body,
                                  headers=s.headers(CLIENT_TOKEN, **extra), timeout=30)
                if r.status_code != 200:
                    problem = f"{kind} {model}: {r.status_code} {r.text[:200]}"
                elif r.headers.get("x-llmsoup-model") != model or r.headers.get("x-mock-upstream") != "mock" \
                        or r.headers.get("x-mock-received-model") != model_id:
                    problem = f"{kind} {model}: routed to {dict(r.headers)}"
                elif kind == "stream" and not r.text.rstrip().endswith("data: [DONE]"):
                    problem = f"stream {model}: cut short: {r.text[-200:]}"
                elif kind != "stream" and r.json()["mock"]["port"] != s.ports[upstream]:
                    problem = f"{kind} {model}: reached port {r.json()['mock']['port']}"
                else:
                    problem = f"ok {model}"
            except requests.RequestException as e:
                problem = f"{kind} {model}: {e!r}"
            problems.append(problem)
        return problems

    cds = envoy_stat(s, "cluster_manager.cds.update_success")
    accounted = {m: stats(s)["by_model"].get(m, {}).get("requests", 0) for m in ("small", "coder")}
    t = threading.Thread(target=reloader)
    t.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(client, n) for n in range(16)]
            time.sleep(30)
            stop.set()
            results = [line for f in futures for line in f.result()]
    finally:
        stop.set()
        t.join()
    failures = [line for line in results if not line.startswith("ok ")]
    done = len(results) - len(failures)
    print(f"reload under load ({s.mode}): {done} requests, {len(failures)} failed, {len(reloads)} reloads")
    assert not failures, f"{len(failures)} of {len(results)} requests failed, e.g. {failures[:5]}"
    assert done > 100, done
    assert len(reloads) >= 10 and all("configuration reloaded" in log for log in reloads), reloads[-1:]
    assert not any("ENVOY IS NOT RUNNING" in log for log in reloads), reloads
    # Envoy took the changed clusters each time.
    assert envoy_stat(s, "cluster_manager.cds.update_success") >= cds + 10
    # Every request was accounted once, by whichever filter config (wasm: plugin root context)
    # served it: a configuration retired by a reload sends its last reports before it goes.
    want = {m: accounted[m] + results.count(f"ok {m}") for m in accounted}
    deadline = time.monotonic() + 5
    while True:
        got = {m: stats(s)["by_model"].get(m, {}).get("requests", 0) for m in accounted}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == want


def test_a_watched_config_file_reloads_sidecar_and_envoy_without_a_signal(stack):
    s = stack
    assert "\nserver:\n" in s.base_config
    watched = s.base_config.replace("\nserver:\n", "\nserver:\n  watch_config: true\n", 1)
    s.config.write_text(watched)
    assert "configuration reloaded" in s.reload()

    def replace_config(text: str):
        """Atomically, as editors and Kubernetes ConfigMap updates do; no signal."""
        before = len(s.log("sidecar"))
        tmp = s.config.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(s.config)
        wait_for(lambda: "configuration reloaded" in s.log("sidecar")[before:], "a reload on file change", timeout=10)
        return s.log("sidecar")[before:]

    log = replace_config(grown(watched, s.ports["gamma"], str(s.key_file)))
    assert "config file changed" in log, log
    r = eventually(lambda: chat(s, "newbie", NEW_TOKEN), lambda r: r.status_code == 200)
    assert r.status_code == 200, r.text
    assert r.json()["mock"]["port"] == s.ports["gamma"]
    assert r.json()["mock"]["headers"]["authorization"] == f"Bearer {NEW_PROVIDER_KEY}"
    # Back to the original file, which stops watching.
    replace_config(s.base_config)
    assert eventually(lambda: chat(s, "small", NEW_TOKEN), lambda r: r.status_code == 401).status_code == 401
