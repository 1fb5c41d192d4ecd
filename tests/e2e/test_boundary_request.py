"""Request integrity at the policy boundary, tried as an attacker would, through a real Envoy in
both attach modes: HTTP/2 trailers, bodies the fail-open steps must refuse, bodyless requests,
path traversal, oversized bodies and headers, huge echoed values, and the JSON of every error.

Each row runs with the sidecar up and, where it matters, down (a private stack whose sidecar is
killed) in both failure modes, and asserts the exact status, the JSON error (type and code), and
what the mock provider received — or, from the mock's request log, that it received nothing."""

from __future__ import annotations

import http.client
import json
import socket
import uuid

import h2.config
import h2.connection
import h2.events
import pytest

from conftest import MODES
from harness import CLIENT_TOKEN, Stack, wait_for

LIMIT = 1 << 20  # the harness's max_body_bytes

_stacks: dict[tuple[str, str, bool], Stack] = {}


@pytest.fixture(scope="module")
def stacks():
    """Private stacks by (mode, failure mode, sidecar up), started on first use."""

    def get(mode: str, failure: str, up: bool) -> Stack:
        key = (mode, failure, up)
        if key not in _stacks:
            s = Stack(mode=mode, failure_mode=failure).start()
            if not up:
                s.kill_sidecar()
                # "Down" as it stays: Envoy's health check has taken the sidecar out, so sidecar
                # calls fail at once (the first requests after a crash wait for the connect error).
                wait_for(lambda: not s.sidecar_healthy(), "envoy to take the killed sidecar out", logs=s.dir)
            _stacks[key] = s
        return _stacks[key]

    yield get
    for s in _stacks.values():
        s.stop()
    _stacks.clear()


class Resp:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def http1(s: Stack, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Resp:
    """One HTTP/1.1 request with the path sent exactly as given (no client-side normalisation)."""
    c = http.client.HTTPConnection("127.0.0.1", s.ports["listen"], timeout=30)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        if body is not None:
            c.putheader("content-length", str(len(body)))
        c.endheaders()
        if body:
            try:
                c.send(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # Envoy answered (413) and closed before the whole body was sent
        try:
            r = c.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return Resp(0, {}, b"")  # closed without a response
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        c.close()


def h2c(s: Stack, path: str, headers: dict, body: bytes, trailers: dict) -> Resp:
    """An HTTP/2 (prior knowledge, cleartext) POST whose body is followed by trailers."""
    sock = socket.create_connection(("127.0.0.1", s.ports["listen"]), timeout=30)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    req = [(":method", "POST"), (":path", path), (":scheme", "http"), (":authority", "llmsoup")]
    conn.send_headers(sid, req + list(headers.items()), end_stream=False)
    if body:
        conn.send_data(sid, body, end_stream=False)
    conn.send_headers(sid, list(trailers.items()), end_stream=True)
    sock.sendall(conn.data_to_send())
    status, resp_headers, data, done = 0, {}, b"", False
    try:
        while not done:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for ev in conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    resp_headers = {k.decode(): v.decode() for k, v in ev.headers}
                    status = int(resp_headers[":status"])
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    data += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == sid:
                    done = True
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return Resp(status, resp_headers, data)


def chat_body(model, prompt: str = "hello there") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]}).encode()


def base_headers(request_id: str) -> dict:
    return {"content-type": "application/json", "authorization": f"Bearer {CLIENT_TOKEN}",
            "x-request-id": request_id}


def mock_saw(s: Stack, request_id: str) -> bool:
    return any("mock received" in line and request_id in line for line in s.log("mock").splitlines())


def check(s: Stack, r: Resp, request_id: str, status: int, code: str | None, upstream: dict | None,
          decision: str | None = None):
    """The exact status; the error body (OpenAI shape) or what the provider received."""
    assert r.status == status, (r.status, r.body[:500])
    if code is not None:
        assert r.headers["content-type"].startswith("application/json"), r.headers
        err = r.json()["error"]
        assert err["code"] == code, err
        assert err["message"] and err["type"] == ("server_error" if status >= 500 else "invalid_request_error"), err
    if upstream is None:
        # The mock logs every request it receives before answering it.
        assert not mock_saw(s, request_id), f"the provider received {request_id}"
    else:
        got = r.json()["mock"]
        for k, v in upstream.items():
            actual = got["body"]["model"] if k == "model" else got[k]
            assert actual == v, (k, actual, v)
        assert mock_saw(s, request_id)
    if decision is not None:
        assert r.headers.get("x-llmsoup-decision") == decision, r.headers


# --- the table --------------------------------------------------------------------------------
# Each row: what to send, and per sidecar state ("up", "open" = down with fail-open, "closed" =
# down with fail-closed) the expected (status, error code or None, upstream checks or None,
# x-llmsoup-decision or None).

CLOSED_DOWN = (503, "router_unavailable", None, None)
TRAILERS = {"x-checksum": "abc123"}

ROWS = {
    # HTTP/2 trailers: the body is routed (decision, plugins) before anything goes upstream.
    "trailers_auto": (
        ("h2", chat_body("auto", "fix this python bug")),
        {"up": (200, None, {"model": "coder-v2"}, "coding"),
         "open": (200, None, {"model": "small-v1"}, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    "trailers_concrete": (
        ("h2", chat_body("writer")),
        {"up": (200, None, {"model": "writer-v1"}, None),
         "open": (200, None, {"model": "writer-v1"}, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    "trailers_unknown_model": (
        ("h2", chat_body("gpt-17")),
        {"up": (400, "model_not_found", None, None),
         "open": (200, None, {"model": "small-v1"}, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    "trailers_only_no_body": (
        ("h2", b""),
        {"up": (400, "invalid_json", None, None),
         "open": (400, "invalid_json", None, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    # Bodies the fail-open steps must parse as strictly as the sidecar.
    "duplicate_model": (
        ("post", b'{"model":"auto","model":"coder","messages":[]}'),
        {"up": (400, "invalid_json", None, None),
         "open": (400, "invalid_json", None, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    "escaped_duplicate_model": (
        ("post", b'{"model":"auto","mod\\u0065l":"coder","messages":[]}'),
        {"up": (400, "invalid_json", None, None),
         "open": (400, "invalid_json", None, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    "escaped_model_key": (
        ("post", b'{"mod\\u0065l":"writer","messages":[{"role":"user","content":"hi"}]}'),
        {"up": (200, None, {"model": "writer-v1"}, None),
         "open": (200, None, {"model": "writer-v1"}, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    "null_then_model": (
        ("post", b'{"model":null,"model":"coder","messages":[]}'),
        {"up": (400, "invalid_json", None, None),
         "open": (400, "invalid_json", None, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    "null_model": (
        ("post", b'{"model":null,"messages":[]}'),
        {"up": (400, "missing_model", None, None),
         "open": (400, "missing_model", None, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    "array_model": (
        ("post", b'{"model":["coder"],"messages":[]}'),
        {"up": (400, "invalid_model", None, None),
         "open": (400, "invalid_model", None, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    "number_model": (
        ("post", b'{"model":42,"messages":[]}'),
        {"up": (400, "invalid_model", None, None),
         "open": (400, "invalid_model", None, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    "trailing_object": (
        ("post", b'{"model":"auto"} {"model":"coder"}'),
        {"up": (400, "invalid_json", None, None),
         "open": (400, "invalid_json", None, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    # Bodyless requests never reach a provider.
    "get_files": (
        ("GET", "/v1/files"),
        {"up": (404, "not_found", None, None), "open": (404, "not_found", None, None), "closed": CLOSED_DOWN},
    ),
    "get_chat": (
        ("GET", "/v1/chat/completions"),
        {"up": (405, "method_not_allowed", None, None), "open": (405, "method_not_allowed", None, None),
         "closed": CLOSED_DOWN},
    ),
    "delete_chat": (
        ("DELETE", "/v1/chat/completions"),
        {"up": (405, "method_not_allowed", None, None), "open": (405, "method_not_allowed", None, None),
         "closed": CLOSED_DOWN},
    ),
    "empty_post": (
        ("POST", "/v1/chat/completions"),
        {"up": (400, "invalid_json", None, None), "open": (400, "invalid_json", None, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    "get_models": (
        ("GET", "/v1/models"),
        {"up": (200, None, None, None), "open": (503, "router_unavailable", None, None), "closed": CLOSED_DOWN},
    ),
    # Paths are normalised before routing; a provider route's base path cannot be escaped. (A
    # closed gateway whose sidecar is down answers 503 before any route is looked at.)
    "dot_segments": (
        ("path", "/v1/../admin"),
        {"up": (404, "not_found", None, None), "open": (404, "not_found", None, None),
         "closed": CLOSED_DOWN},
    ),
    "encoded_dot_segments": (
        ("path", "/v1/%2e%2e/admin"),
        {"up": (404, "not_found", None, None), "open": (404, "not_found", None, None),
         "closed": CLOSED_DOWN},
    ),
    "escape_from_endpoint": (
        ("path", "/v1/chat/completions/../../../admin"),
        {"up": (404, "not_found", None, None), "open": (404, "not_found", None, None),
         "closed": CLOSED_DOWN},
    ),
    "encoded_slash": (
        ("path", "/v1/chat%2Fcompletions"),
        # Refused while the connection manager normalises the path, before any route is chosen:
        # the ext_proc filters are not in that stream's chain, so the sidecar's state is irrelevant.
        {"up": (400, "invalid_request", None, None), "open": (400, "invalid_request", None, None),
         "closed": (400, "invalid_request", None, None)},
    ),
    "merged_slashes": (
        ("path", "//v1//chat/./completions"),
        {"up": (200, None, {"model": "small-v1", "path": "/v1/chat/completions"}, None),
         "open": (200, None, {"model": "small-v1", "path": "/v1/chat/completions"}, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
    # Oversized bodies and headers: Envoy's own replies, as OpenAI JSON.
    "body_just_over_limit": (
        ("post", None),
        {"up": (413, "request_too_large", None, None), "open": (413, "request_too_large", None, None),
         # wasm asks the sidecar only once the body is complete: Envoy's 413 comes first.
         "closed": {"ext_proc": CLOSED_DOWN, "wasm": (413, "request_too_large", None, None)}},
    ),
    "body_far_over_limit": (
        ("post", None),
        {"up": (413, "request_too_large", None, None), "open": (413, "request_too_large", None, None),
         # wasm asks the sidecar only once the body is complete: Envoy's 413 comes first.
         "closed": {"ext_proc": CLOSED_DOWN, "wasm": (413, "request_too_large", None, None)}},
    ),
    "huge_headers": (
        ("headers", None),
        # The codec refuses the headers before any filter saw the request: the ext_proc filters are
        # off for a stream without request headers (on per virtual host), so Envoy's 431 goes out
        # as JSON whatever the sidecar's state, and nothing reaches the sidecar or a provider.
        {"up": (431, "request_header_fields_too_large", None, None),
         "open": (431, "request_header_fields_too_large", None, None),
         "closed": (431, "request_header_fields_too_large", None, None)},
    ),
    # A 100 KB model name is never echoed back whole.
    "huge_model_name": (
        ("post", chat_body("m" * 100_000)),
        {"up": (400, "model_not_found", None, None),
         "open": (200, None, {"model": "small-v1"}, "fail-open"),
         "closed": CLOSED_DOWN},
    ),
}


def oversized(row: str) -> bytes:
    filler = "x" * (LIMIT + 1 if row == "body_just_over_limit" else 8 * LIMIT)
    return json.dumps({"model": "auto", "messages": [{"role": "user", "content": filler}]}).encode()


def send(s: Stack, row: str, request_id: str) -> Resp:
    (kind, arg), _ = ROWS[row]
    headers = base_headers(request_id)
    if kind == "h2":
        return h2c(s, "/v1/chat/completions", headers, arg, TRAILERS)
    if kind == "post":
        body = arg if arg is not None else oversized(row)
        return http1(s, "POST", "/v1/chat/completions", body, headers)
    if kind == "path":
        return http1(s, "POST", arg, chat_body("auto"), headers)
    if kind == "headers":
        headers["x-padding"] = "p" * (100 * 1024)
        return http1(s, "POST", "/v1/chat/completions", chat_body("auto"), headers)
    body = b"" if kind == "POST" else None
    if kind == "POST":
        headers.pop("content-type")
    return http1(s, kind, arg, body, headers)


CASES = [(row, state) for row in ROWS for state in ("up", "open", "closed")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("row, state", CASES, ids=[f"{r}-{st}" for r, st in CASES])
def test_boundary(stacks, mode, row, state):
    failure = "closed" if state == "closed" else "open"
    s = stacks(mode, failure, state == "up")
    expected = ROWS[row][1][state]
    status, code, upstream, decision = expected[mode] if isinstance(expected, dict) else expected
    request_id = f"{row}-{state}-{mode}-{uuid.uuid4().hex[:8]}"
    r = send(s, row, request_id)
    check(s, r, request_id, status, code, upstream, decision)
    if row == "huge_model_name" and code == "model_not_found":
        # The echo is cut: the whole error stays small.
        assert len(r.body) < 1024, len(r.body)
        assert "…" in r.json()["error"]["message"]
    if row == "huge_headers":
        assert r.json() == {"error": {"message": "Request headers are too large.", "type": "invalid_request_error",
                                      "param": None, "code": "request_header_fields_too_large"}}
    if row == "get_models" and state == "up":
        ids = [m["id"] for m in r.json()["data"]]
        assert "auto" in ids and "coder" in ids


@pytest.mark.parametrize("mode", MODES)
def test_sidecar_json_errors_are_not_rewritten_by_envoy(stacks, mode):
    """The local reply mappers only touch Envoy's own replies: the sidecar's (or the wasm
    filter's) JSON errors reach the client byte for byte."""
    s = stacks(mode, "open", True)
    rid = f"json401-{mode}-{uuid.uuid4().hex[:8]}"
    h = base_headers(rid)
    del h["authorization"]
    r = http1(s, "POST", "/v1/chat/completions", chat_body("auto"), h)
    assert r.status == 401
    assert r.json() == {"error": {
        "message": "You didn't provide an API key. Send it as `Authorization: Bearer <token>`.",
        "type": "authentication_error", "param": None, "code": "invalid_api_key"}}
    rid = f"json400-{mode}-{uuid.uuid4().hex[:8]}"
    r = http1(s, "POST", "/v1/chat/completions", chat_body("gpt-17"), base_headers(rid))
    assert r.status == 400
    assert r.json() == {"error": {
        "message": "The model `gpt-17` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
    assert not mock_saw(s, rid)


@pytest.mark.parametrize("mode", MODES)
def test_upstream_reset_is_openai_json(stacks, mode):
    s = stacks(mode, "open", True)
    rid = f"reset-{mode}-{uuid.uuid4().hex[:8]}"
    h = base_headers(rid)
    h["x-mock-reset"] = "1"
    r = http1(s, "POST", "/v1/chat/completions", chat_body("auto"), h)
    assert r.status == 503
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "upstream_unavailable"
    assert r.json()["error"]["type"] == "server_error"
