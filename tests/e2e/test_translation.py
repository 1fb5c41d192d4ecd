"""Protocol translation through a real Envoy, in both attach modes: the official `anthropic` SDK
served by an OpenAI-format provider, the official `openai` SDK served by an Anthropic-format one
(the mock upstream speaks both), JSON and SSE, tool use, errors, and usage on every stream. What
the mock received (`GET /mock/received` on its port) and what the SDK got are the evidence; token
counts are checked in /stats."""

import json
import shutil
import time
from pathlib import Path

import anthropic
import openai
import pytest
import requests

from conftest import MODES
from harness import BETA_PROVIDER_KEY, CLIENT_TOKEN, Stack

CONFIG = Path(__file__).with_name("llmsoup-translate.yaml")
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather for a city",
                 "parameters": WEATHER_TOOL_ANTHROPIC["input_schema"]},
}


@pytest.fixture(scope="module", params=MODES)
def tstack(request):
    s = Stack(mode=request.param)
    shutil.copy(CONFIG, s.config)
    s.start()
    yield s
    s.stop()


def received(stack, provider: str) -> dict:
    """The last request the mock upstream on `provider`'s port received."""
    url = f"http://127.0.0.1:{stack.ports[provider]}/mock/received"
    got = requests.get(url, timeout=5).json()
    assert got, "the mock received nothing"
    return got[-1]


def claude_client(stack, **headers) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=CLIENT_TOKEN, default_headers=headers, max_retries=0)


def openai_client(stack, **headers) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=CLIENT_TOKEN, default_headers=headers, max_retries=0)


def stats(stack) -> dict:
    url = f"http://127.0.0.1:{stack.ports['metrics']}/stats"
    return requests.get(url, headers={"authorization": f"Bearer {CLIENT_TOKEN}"}, timeout=10).json()


def model_stats(stack, model: str) -> dict:
    return stats(stack)["by_model"].get(model, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})


def settled_stats(stack, model: str) -> dict:
    """`model_stats` once earlier tests' reports have all arrived (the wasm filter batches them every
    200 ms): two reads 300 ms apart that agree."""
    last = model_stats(stack, model)
    for _ in range(20):
        time.sleep(0.3)
        now = model_stats(stack, model)
        if now == last:
            return now
        last = now
    return last


def wait_tokens(stack, model: str, before: dict, requests_: int) -> dict:
    """/stats for `model` once `requests_` more requests were accounted (wasm reports are async)."""
    deadline = time.monotonic() + 5
    while True:
        now = model_stats(stack, model)
        if now["requests"] >= before["requests"] + requests_ or time.monotonic() > deadline:
            return {k: now.get(k, 0) - before.get(k, 0) for k in ("requests", "prompt_tokens", "completion_tokens")}
        time.sleep(0.1)


# --- Anthropic SDK → OpenAI-format provider ------------------------------------------------------

def test_anthropic_sdk_served_by_an_openai_provider(tstack):
    before = model_stats(tstack, "gpt")
    client = claude_client(tstack, **{"x-mock-usage": "40,9"})
    msg = client.messages.create(model="auto", max_tokens=100, system="Be terse.",
                                 messages=[{"role": "user", "content": "hello there"}])
    assert msg.type == "message" and msg.role == "assistant"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "mock reply from gpt-mock"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (40, 9)

    got = received(tstack, "alpha")
    assert got["path"] == "/v1/chat/completions"
    assert got["body"] == {"model": "gpt-mock", "max_tokens": 100, "messages": [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello there"}]}
    assert "x-api-key" not in got["headers"], "the client's token never reaches a provider"
    assert wait_tokens(tstack, "gpt", before, 1) == {"requests": 1, "prompt_tokens": 40, "completion_tokens": 9}


def test_anthropic_sdk_streams_from_an_openai_provider(tstack):
    before = model_stats(tstack, "gpt")
    client = claude_client(tstack, **{"x-mock-usage": "30,5", "x-mock-chunks": "3"})
    with client.messages.stream(model="auto", max_tokens=50,
                                messages=[{"role": "user", "content": "stream please"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok0 tok1 tok2 "
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 5)
    got = received(tstack, "alpha")
    assert got["body"]["stream"] is True
    assert got["body"]["stream_options"] == {"include_usage": True}
    assert wait_tokens(tstack, "gpt", before, 1) == {"requests": 1, "prompt_tokens": 30, "completion_tokens": 5}


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_tool_use_through_an_openai_provider(tstack, stream):
    client = claude_client(tstack, **{"x-mock-tool-call": '{"city": "Paris"}'})
    args = dict(model="auto", max_tokens=64, tools=[WEATHER_TOOL_ANTHROPIC],
                tool_choice={"type": "any"},
                messages=[{"role": "user", "content": "weather in Paris?"}])
    if stream:
        with client.messages.stream(**args) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(**args)
    tools = [b for b in msg.content if b.type == "tool_use"]
    assert len(tools) == 1 and tools[0].name == "get_weather" and tools[0].input == {"city": "Paris"}
    assert msg.stop_reason == "tool_use"
    got = received(tstack, "alpha")["body"]
    assert got["tools"] == [WEATHER_TOOL_OPENAI]
    assert got["tool_choice"] == "required"

    # The tool result goes back as an OpenAI `tool` message.
    follow = client.messages.create(model="auto", max_tokens=64, tools=[WEATHER_TOOL_ANTHROPIC], messages=[
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": tools[0].id, "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tools[0].id, "content": "18C"}]},
    ])
    assert follow.content[0].type == "text"
    sent = received(tstack, "alpha")["body"]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": tools[0].id, "content": "18C"}


def test_anthropic_clients_get_anthropic_errors(tstack):
    client = claude_client(tstack, **{"x-mock-status": "429"})
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model="auto", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "rate_limit_error"
    # A field the OpenAI side has no equivalent for: a clear 400, in Anthropic's shape, never sent.
    r = requests.post(f"{tstack.url}/v1/messages", headers={"x-api-key": CLIENT_TOKEN}, timeout=10,
                      json={"model": "auto", "max_tokens": 8, "top_k": 5,
                            "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and "`top_k`" in r.json()["error"]["message"]


# --- OpenAI SDK → Anthropic-format provider ------------------------------------------------------

def test_openai_sdk_served_by_an_anthropic_provider(tstack):
    before = model_stats(tstack, "claude")
    client = openai_client(tstack, **{"x-mock-usage": "25,7"})
    r = client.chat.completions.create(model="claude", max_tokens=64, temperature=0.2, stop=["END"], messages=[
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hello claude"}])
    assert r.object == "chat.completion"
    assert r.choices[0].message.content == "mock reply from claude-mock"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (25, 7, 32)

    got = received(tstack, "beta")
    assert got["path"] == "/v1/messages"
    assert got["body"] == {"model": "claude-mock", "max_tokens": 64, "temperature": 0.2, "stop_sequences": ["END"],
                           "system": "Be terse.", "messages": [
                               {"role": "user", "content": [{"type": "text", "text": "hello claude"}]}]}
    assert got["headers"]["x-api-key"] == BETA_PROVIDER_KEY, "Envoy injects the Anthropic credential"
    assert got["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in got["headers"]
    assert wait_tokens(tstack, "claude", before, 1) == {"requests": 1, "prompt_tokens": 25, "completion_tokens": 7}


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_sdk_streams_from_an_anthropic_provider(tstack, include_usage):
    before = model_stats(tstack, "claude")
    client = openai_client(tstack, **{"x-mock-usage": "12,6", "x-mock-chunks": "3"})
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(client.chat.completions.create(
        model="auto", stream=True, messages=[{"role": "user", "content": "a poem please"}], **extra))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 "
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    if include_usage:
        assert [(u.prompt_tokens, u.completion_tokens) for u in usage] == [(12, 6)]
    else:
        assert usage == [] and all(c.choices for c in chunks)
    assert received(tstack, "beta")["body"]["stream"] is True
    assert wait_tokens(tstack, "claude", before, 1) == {"requests": 1, "prompt_tokens": 12, "completion_tokens": 6}


@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_tool_calls_through_an_anthropic_provider(tstack, stream):
    client = openai_client(tstack, **{"x-mock-tool-call": '{"city": "Lyon"}'})
    args = dict(model="claude", tools=[WEATHER_TOOL_OPENAI], tool_choice="required",
                messages=[{"role": "user", "content": "weather in Lyon?"}])
    if stream:
        calls: dict[int, dict] = {}
        finish = None
        for c in client.chat.completions.create(stream=True, **args):
            for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                slot["name"] = (tc.function.name if tc.function else None) or slot["name"]
                slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
            if c.choices and c.choices[0].finish_reason:
                finish = c.choices[0].finish_reason
        assert list(calls) == [0] and calls[0]["name"] == "get_weather"
        assert json.loads(calls[0]["arguments"]) == {"city": "Lyon"}
    else:
        r = client.chat.completions.create(**args)
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Lyon"}
        finish = r.choices[0].finish_reason
    assert finish == "tool_calls"
    got = received(tstack, "beta")["body"]
    assert got["tools"] == [WEATHER_TOOL_ANTHROPIC | {}] or got["tools"][0]["input_schema"] == WEATHER_TOOL_ANTHROPIC["input_schema"]
    assert got["tool_choice"] == {"type": "any"}


def test_openai_clients_get_openai_errors_from_an_anthropic_provider(tstack):
    client = openai_client(tstack, **{"x-mock-status": "529"})
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 529
    assert e.value.body["type"] == "overloaded_error"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="claude", n=3, messages=[{"role": "user", "content": "hi"}])
    assert "`n`" in e.value.body["message"]


# --- Usage on every stream -----------------------------------------------------------------------

def test_a_stream_without_include_usage_is_accounted_and_unchanged_for_the_client(tstack):
    before = model_stats(tstack, "gpt")
    r = requests.post(f"{tstack.url}/v1/chat/completions", stream=True, timeout=30,
                      headers={"authorization": f"Bearer {CLIENT_TOKEN}", "x-mock-usage": "77,4",
                               "x-mock-chunks": "4"},
                      json={"model": "gpt", "stream": True, "messages": [{"role": "user", "content": "count"}]})
    assert r.status_code == 200
    body = r.content.decode()
    events = [e for e in body.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert all(c["choices"] for c in chunks), "no usage-only chunk reaches a client that did not ask"
    assert all("usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "tok0 tok1 tok2 tok3 "
    got = received(tstack, "alpha")["body"]
    assert got["stream_options"] == {"include_usage": True}, "llmsoup asked for usage on the client's behalf"
    assert wait_tokens(tstack, "gpt", before, 1) == {"requests": 1, "prompt_tokens": 77, "completion_tokens": 4}


def test_a_provider_without_stream_usage_gets_streams_as_the_client_sent_them(tstack):
    # OpenAI client: the body reaches the provider without `stream_options`, the client gets the
    # stream exactly as the provider sent it.
    r = requests.post(f"{tstack.url}/v1/chat/completions", stream=True, timeout=30,
                      headers={"authorization": f"Bearer {CLIENT_TOKEN}", "x-mock-usage": "77,4",
                               "x-mock-chunks": "2"},
                      json={"model": "legacy", "stream": True, "messages": [{"role": "user", "content": "count"}]})
    assert r.status_code == 200, r.text
    events = [e for e in r.content.decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "tok0 tok1 "
    got = received(tstack, "alpha")["body"]
    assert got["model"] == "legacy-mock" and got["stream"] is True
    assert "stream_options" not in got, got
    # Anthropic client, translated: still no `stream_options`, and a complete Anthropic stream.
    with claude_client(tstack, **{"x-mock-chunks": "2"}).messages.stream(
            model="legacy", max_tokens=16, messages=[{"role": "user", "content": "count"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok0 tok1 " and final.stop_reason == "end_turn"
    got = received(tstack, "alpha")["body"]
    assert got["model"] == "legacy-mock" and "stream_options" not in got, got


def test_a_client_that_asked_for_usage_keeps_its_usage_chunk(tstack):
    client = openai_client(tstack, **{"x-mock-usage": "8,3"})
    chunks = list(client.chat.completions.create(model="gpt", stream=True, stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "hi"}]))
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 8


# --- Responses API and the model list ----------------------------------------------------------

def test_responses_api_item_lists_route_on_their_text_and_pass_through(tstack):
    payload = {"model": "auto", "instructions": "Be terse.", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "explain rust lifetimes"}]},
    ]}
    r = requests.post(f"{tstack.url}/v1/responses", json=payload, timeout=10,
                      headers={"authorization": f"Bearer {CLIENT_TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["x-llmsoup-model"] == "coder" and r.headers["x-llmsoup-decision"] == "coding"
    got = received(tstack, "alpha")
    assert got["path"] == "/v1/responses"
    assert got["body"] == {**payload, "model": "coder-mock"}, "passed through to an OpenAI-format provider"

    # An Anthropic provider has no Responses API: a clear 400 naming it, and nothing sent.
    before = len(requests.get(f"http://127.0.0.1:{tstack.ports['beta']}/mock/received", timeout=5).json())
    payload["input"][-1]["content"][0]["text"] = "write a poem"
    r = requests.post(f"{tstack.url}/v1/responses", json=payload, timeout=10,
                      headers={"authorization": f"Bearer {CLIENT_TOKEN}"})
    assert r.status_code == 400, r.text
    assert "provider `beta`" in r.json()["error"]["message"] and "/v1/responses" in r.json()["error"]["message"]
    assert len(requests.get(f"http://127.0.0.1:{tstack.ports['beta']}/mock/received", timeout=5).json()) == before


def sse_events(body: str) -> list[tuple[str, dict]]:
    """(event name, data) of every event of an SSE body."""
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields.get("event", ""), json.loads(fields["data"])))
    return events


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_responses_api_answers_are_accounted(tstack, stream):
    """The Responses API reports tokens as `input_tokens`/`output_tokens` (cached ones in
    `input_tokens_details`), and a stream only in `response.completed`: both reach /stats, and
    the client gets the provider's events unchanged (no `stream_options` is added: the Responses
    API has none)."""
    headers = {"authorization": f"Bearer {CLIENT_TOKEN}", "x-mock-usage": "33,6", "x-mock-cached-tokens": "5"}
    payload = {"model": "gpt", "input": "count to four", **({"stream": True} if stream else {})}
    before = settled_stats(tstack, "gpt")
    r = requests.post(f"{tstack.url}/v1/responses", json=payload, headers=headers, timeout=10, stream=stream)
    assert r.status_code == 200, r.text
    body = r.text
    got = received(tstack, "alpha")
    assert (got["path"], got["body"]) == ("/v1/responses", {**payload, "model": "gpt-mock"})
    if stream:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(body)
        names = [name for name, _ in events]
        assert names[0] == "response.created" and names[-1] == "response.completed", names
        assert all(data["type"] == name for name, data in events)
        text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
        final = events[-1][1]["response"]
    else:
        final = r.json()
        text = final["output"][0]["content"][0]["text"]
    assert final["object"] == "response" and final["status"] == "completed" and text
    assert (final["usage"]["input_tokens"], final["usage"]["output_tokens"]) == (33, 6)
    assert wait_tokens(tstack, "gpt", before, 1) == {"requests": 1, "prompt_tokens": 33, "completion_tokens": 6}
    assert model_stats(tstack, "gpt")["cached_tokens"] - before.get("cached_tokens", 0) == 5


def test_models_retrieve_is_answered_locally(tstack):
    client = openai_client(tstack)
    m = client.models.retrieve("claude")
    assert (m.id, m.owned_by) == ("claude", "beta")
    assert client.models.retrieve("auto").owned_by == "llmsoup"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    assert {m.id for m in client.models.list()} >= {"auto", "gpt", "claude", "coder"}
