"""HTTPS providers through a real Envoy, both attach modes: the mock upstream's TLS listener
presents a self-signed certificate for `localhost` that is the gateway's CA bundle. A routed
request and each attempt of a fallback chain reach the HTTPS provider with SNI, certificate
validation and the provider's own credential; a certificate that does not name the host is
refused with an OpenAI-style JSON error and nothing reaches the provider."""

import json
import shutil
from pathlib import Path

import pytest
import requests

from conftest import MODES
from harness import BETA_PROVIDER_KEY, Stack

CONFIG = Path(__file__).with_name("llmsoup-tls.yaml")


@pytest.fixture(scope="module", params=MODES)
def tls_stack(request):
    s = Stack(mode=request.param, tls=True)
    shutil.copy(CONFIG, s.config)
    s.start()
    yield s
    s.stop()


def received(r: requests.Response) -> dict:
    assert r.status_code == 200, r.text
    return r.json()["mock"]


def test_a_routed_request_reaches_the_https_provider_with_its_credential(tls_stack):
    s = tls_stack
    r = s.chat("hello over TLS")
    m = received(r)
    assert r.headers["x-llmsoup-model"] == "tls"
    assert m["tls"] is True and m["port"] == s.ports["secure"]
    assert m["body"]["model"] == "tls-v1"
    assert m["headers"]["authorization"] == f"Bearer {BETA_PROVIDER_KEY}"
    assert m["path"] == "/v1/chat/completions"


def test_a_stream_from_the_https_provider(tls_stack):
    s = tls_stack
    payload = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "stream over TLS"}]}
    r = requests.post(f"{s.url}/v1/chat/completions", json=payload, timeout=30, stream=True,
                      headers=s.headers(**{"x-mock-chunks": "3"}))
    assert r.status_code == 200
    events = [line[6:] for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    first = json.loads(events[0])
    assert first["mock"]["tls"] is True


def test_a_plain_primary_fails_over_to_an_https_fallback(tls_stack):
    s = tls_stack
    r = s.chat("hello", model="shaky", headers={"x-mock-fail-for": "shaky-v1=503"})
    m = received(r)
    assert r.headers["x-llmsoup-model"] == "tls"
    assert r.headers["x-llmsoup-attempts"] == "shaky;503,tls"
    assert m["tls"] is True and m["port"] == s.ports["secure"]
    assert m["body"]["model"] == "tls-v1"
    assert m["headers"]["authorization"] == f"Bearer {BETA_PROVIDER_KEY}"


def test_an_https_primary_fails_over_to_a_plain_fallback_without_its_credential(tls_stack):
    s = tls_stack
    r = s.chat("hello", model="tlsfirst", headers={"x-mock-fail-for": "tlsfirst-v1=503"})
    m = received(r)
    assert r.headers["x-llmsoup-attempts"] == "tlsfirst;503,plainfb"
    assert m["tls"] is False and m["port"] == s.ports["alpha"]
    assert m["body"]["model"] == "plainfb-v1"
    assert "authorization" not in m["headers"], "the HTTPS provider's key must not follow the request"


def test_a_certificate_for_another_name_is_refused(tls_stack):
    s = tls_stack
    r = s.chat("hello", model="mismatch")
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["message"]
    # The handshake failed at the provider: no request reached it.
    s.wait_log("mock", "TLS handshake failed")
    got = requests.get(f"http://127.0.0.1:{s.ports['alpha']}/mock/received", timeout=5).json()
    assert all(m["body"].get("model") != "mismatch-v1" for m in got)
