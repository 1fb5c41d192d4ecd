//! `fast_response`: the gateway answers in the client's API shape and the request never reaches
//! a model. A 2xx status answers as the assistant (JSON, or SSE when the client streams); a 4xx/5xx
//! status answers with the API's error body (that is how decisions block requests).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Api;
use crate::config::FastResponsePlugin;
use llmsoup_contract::ApiError;
use llmsoup_contract::outcome::Reply;

static SEQ: AtomicU64 = AtomicU64::new(0);

fn ids() -> (u64, String) {
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    (created, format!("{created:x}{n:06x}"))
}

/// Whether the reply blocks the request (an error status) rather than answering it.
pub fn blocks(plugin: &FastResponsePlugin) -> bool {
    plugin.status >= 400
}

/// The local reply for a request in `api` shape; `model` names the answering model.
pub fn reply(plugin: &FastResponsePlugin, api: Api, stream: bool, model: &str) -> Reply {
    let status = plugin.status;
    if blocks(plugin) {
        let error = ApiError {
            status,
            message: plugin.message.clone(),
            kind: "invalid_request_error",
            param: None,
            code: Some("request_blocked"),
        };
        let body = match api {
            Api::OpenAi => error.to_json(),
            Api::Anthropic => error.to_anthropic_json(),
        };
        return Reply {
            status,
            headers: vec![("content-type", "application/json".into())],
            body,
        };
    }
    let (created, id) = ids();
    let (content_type, body) = match (api, stream) {
        (Api::OpenAi, false) => (
            "application/json",
            json!({
                "id": format!("chatcmpl-llmsoup-{id}"),
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": plugin.message},
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            })
            .to_string()
            .into_bytes(),
        ),
        (Api::OpenAi, true) => {
            let id = format!("chatcmpl-llmsoup-{id}");
            let chunk = |delta: Value, finish: Value| {
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            let mut out = String::new();
            for event in [
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chunk(json!({"content": plugin.message}), Value::Null),
                chunk(json!({}), json!("stop")),
            ] {
                out.push_str("data: ");
                out.push_str(&event.to_string());
                out.push_str("\n\n");
            }
            out.push_str("data: [DONE]\n\n");
            ("text/event-stream", out.into_bytes())
        }
        (Api::Anthropic, false) => (
            "application/json",
            json!({
                "id": format!("msg_llmsoup_{id}"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": plugin.message}],
                "stop_reason": "end_turn",
                "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            })
            .to_string()
            .into_bytes(),
        ),
        (Api::Anthropic, true) => {
            let events = [
                (
                    "message_start",
                    json!({"type": "message_start", "message": {
                    "id": format!("msg_llmsoup_{id}"), "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0}}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": plugin.message}}),
                ),
                ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
                (
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 0}}),
                ),
                ("message_stop", json!({"type": "message_stop"})),
            ];
            let mut out = String::new();
            for (name, data) in events {
                out.push_str("event: ");
                out.push_str(name);
                out.push_str("\ndata: ");
                out.push_str(&data.to_string());
                out.push_str("\n\n");
            }
            ("text/event-stream", out.into_bytes())
        }
    };
    let mut headers = vec![("content-type", content_type.to_string())];
    if stream {
        headers.push(("cache-control", "no-cache".into()));
    }
    Reply { status, headers, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(status: u16) -> FastResponsePlugin {
        FastResponsePlugin {
            message: "I can't help with that.".into(),
            status,
        }
    }

    fn sse_data(body: &[u8]) -> Vec<String> {
        String::from_utf8(body.to_vec())
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).map(str::to_string))
            .collect()
    }

    #[test]
    fn openai_json() {
        let r = reply(&plugin(200), Api::OpenAi, false, "guard");
        assert_eq!(r.status, 200);
        assert_eq!(r.headers[0], ("content-type", "application/json".to_string()));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "guard");
        assert_eq!(v["choices"][0]["message"]["content"], "I can't help with that.");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let again: Value = serde_json::from_slice(&reply(&plugin(200), Api::OpenAi, false, "guard").body).unwrap();
        assert_ne!(v["id"], again["id"], "ids are unique");
    }

    #[test]
    fn openai_stream_ends_with_done() {
        let r = reply(&plugin(200), Api::OpenAi, true, "guard");
        assert_eq!(r.headers[0].1, "text/event-stream");
        let data = sse_data(&r.body);
        assert_eq!(data.last().unwrap(), "[DONE]");
        let text: String = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
            .collect();
        assert_eq!(text, "I can't help with that.");
        let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn anthropic_shapes() {
        let v: Value = serde_json::from_slice(&reply(&plugin(200), Api::Anthropic, false, "g").body).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["content"][0]["text"], "I can't help with that.");
        let r = reply(&plugin(200), Api::Anthropic, true, "g");
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.starts_with("event: message_start\n"));
        assert!(text.trim_end().ends_with(r#"data: {"type":"message_stop"}"#));
        assert!(text.contains(r#""text":"I can't help with that.""#));
    }

    #[test]
    fn error_statuses_block_with_the_api_error_body() {
        let r = reply(&plugin(403), Api::OpenAi, true, "g");
        assert_eq!(r.status, 403);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["message"], "I can't help with that.");
        assert_eq!(v["error"]["code"], "request_blocked");
        let v: Value = serde_json::from_slice(&reply(&plugin(403), Api::Anthropic, false, "g").body).unwrap();
        assert_eq!(v["error"]["type"], "permission_error");
        assert!(blocks(&plugin(451)) && !blocks(&plugin(200)));
    }
}
