//! The mock's Anthropic Messages dialect (`POST .../messages`): a message as JSON, or the SSE
//! event sequence Anthropic sends (`message_start`, `ping`, `content_block_start` / `_delta` /
//! `_stop` for text and for a `tool_use` with `input_json_delta`, `message_delta` with the usage,
//! `message_stop`), echoing what it received in `message.mock`. Errors are Anthropic-shaped.

use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::{Body, Reply, full, named_events};

/// An Anthropic-shaped error.
pub(super) fn error(status: StatusCode, message: &str) -> Response<Body> {
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    full(status, "application/json", body.to_string().into_bytes())
}

/// The answer to a Messages request.
pub(super) fn respond(r: Reply) -> Response<Body> {
    let id = format!("msg_mock_{}", r.n);
    let tool = r.tool_call.as_ref().and_then(|args| {
        let name = r.request.pointer("/tools/0/name")?.as_str()?.to_string();
        Some((format!("toolu_mock_{}", r.n), name, args.clone()))
    });
    let stop_reason = if tool.is_some() { "tool_use" } else { "end_turn" };
    let usage = json!({"input_tokens": r.prompt_tokens, "output_tokens": r.completion_tokens});
    let stream = r.request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !stream {
        let mut content = vec![json!({"type": "text", "text": r.content})];
        if let Some((tid, name, args)) = &tool {
            let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
            content.push(json!({"type": "tool_use", "id": tid, "name": name, "input": input}));
        }
        let body = json!({
            "id": id, "type": "message", "role": "assistant", "model": r.model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": null, "usage": usage, "mock": r.echo,
        });
        return full(StatusCode::OK, "application/json", body.to_string().into_bytes());
    }
    let mut events: Vec<(&str, Value)> = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": r.model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": r.prompt_tokens, "output_tokens": 1}, "mock": r.echo}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for i in 0..r.chunks {
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": format!("tok{i} ")}}),
        ));
    }
    events.push(("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    if let Some((tid, name, args)) = &tool {
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": tid, "name": name, "input": {}}}),
        ));
        // Anthropic streams tool input as partial JSON: two pieces, cut mid-value.
        let cut = args.len() / 2;
        let cut = (0..=cut).rev().find(|&i| args.is_char_boundary(i)).unwrap_or(0);
        for part in [&args[..cut], &args[cut..]] {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        events.push(("content_block_stop", json!({"type": "content_block_stop", "index": 1})));
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": r.completion_tokens}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    named_events(events, r.delay)
}
