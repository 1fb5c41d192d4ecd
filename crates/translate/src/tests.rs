use serde_json::{Value, json};

use super::*;

fn translate(from: Dialect, to: Dialect, body: Value) -> Result<(Value, Translation), ApiError> {
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let t = translate_request(from, to, body.to_string().as_bytes(), &model, true)?;
    assert_eq!(t.path, to.path());
    Ok((serde_json::from_slice(&t.body).unwrap(), t.translation))
}

/// Runs a whole body through a translator, split into the given chunks.
fn run(t: Translation, status: u16, sse: bool, chunks: &[&[u8]]) -> Vec<u8> {
    let mut r = ResponseTranslator::new(t, status, sse, 1_700_000_000);
    let mut out = Vec::new();
    for c in chunks {
        r.feed(c, &mut out);
    }
    r.finish(&mut out);
    out
}

/// The translation of `body` is the same whether it arrives whole, cut once at any byte, or
/// byte by byte.
fn split_invariant(t: Translation, body: &[u8]) -> Vec<u8> {
    let whole = run(t, 200, true, &[body]);
    for i in 0..=body.len() {
        assert_eq!(run(t, 200, true, &[&body[..i], &body[i..]]), whole, "cut at byte {i}");
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(run(t, 200, true, &bytes), whole, "byte by byte");
    for step in [2, 3, 7, 64] {
        let parts: Vec<&[u8]> = body.chunks(step).collect();
        assert_eq!(run(t, 200, true, &parts), whole, "chunks of {step}");
    }
    whole
}

/// Parsed SSE events: (event name, data as JSON or string).
fn events(body: &[u8]) -> Vec<(Option<String>, Value)> {
    let mut p = sse::SseParser::default();
    let mut out = Vec::new();
    let mut f = |e: &sse::Event<'_>| {
        if e.data.is_empty() {
            return;
        }
        let v =
            serde_json::from_slice(e.data).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(e.data).into()));
        out.push((e.name.map(str::to_string), v));
    };
    p.feed(body, &mut f);
    p.finish(&mut f);
    out
}

#[test]
fn anthropic_request_to_openai_chat() {
    let body = json!({
        "model": "gpt-x", "max_tokens": 300, "system": [{"type": "text", "text": "Be terse."}],
        "temperature": 0.3, "top_p": 0.9, "stop_sequences": ["END"], "stream": true,
        "metadata": {"user_id": "u-1"},
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "tu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": [{"type": "text", "text": "18C"}]}, {"type": "text", "text": "And tomorrow?"},
                                          {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
        ],
    });
    let (out, t) = translate(Dialect::AnthropicMessages, Dialect::OpenAiChat, body).unwrap();
    assert_eq!(t, Translation::AnthropicFromOpenAiChat);
    assert_eq!(
        out,
        json!({
            "model": "gpt-x", "max_tokens": 300, "temperature": 0.3, "top_p": 0.9, "stop": ["END"], "stream": true,
            "user": "u-1",
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "tu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "tu_1", "content": "18C"},
                {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            ],
            "parallel_tool_calls": false,
            "stream_options": {"include_usage": true},
        })
    );
}

#[test]
fn openai_chat_request_to_anthropic() {
    let body = json!({
        "model": "claude-x", "temperature": 0.5, "stop": "END", "user": "u-2", "n": 1,
        "stream": true, "stream_options": {"include_usage": true}, "parallel_tool_calls": false,
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "add"}},
        "messages": [
            {"role": "system", "content": "Sys one."},
            {"role": "developer", "content": [{"type": "text", "text": "Sys two."}]},
            {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":1}"}},
                {"id": "c2", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "1"},
            {"role": "tool", "tool_call_id": "c2", "content": "2"},
            {"role": "user", "content": "Sum?"},
        ],
    });
    let (out, t) = translate(Dialect::OpenAiChat, Dialect::AnthropicMessages, body).unwrap();
    assert_eq!(t, Translation::OpenAiChatFromAnthropic { include_usage: true });
    assert_eq!(
        out,
        json!({
            "model": "claude-x", "temperature": 0.5, "stop_sequences": ["END"], "metadata": {"user_id": "u-2"},
            "stream": true,
            "tools": [{"name": "add", "input_schema": {"type": "object"}}],
            "max_tokens": openai_chat_to_anthropic::DEFAULT_MAX_TOKENS,
            "system": "Sys one.\n\nSys two.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Look:"}, {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "c1", "name": "add", "input": {"a": 1}},
                    {"type": "tool_use", "id": "c2", "name": "add", "input": {"a": 2}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "1"},
                    {"type": "tool_result", "tool_use_id": "c2", "content": "2"},
                    {"type": "text", "text": "Sum?"}]},
            ],
            "tool_choice": {"type": "tool", "name": "add", "disable_parallel_tool_use": true},
        })
    );
}

#[test]
fn unsupported_fields_are_a_clear_400() {
    let cases = [
        (
            Dialect::OpenAiChat,
            json!({"model": "m", "messages": [], "n": 2}),
            "`n`",
        ),
        (
            Dialect::OpenAiChat,
            json!({"model": "m", "messages": [], "logit_bias": {"1": 2}}),
            "`logit_bias`",
        ),
        (
            Dialect::OpenAiChat,
            json!({"model": "m", "messages": [], "temperature": 1.5}),
            "between 0 and 1",
        ),
        (
            Dialect::OpenAiChat,
            json!({"model": "m", "messages": [], "response_format": {"type": "json_object"}}),
            "`response_format`",
        ),
        (
            Dialect::OpenAiChat,
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "input_audio",
        ),
        (
            Dialect::AnthropicMessages,
            json!({"model": "m", "max_tokens": 5, "messages": [], "top_k": 3}),
            "`top_k`",
        ),
        (
            Dialect::AnthropicMessages,
            json!({"model": "m", "max_tokens": 5, "messages": [], "thinking": {"type": "enabled", "budget_tokens": 1024}}),
            "`thinking`",
        ),
        (
            Dialect::AnthropicMessages,
            json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            "web_search",
        ),
        (
            Dialect::AnthropicMessages,
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]}),
            "document",
        ),
    ];
    for (from, body, needle) in cases {
        let to = if from == Dialect::OpenAiChat {
            Dialect::AnthropicMessages
        } else {
            Dialect::OpenAiChat
        };
        let e = translate(from, to, body.clone()).unwrap_err();
        assert_eq!((e.status, e.code), (400, Some("unsupported_parameter")), "{body}");
        assert!(e.message.contains(needle), "{}: {}", body, e.message);
    }
    let e = translate_request(Dialect::OpenAiChat, Dialect::AnthropicMessages, b"{oops", "m", true).unwrap_err();
    assert_eq!(e.code, Some("invalid_json"));
}

#[test]
fn json_responses_both_ways() {
    let openai = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "gpt-x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":1}"}}]}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19, "prompt_tokens_details": {"cached_tokens": 2}}});
    let out: Value = serde_json::from_slice(&run(
        Translation::AnthropicFromOpenAiChat,
        200,
        false,
        &[openai.to_string().as_bytes()],
    ))
    .unwrap();
    assert_eq!(
        out,
        json!({"id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-x",
               "content": [{"type": "text", "text": "Hi"}, {"type": "tool_use", "id": "c1", "name": "add", "input": {"a": 1}}],
               "stop_reason": "tool_use", "stop_sequence": null,
               "usage": {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 2}})
    );

    let anthropic = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Sure"}, {"type": "tool_use", "id": "tu_1", "name": "add", "input": {"a": 2}}],
        "stop_reason": "max_tokens", "stop_sequence": null,
        "usage": {"input_tokens": 9, "output_tokens": 4, "cache_read_input_tokens": 3}});
    let body = anthropic.to_string();
    let (a, b) = body.as_bytes().split_at(17);
    let t = Translation::OpenAiChatFromAnthropic { include_usage: false };
    let out: Value = serde_json::from_slice(&run(t, 200, false, &[a, b])).unwrap();
    assert_eq!(
        out,
        json!({"id": "msg_1", "object": "chat.completion", "created": 1_700_000_000u64, "model": "claude-x",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sure", "tool_calls": [
                   {"id": "tu_1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2}"}}]},
                   "logprobs": null, "finish_reason": "length"}],
               "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16, "prompt_tokens_details": {"cached_tokens": 3}}})
    );
}

#[test]
fn provider_errors_reach_the_client_in_its_own_shape() {
    let anthropic_err = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let out: Value = serde_json::from_slice(&run(
        Translation::OpenAiChatFromAnthropic { include_usage: false },
        529,
        false,
        &[anthropic_err],
    ))
    .unwrap();
    assert_eq!(
        out,
        json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": null}})
    );
    let openai_err = br#"{"error":{"message":"Rate limited","type":"rate_limit","param":null,"code":"429"}}"#;
    let out: Value =
        serde_json::from_slice(&run(Translation::AnthropicFromOpenAiChat, 429, false, &[openai_err])).unwrap();
    assert_eq!(
        out,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited"}})
    );
    // Already in the client's shape (an Envoy local reply): unchanged.
    let out = run(
        Translation::OpenAiChatFromAnthropic { include_usage: false },
        503,
        false,
        &[openai_err],
    );
    assert_eq!(out, openai_err);
    // Not JSON at all.
    let out: Value = serde_json::from_slice(&run(
        Translation::AnthropicFromOpenAiChat,
        502,
        false,
        &[b"<html>bad gateway</html>"],
    ))
    .unwrap();
    assert_eq!(out["type"], "error");
    assert!(out["error"]["message"].as_str().unwrap().contains("502"));
    // Usage stripping leaves errors and JSON alone.
    assert_eq!(run(Translation::StripUsageChunk, 429, false, &[openai_err]), openai_err);
}

const OPENAI_STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hé \"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"there\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"add\",\"arguments\":\"\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-x\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":5,\"total_tokens\":16}}\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn openai_stream_to_anthropic_events_split_anywhere() {
    let out = split_invariant(Translation::AnthropicFromOpenAiChat, OPENAI_STREAM.as_bytes());
    let ev = events(&out);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(ev[0].1["message"]["id"], "chatcmpl-9");
    assert_eq!(ev[2].1["delta"], json!({"type": "text_delta", "text": "Hé "}));
    assert_eq!(
        ev[5].1["content_block"],
        json!({"type": "tool_use", "id": "c1", "name": "add", "input": {}})
    );
    assert_eq!(
        ev[6].1,
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}})
    );
    assert_eq!(
        ev[9].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 5, "input_tokens": 11}})
    );
}

const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_7\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":21,\"output_tokens\":1}}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Bonjour\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"tu_1\",\"name\":\"add\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\": 1}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

#[test]
fn anthropic_stream_to_openai_chunks_split_anywhere() {
    for include_usage in [true, false] {
        let t = Translation::OpenAiChatFromAnthropic { include_usage };
        let out = split_invariant(t, ANTHROPIC_STREAM.as_bytes());
        let ev = events(&out);
        let deltas: Vec<Value> = ev
            .iter()
            .filter_map(|(_, v)| v.pointer("/choices/0/delta").cloned())
            .collect();
        assert_eq!(
            deltas,
            vec![
                json!({"role": "assistant", "content": ""}),
                json!({"content": "Bonjour"}),
                json!({"tool_calls": [{"index": 0, "id": "tu_1", "type": "function", "function": {"name": "add", "arguments": ""}}]}),
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\": 1}"}}]}),
                json!({}),
            ]
        );
        assert!(ev.iter().all(|(n, _)| n.is_none()), "OpenAI streams name no events");
        assert_eq!(ev[4].1["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(ev[0].1["id"], "msg_7");
        assert_eq!(ev.last().unwrap().1, json!("[DONE]"));
        let usage: Vec<&Value> = ev
            .iter()
            .filter_map(|(_, v)| v.get("usage").filter(|u| !u.is_null()))
            .collect();
        if include_usage {
            assert_eq!(
                usage,
                [
                    &json!({"prompt_tokens": 21, "completion_tokens": 15, "total_tokens": 36, "prompt_tokens_details": {"cached_tokens": 0}})
                ]
            );
            assert_eq!(ev[ev.len() - 2].1["choices"], json!([]));
        } else {
            assert!(usage.is_empty() && ev.iter().all(|(_, v)| v.get("usage").is_none()));
        }
    }
}

#[test]
fn a_cut_anthropic_stream_is_not_completed() {
    let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: message_delta").unwrap()];
    let out = run(
        Translation::OpenAiChatFromAnthropic { include_usage: true },
        200,
        true,
        &[cut.as_bytes()],
    );
    assert!(!String::from_utf8_lossy(&out).contains("[DONE]"));
}

#[test]
fn usage_chunk_stripped_and_everything_else_byte_for_byte() {
    let out = split_invariant(Translation::StripUsageChunk, OPENAI_STREAM.as_bytes());
    let want: String = OPENAI_STREAM
        .split_inclusive("\n\n")
        .filter(|e| !e.contains("\"choices\":[]"))
        .map(|e| e.replace(",\"usage\":null", ""))
        .collect();
    assert_eq!(String::from_utf8(out).unwrap(), want);
    // Servers that do not add `usage: null` (vLLM) pass untouched but for the usage chunk.
    let plain = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\n\r\n: comment\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n";
    let out = run(Translation::StripUsageChunk, 200, true, &[plain.as_bytes()]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\n\r\n: comment\n\ndata: [DONE]\n\n"
    );
}

#[test]
fn usage_is_asked_for_only_when_missing() {
    let ask = |b: &str| stream_usage::ask_for_usage(b.as_bytes()).map(|v| String::from_utf8(v).unwrap());
    assert_eq!(
        ask(r#"{"model":"m","stream":true,"messages":[]}"#).as_deref(),
        Some(r#"{"model":"m","stream":true,"messages":[],"stream_options":{"include_usage":true}}"#)
    );
    assert_eq!(
        ask(r#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#).as_deref(),
        Some(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#)
    );
    assert_eq!(
        ask(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#),
        None
    );
    assert_eq!(ask(r#"{"model":"m","stream":false}"#), None);
    assert_eq!(ask(r#"{"model":"m"}"#), None);
}

#[test]
fn an_openai_stream_error_becomes_an_anthropic_error_event() {
    let body = b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
    let ev = events(&run(Translation::AnthropicFromOpenAiChat, 200, true, &[body]));
    assert_eq!(
        ev,
        vec![(
            Some("error".into()),
            json!({"type": "error", "error": {"type": "api_error", "message": "boom"}})
        )]
    );
}

#[test]
fn a_provider_without_stream_options_is_not_asked_for_usage() {
    let body = json!({"model": "m", "max_tokens": 16, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let sent = |stream_usage: bool| -> Value {
        let t = translate_request(
            Dialect::AnthropicMessages,
            Dialect::OpenAiChat,
            body.to_string().as_bytes(),
            "m",
            stream_usage,
        )
        .unwrap();
        serde_json::from_slice(&t.body).unwrap()
    };
    assert_eq!(sent(true)["stream_options"], json!({"include_usage": true}));
    let not = sent(false);
    assert!(not.get("stream_options").is_none(), "{not}");
    assert_eq!(not["stream"], json!(true));
}
