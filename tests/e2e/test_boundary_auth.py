"""The auth boundary, tried as an attacker would, through a real Envoy 1.40 in both attach modes:

- client tokens are checked inside Envoy whether or not the sidecar answers (ext_proc mode: the
  Lua step before ext_proc; wasm mode: the filter), with the same 401 body as the sidecar's, and
  the client's credential never reaches a provider;
- the sidecar's gRPC port refuses calls without `server.grpc_token`, and reports naming invented
  models change nothing (`/stats`, `/v1/backends`) and do not grow `/metrics`;
- the admin endpoint wants a token everywhere except `/health` and `/ready`.
"""

import base64
import hashlib
import json
import subprocess
import sys
import time

import pytest
import requests

from conftest import MODES
from harness import BETA_PROVIDER_KEY, CLIENT_TOKEN, GRPC_TOKEN, ROOT, Stack

WRONG_TOKEN = "not-the-client-token"
MISSING_BODY = {"error": {
    "message": "You didn't provide an API key. Send it as `Authorization: Bearer <token>`.",
    "type": "authentication_error", "param": None, "code": "invalid_api_key"}}
WRONG_BODY = {"error": {"message": "Incorrect API key provided.", "type": "authentication_error",
                        "param": None, "code": "invalid_api_key"}}

# Extra tokens whose SHA-256 the Lua step must compute right (ext_proc mode): lengths around the
# 55/56/64-byte padding boundaries and a multi-block one.
VECTOR_TOKENS = ["x", "a" * 55, "b" * 56, "c" * 63, "d" * 64, "e" * 119, "tok-" + "f" * 200]


def provider_requests(stack) -> int:
    """Requests Envoy sent to any provider cluster (from Envoy's own admin stats)."""
    text = requests.get(f"http://127.0.0.1:{stack.ports['admin']}/stats?filter=upstream_rq_total",
                        timeout=5).text
    return sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("cluster.provider_") and line.split(":")[0].endswith(".upstream_rq_total"))


def post(stack, headers: dict, model: str = "auto", prompt: str = "fix this python bug") -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    return requests.post(f"{stack.url}/v1/chat/completions", json=body,
                         headers={"content-type": "application/json", **headers}, timeout=30)


def received(r: requests.Response) -> dict:
    return r.json()["mock"]


def assert_refused(stack, r: requests.Response, body: dict, before: int):
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == body
    assert "x-mock-upstream" not in r.headers
    assert provider_requests(stack) == before, "a refused request reached a provider"


def assert_no_client_credential(got: dict, provider_key: str | None):
    """The provider saw its own credential (or none), never the client's token."""
    text = json.dumps(got["headers"])
    assert CLIENT_TOKEN not in text and WRONG_TOKEN not in text, got["headers"]
    assert "x-api-key" not in got["headers"], got["headers"]
    if provider_key is None:
        assert "authorization" not in got["headers"], got["headers"]
    else:
        assert got["headers"]["authorization"] == f"Bearer {provider_key}"


@pytest.fixture(params=[(m, f) for m in MODES for f in ("open", "closed")], ids=lambda p: f"{p[0]}-{p[1]}")
def any_stack(request):
    mode, failure = request.param
    s = Stack(mode=mode, failure_mode=failure)
    if mode == "ext_proc":
        extra = "".join(f'    - {{name: v{i}, sha256: "{hashlib.sha256(t.encode()).hexdigest()}"}}\n'
                        for i, t in enumerate(VECTOR_TOKENS))
        text = s.config.read_text()
        anchor = '    - {name: e2e, sha256: "${E2E_TOKEN_SHA256}"}\n'
        assert anchor in text
        s.config.write_text(text.replace(anchor, anchor + extra))
    s.start()
    yield s
    s.stop()


CASES = [
    ("no token", {}, MISSING_BODY),
    ("blank bearer", {"authorization": "Bearer   "}, MISSING_BODY),
    ("basic scheme", {"authorization": "Basic " + base64.b64encode(f"u:{CLIENT_TOKEN}".encode()).decode()},
     MISSING_BODY),
    ("wrong bearer", {"authorization": f"Bearer {WRONG_TOKEN}"}, WRONG_BODY),
    ("wrong x-api-key", {"x-api-key": WRONG_TOKEN}, WRONG_BODY),
    ("token prefix", {"authorization": f"Bearer {CLIENT_TOKEN[:-1]}"}, WRONG_BODY),
    ("token plus a byte", {"authorization": f"Bearer {CLIENT_TOKEN}x"}, WRONG_BODY),
]


def test_client_auth_holds_with_the_sidecar_up_and_down(any_stack):
    s = any_stack
    failure = s.env["E2E_FAILURE_MODE"]
    # Sidecar up: every bad credential gets the 401, the right one is routed, and the provider
    # sees its own key (beta, credential injector) or nothing (alpha), never the client's.
    up_bytes = {}
    for name, headers, body in CASES:
        before = provider_requests(s)
        r = post(s, headers)
        assert_refused(s, r, body, before)
        up_bytes[name] = r.content
    r = post(s, {"authorization": f"Bearer {CLIENT_TOKEN}"})
    assert r.status_code == 200 and r.headers["x-llmsoup-model"] == "coder", r.text
    assert_no_client_credential(received(r), BETA_PROVIDER_KEY)
    r = post(s, {"x-api-key": CLIENT_TOKEN}, prompt="hello there")
    assert r.status_code == 200 and r.headers["x-llmsoup-model"] == "small", r.text
    assert_no_client_credential(received(r), None)

    s.kill_sidecar()
    # Sidecar down: the same 401s, byte for byte, decided inside Envoy.
    for name, headers, body in CASES:
        before = provider_requests(s)
        r = post(s, headers)
        assert_refused(s, r, body, before)
        assert r.content == up_bytes[name], name
    if s.mode == "ext_proc":
        # The Lua SHA-256 agrees with Python's on every padding boundary.
        for t in VECTOR_TOKENS:
            r = post(s, {"authorization": f"Bearer {t}"})
            assert r.status_code == (200 if failure == "open" else 503), (len(t), r.text)
            before = provider_requests(s)
            assert_refused(s, post(s, {"authorization": f"Bearer {t[:-1] + chr(ord(t[-1]) ^ 1)}"}), WRONG_BODY,
                           before)
    for headers in ({"authorization": f"Bearer {CLIENT_TOKEN}"}, {"x-api-key": CLIENT_TOKEN}):
        before = provider_requests(s)
        r = post(s, headers)
        if failure == "open":
            assert r.status_code == 200, r.text
            assert r.headers["x-llmsoup-decision"] == "fail-open"
            got = received(r)
            assert got["body"]["model"] == "small-v1" and got["port"] == s.ports["alpha"]
            assert_no_client_credential(got, None)
            # A concrete model on the credentialed provider: its key, not the client's.
            r = post(s, headers, model="coder")
            assert r.status_code == 200, r.text
            assert_no_client_credential(received(r), BETA_PROVIDER_KEY)
        else:
            # Authenticated, then refused for want of a router; nothing reached a provider.
            assert r.status_code == 503, r.text
            assert provider_requests(s) == before


# --- the gRPC port ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """llmsoup.v1 messages and stubs, generated from the repository's proto."""
    out = tmp_path_factory.mktemp("llmsoup_pb")
    proto = ROOT / "crates" / "contract"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--python_out={out}",
                    f"--grpc_python_out={out}", "llmsoup/v1/router.proto"], check=True)
    sys.path.insert(0, str(out))
    from llmsoup.v1 import router_pb2, router_pb2_grpc
    return router_pb2, router_pb2_grpc


def admin_get(stack, path: str, **kw) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{stack.ports['metrics']}{path}", timeout=10, **kw)


def authed(stack, path: str) -> requests.Response:
    r = admin_get(stack, path, headers={"authorization": f"Bearer {CLIENT_TOKEN}"})
    assert r.status_code == 200, r.text
    return r


@pytest.mark.parametrize("mode", MODES)
def test_forged_grpc_calls_change_nothing(mode, pb):
    import grpc
    router_pb2, router_pb2_grpc = pb
    s = Stack(mode=mode).start()
    try:
        # Some genuine traffic first, so there are totals to protect.
        assert s.chat("fix this python bug", headers={"x-mock-usage": "100,20"}).status_code == 200
        # (In wasm mode this arrives by the filter's own Report call, which must carry the secret.)
        wait_stats = time.monotonic() + 5
        while authed(s, "/stats").json()["total"]["requests"] < 1 and time.monotonic() < wait_stats:
            time.sleep(0.1)
        assert authed(s, "/stats").json()["by_model"]["coder"]["prompt_tokens"] == 100
        stats, backends = authed(s, "/stats").json(), authed(s, "/v1/backends").json()
        metrics_before = len(authed(s, "/metrics").content)

        # A plain authority: for a `unix:` target grpc-core would send the socket's path, which
        # is no valid HTTP/2 :authority (the sidecar's HTTP/2 server resets the stream).
        channel = grpc.insecure_channel(s.grpc_target, options=[("grpc.default_authority", "localhost")])
        stub = router_pb2_grpc.RouterStub(channel)
        down = [router_pb2.UsageReport(model="coder", decision="coding", status=503, usage_seen=True,
                                       prompt_tokens=1_000_000_000, completion_tokens=1_000_000_000,
                                       duration_us=1_000_000) for _ in range(5)]
        route = router_pb2.RouteRequest(method="POST", path="/v1/chat/completions",
                                        body=b'{"model":"auto","messages":[{"role":"user","content":"hi"}]}')
        ext_proc = channel.stream_stream("/envoy.service.ext_proc.v3.ExternalProcessor/Process",
                                         request_serializer=lambda b: b, response_deserializer=lambda b: b)
        for metadata in (None, [("authorization", "Bearer wrong-grpc-token-000000")],
                         [("authorization", GRPC_TOKEN)], [("authorization", f"Bearer {CLIENT_TOKEN}")]):
            for call in (lambda: stub.Report(router_pb2.UsageReports(reports=down), metadata=metadata, timeout=5),
                         lambda: stub.Route(route, metadata=metadata, timeout=5),
                         lambda: list(ext_proc(iter([b""]), metadata=metadata, timeout=5))):
                with pytest.raises(grpc.RpcError) as e:
                    call()
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, (metadata, e.value)

        # With the secret but invented names (and absurd values on a real one): dropped, counted.
        good = [("authorization", f"Bearer {GRPC_TOKEN}")]
        invented = [router_pb2.UsageReport(model=f"invented-model-{i}", decision=f"invented-decision-{i}",
                                           status=200 + i % 400, usage_seen=True, prompt_tokens=1000,
                                           completion_tokens=1000, duration_us=1000)
                    for i in range(20_000)]
        for i in range(0, len(invented), 4000):
            stub.Report(router_pb2.UsageReports(reports=invented[i:i + 4000]), metadata=good, timeout=30)
        stub.Report(router_pb2.UsageReports(reports=down), metadata=good, timeout=5)
        # More than one call may carry: the excess is dropped.
        stub.Report(router_pb2.UsageReports(reports=invented[:4100]), metadata=good, timeout=30)
        channel.close()

        assert authed(s, "/stats").json() == stats
        assert authed(s, "/v1/backends").json() == backends
        metrics = authed(s, "/metrics").text
        assert "invented-" not in metrics
        # Only the drop counter's few series are new.
        assert len(metrics.encode()) < metrics_before + 4096, (metrics_before, len(metrics.encode()))
        dropped = {line.split("reason=\"")[1].split("\"")[0]: float(line.rsplit(" ", 1)[1])
                   for line in metrics.splitlines() if line.startswith("llmsoup_reports_dropped_total{")}
        assert dropped.get("unknown_model") == 20_000 + 4096, dropped
        assert dropped.get("tokens_out_of_range") == 5, dropped
        assert dropped.get("too_many") == 4, dropped
        # And genuine traffic still flows, with Envoy sending the secret.
        r = s.chat("fix this python bug")
        assert r.status_code == 200 and r.headers["x-llmsoup-decision"] == "coding"
    finally:
        s.stop()


# --- the admin endpoint -------------------------------------------------------------------------

ADMIN = [("GET", "/metrics"), ("GET", "/stats"), ("GET", "/v1/backends"), ("POST", "/v1/feedback"),
         ("GET", "/dashboard"), ("GET", "/v1/events"), ("GET", "/anything")]


def test_admin_endpoints_want_a_token_except_the_probes(stack):
    url = f"http://127.0.0.1:{stack.ports['metrics']}"
    for path in ("/health", "/ready"):
        assert requests.get(url + path, timeout=5).status_code == 200
    basic = "Basic " + base64.b64encode(f"ops:{CLIENT_TOKEN}".encode()).decode()
    for method, path in ADMIN:
        for headers in ({}, {"authorization": f"Bearer {WRONG_TOKEN}"}, {"x-api-key": WRONG_TOKEN}):
            r = requests.request(method, url + path, headers=headers, timeout=5)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["error"]["type"] == "authentication_error"
        r = requests.request(method, url + path, params={"access_token": CLIENT_TOKEN}, timeout=5)
        assert r.status_code == 401, "a token in the URL is no credential"
        for headers in ({"authorization": f"Bearer {CLIENT_TOKEN}"}, {"x-api-key": CLIENT_TOKEN},
                        {"authorization": basic}):
            r = requests.request(method, url + path, headers=headers, timeout=5, stream=True)
            want = {"/v1/feedback": 400, "/anything": 404}.get(path, 200)
            assert r.status_code == want, (method, path, headers, r.status_code)
            r.close()
