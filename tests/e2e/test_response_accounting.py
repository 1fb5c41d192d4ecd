"""`gateway.response_accounting: false`, in both attach modes: requests still route and SSE still
streams, response bodies never reach the sidecar (ext_proc) or the filter's usage scanner (wasm),
and /stats counts requests and status but no tokens or spend."""

import json
import re
import time

import pytest
import requests

from harness import Stack

MODES = ["ext_proc", "wasm"]


@pytest.fixture(scope="module", params=MODES)
def off_stack(request):
    s = Stack(mode=request.param)
    text = s.config.read_text()
    s.config.write_text(text.replace("\ngateway:\n", "\ngateway:\n  response_accounting: false\n", 1))
    s.start()
    yield s
    s.stop()


def stats(stack) -> dict:
    url = f"http://127.0.0.1:{stack.ports['metrics']}/stats"
    return requests.get(url, headers={"authorization": "Bearer e2e-client-token"}, timeout=10).json()


def wait_requests(stack, model: str, at_least: int) -> dict:
    """/stats once `model` has at least `at_least` finished requests (wasm reports are async)."""
    deadline = time.monotonic() + 5
    while True:
        s = stats(stack)
        if s["by_model"].get(model, {}).get("requests", 0) >= at_least or time.monotonic() > deadline:
            return s
        time.sleep(0.1)


def ext_proc_messages_sent(stack) -> int:
    """Messages Envoy's ext_proc filter sent to the sidecar so far."""
    text = requests.get(f"http://127.0.0.1:{stack.ports['admin']}/stats", timeout=10).text
    return sum(int(m.group(1)) for m in re.finditer(r"ext_proc\.stream_msgs_sent: (\d+)", text))


def test_rendered_gateway_asks_for_no_response_body(off_stack):
    filters = off_stack.http_filters()
    if off_stack.mode == "ext_proc":
        mode = filters["envoy.filters.http.ext_proc"]["processing_mode"]
        assert (mode["response_header_mode"], mode["response_body_mode"]) == ("SEND", "NONE")
    else:
        plugin = json.loads(filters["envoy.filters.http.wasm"]["config"]["configuration"]["value"])
        assert plugin["response_accounting"] is False


def test_routes_and_streams_without_counting_tokens(off_stack):
    before = stats(off_stack)
    b = before["by_model"].get("coder", {})
    msgs_before = ext_proc_messages_sent(off_stack)

    r = off_stack.chat("fix this rust crate", headers={"x-mock-usage": "1000,500"})
    assert r.status_code == 200 and r.headers["x-llmsoup-model"] == "coder"
    assert r.json()["mock"]["body"]["model"] == "coder-v2"

    chunks, delay = 4, 0.2
    start = time.monotonic()
    r = requests.post(
        f"{off_stack.url}/v1/chat/completions",
        json={"model": "auto", "stream": True, "stream_options": {"include_usage": True},
              "messages": [{"role": "user", "content": "write rust code"}]},
        headers=off_stack.headers(**{"x-mock-chunks": str(chunks), "x-mock-chunk-delay-ms": str(int(delay * 1000)),
                                     "x-mock-usage": "1000,500"}),
        stream=True,
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-llmsoup-model"] == "coder" and r.headers["x-llmsoup-decision"] == "coding"
    arrivals, events = [], []
    for line in r.iter_lines():
        if line.startswith(b"data: "):
            arrivals.append(time.monotonic() - start)
            events.append(line[6:])
    assert events[-1] == b"[DONE]"
    assert json.loads(events[0])["model"] == "coder-v2"
    assert any(b'"usage"' in e for e in events), "the client still gets the usage block"
    # The first event is not held back until the stream ends.
    assert arrivals[0] < arrivals[-1] - chunks * delay * 0.8, arrivals

    after = wait_requests(off_stack, "coder", b.get("requests", 0) + 2)
    a = after["by_model"]["coder"]
    assert a["requests"] - b.get("requests", 0) == 2, "requests are still counted"
    assert a["errors"] - b.get("errors", 0) == 0
    assert a["prompt_tokens"] == b.get("prompt_tokens", 0)
    assert a["completion_tokens"] == b.get("completion_tokens", 0)
    assert a["spent_usd"] == pytest.approx(b.get("spent_usd", 0))

    if off_stack.mode == "ext_proc":
        # Per request: request headers, request body, response headers; never a response chunk.
        assert ext_proc_messages_sent(off_stack) - msgs_before == 2 * 3


def test_upstream_errors_still_count_as_errors(off_stack):
    before = stats(off_stack)["by_model"].get("coder", {})
    r = off_stack.chat("fix this rust crate", headers={"x-mock-status": "503"})
    assert r.status_code == 503
    after = wait_requests(off_stack, "coder", before.get("requests", 0) + 1)["by_model"]["coder"]
    assert after["errors"] - before.get("errors", 0) == 1


@pytest.fixture(scope="module")
def async_stack():
    """ext_proc mode with `async_response_accounting`: responses read by an observability-mode filter."""
    s = Stack(mode="ext_proc")
    text = s.config.read_text()
    s.config.write_text(text.replace("\ngateway:\n", "\ngateway:\n  async_response_accounting: true\n", 1))
    s.start()
    yield s
    s.stop()


def test_async_accounting_is_exact_and_streams(async_stack):
    filters = async_stack.http_filters()
    assert filters["llmsoup.response_accounting"]["observability_mode"] is True
    assert filters["envoy.filters.http.ext_proc"]["processing_mode"]["response_body_mode"] == "NONE"

    before = stats(async_stack)["by_model"].get("coder", {})
    r = async_stack.chat("fix this rust crate", headers={"x-mock-usage": "1000,500"})
    assert r.status_code == 200 and r.headers["x-llmsoup-model"] == "coder"
    r = requests.post(
        f"{async_stack.url}/v1/chat/completions",
        json={"model": "auto", "stream": True, "stream_options": {"include_usage": True},
              "messages": [{"role": "user", "content": "write rust code"}]},
        headers=async_stack.headers(**{"x-mock-chunks": "3", "x-mock-usage": "1000,500"}),
        stream=True,
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["x-llmsoup-decision"] == "coding"
    events = [line[6:] for line in r.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    r = async_stack.chat("fix this rust crate", headers={"x-mock-status": "503"})
    assert r.status_code == 503

    after = wait_requests(async_stack, "coder", before.get("requests", 0) + 3)["by_model"]["coder"]
    assert after["requests"] - before.get("requests", 0) == 3, "each request reported exactly once"
    assert after["errors"] - before.get("errors", 0) == 1
    assert after["prompt_tokens"] - before.get("prompt_tokens", 0) == 2000
    assert after["completion_tokens"] - before.get("completion_tokens", 0) == 1000
    line = async_stack.wait_log("sidecar", "stream=true prompt_tokens=1000")
    assert "model=coder" in line and "decision=coding" in line
