//! An Anthropic Messages client served by an OpenAI Chat Completions provider: the request
//! `POST /v1/messages` becomes `POST /v1/chat/completions`; the response (JSON, SSE chunks, errors)
//! comes back as Anthropic Messages.

use serde_json::{Map, Value, json};

use crate::sse::{self, Event};
use crate::{ApiError, Obj, reject, unsupported};

/// The request, translated: an OpenAI Chat Completions body. Streams ask for usage, which
/// Anthropic clients get natively (`message_start` / `message_delta`), unless the provider does
/// not take `stream_options` (`stream_usage` false: the stream then reports zero tokens).
pub fn request(body: Obj, stream_usage: bool) -> Result<Value, ApiError> {
    let mut out = Map::new();
    let mut messages: Vec<Value> = Vec::new();
    let mut stream = false;
    let mut parallel: Option<bool> = None;
    let mut system = None;
    let mut raw_messages = None;
    for (key, value) in body {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "temperature" | "top_p" => {
                out.insert(key, value);
            }
            "max_tokens" => {
                out.insert("max_tokens".into(), value);
            }
            "stop_sequences" => {
                out.insert("stop".into(), value);
            }
            "stream" => {
                stream = value.as_bool().unwrap_or(false);
                out.insert(key, value);
            }
            "system" => system = Some(value),
            "messages" => raw_messages = Some(value),
            "metadata" => {
                if let Some(user) = value.get("user_id").and_then(Value::as_str) {
                    out.insert("user".into(), json!(user));
                }
            }
            "tools" => {
                let tools = value
                    .as_array()
                    .ok_or_else(|| reject("tools", "`tools` must be an array"))?;
                let tools = tools.iter().map(tool).collect::<Result<Vec<_>, _>>()?;
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => {
                let (choice, disable_parallel) = tool_choice(&value)?;
                if let Some(c) = choice {
                    out.insert("tool_choice".into(), c);
                }
                if disable_parallel {
                    parallel = Some(false);
                }
            }
            "thinking" if value.get("type").and_then(Value::as_str) == Some("disabled") => {}
            // A caching hint; the provider's own prompt caching applies instead.
            "service_tier" if value.as_str() == Some("auto") => {}
            other => return Err(unsupported(other, "Anthropic Messages", "OpenAI Chat Completions")),
        }
    }
    if let Some(system) = system {
        let text = text_of(&system, "system")?;
        messages.push(json!({"role": "system", "content": text}));
    }
    let raw_messages = raw_messages.ok_or_else(|| reject("messages", "`messages` is required"))?;
    let raw_messages = raw_messages
        .as_array()
        .ok_or_else(|| reject("messages", "`messages` must be an array"))?;
    for m in raw_messages {
        message(m, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(p) = parallel {
        out.insert("parallel_tool_calls".into(), json!(p));
    }
    if stream && stream_usage {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

/// The text of a `system` value or of a tool result: a string, or text blocks joined.
fn text_of(v: &Value, param: &'static str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = String::new();
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if !out.is_empty() {
                            out.push('\n');
                        }
                        out.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default());
                    }
                    other => {
                        return Err(reject(
                            param,
                            format!(
                                "`{}` content blocks cannot be sent to an OpenAI Chat Completions provider here",
                                other.unwrap_or("untyped")
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(reject(
            param,
            format!("`{param}` must be a string or an array of text blocks"),
        )),
    }
}

fn tool(t: &Value) -> Result<Value, ApiError> {
    if let Some(kind) = t.get("type").and_then(Value::as_str)
        && kind != "custom"
    {
        return Err(reject(
            "tools",
            format!("the server tool `{kind}` is not available from an OpenAI Chat Completions provider"),
        ));
    }
    let name = t
        .get("name")
        .cloned()
        .ok_or_else(|| reject("tools", "every tool needs a `name`"))?;
    let mut f = Map::new();
    f.insert("name".into(), name);
    if let Some(d) = t.get("description") {
        f.insert("description".into(), d.clone());
    }
    f.insert(
        "parameters".into(),
        t.get("input_schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object"})),
    );
    Ok(json!({"type": "function", "function": f}))
}

/// Anthropic `tool_choice` → OpenAI's, and whether parallel tool use is disabled.
fn tool_choice(v: &Value) -> Result<(Option<Value>, bool), ApiError> {
    let disable = v
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let choice = match v.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| reject("tool_choice", "`tool_choice` of type `tool` needs a `name`"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(reject(
                "tool_choice",
                "`tool_choice.type` must be auto, any, tool or none",
            ));
        }
    };
    Ok((Some(choice), disable))
}

/// One Anthropic message → one or more OpenAI messages (tool results become `tool` messages).
fn message(m: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
    if role != "user" && role != "assistant" {
        return Err(reject("messages", "`messages[].role` must be user or assistant"));
    }
    let content = m.get("content").unwrap_or(&Value::Null);
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => return Err(reject("messages", "`messages[].content` must be a string or an array")),
    };
    if role == "assistant" {
        let mut text = String::new();
        let mut calls = Vec::new();
        for b in blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
                Some("tool_use") => {
                    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                    calls.push(json!({
                        "id": b.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {"name": b.get("name").cloned().unwrap_or(Value::Null), "arguments": input.to_string()},
                    }));
                }
                // The model's earlier reasoning: only meaningful to the model that wrote it.
                Some("thinking" | "redacted_thinking") => {}
                other => return Err(block_error(other)),
            }
        }
        let mut msg = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        out.push(msg);
        return Ok(());
    }
    let mut parts = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or(json!(""))})),
            Some("image") => parts.push(image(b)?),
            Some("tool_result") => {
                // Results answer the previous assistant turn's calls: they come first, in order.
                let content = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => text_of(c, "messages")?,
                };
                let content = if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                    format!("Error: {content}")
                } else {
                    content
                };
                out.push(json!({"role": "tool", "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::Null), "content": content}));
            }
            other => return Err(block_error(other)),
        }
    }
    if !parts.is_empty() {
        // Plain text stays a string, the shape every OpenAI-compatible server accepts.
        let content = if parts.iter().all(|p| p["type"] == "text") {
            let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            json!(texts.join("\n"))
        } else {
            Value::Array(parts)
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn block_error(kind: Option<&str>) -> ApiError {
    reject(
        "messages",
        format!(
            "`{}` content blocks cannot be sent to an OpenAI Chat Completions provider",
            kind.unwrap_or("untyped")
        ),
    )
}

fn image(b: &Value) -> Result<Value, ApiError> {
    let source = b.get("source").unwrap_or(&Value::Null);
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
            source.get("data").and_then(Value::as_str).unwrap_or_default()
        ),
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => return Err(reject("messages", "image blocks need a base64 or url `source`")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's usage from OpenAI's: `input_tokens` excludes what was read from the cache.
fn usage(u: Option<&Value>) -> Value {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let prompt = n(u.and_then(|u| u.get("prompt_tokens")));
    let cached = n(u.and_then(|u| u.pointer("/prompt_tokens_details/cached_tokens")));
    let output = n(u.and_then(|u| u.get("completion_tokens")));
    let mut usage = json!({"input_tokens": prompt.saturating_sub(cached), "output_tokens": output});
    if cached > 0 {
        usage["cache_read_input_tokens"] = json!(cached);
    }
    usage
}

/// A chat completion → an Anthropic message.
pub fn response(body: &Value) -> Option<Value> {
    let choice = body.get("choices")?.get(0)?;
    let msg = choice.get("message")?;
    let mut content = Vec::new();
    if let Some(text) = msg.get("content").and_then(Value::as_str)
        && !text.is_empty()
    {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in msg.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        content.push(tool_use(call));
    }
    Some(json!({
        "id": body.get("id").cloned().unwrap_or(json!("msg_llmsoup")),
        "type": "message",
        "role": "assistant",
        "model": body.get("model").cloned().unwrap_or(Value::Null),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": usage(body.get("usage")),
    }))
}

fn tool_use(call: &Value) -> Value {
    let f = call.get("function").unwrap_or(&Value::Null);
    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
    // Arguments a model produced that are not JSON are kept as a string rather than lost.
    let input = serde_json::from_str::<Value>(if args.trim().is_empty() { "{}" } else { args })
        .unwrap_or_else(|_| json!({"arguments": args}));
    json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or(Value::Null), "name": f.get("name").cloned().unwrap_or(Value::Null), "input": input})
}

/// What the open content block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    /// A tool call, by its OpenAI `index`.
    Tool(u64),
}

/// The SSE state machine: OpenAI chunks in, Anthropic events out, event by event.
#[derive(Debug, Default)]
pub struct Stream {
    started: bool,
    done: bool,
    /// The open block and its Anthropic index.
    open: Option<(Block, u64)>,
    next_index: u64,
    finish: Option<String>,
    usage: Option<Value>,
}

impl Stream {
    /// One upstream event.
    pub fn on_event(&mut self, e: &Event<'_>, out: &mut Vec<u8>) {
        if self.done || e.data.is_empty() {
            return;
        }
        if e.data == b"[DONE]" {
            return self.end(out);
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(e.data) else {
            return;
        };
        if let Some(err) = chunk.get("error") {
            let message = err.get("message").and_then(Value::as_str).unwrap_or("upstream error");
            let body = json!({"type": "error", "error": {"type": "api_error", "message": message}});
            sse::write_event(out, "error", body.to_string().as_bytes());
            self.done = true;
            return;
        }
        if !self.started {
            self.started = true;
            let start = json!({"type": "message_start", "message": {
                "id": chunk.get("id").cloned().unwrap_or(json!("msg_llmsoup")),
                "type": "message", "role": "assistant",
                "model": chunk.get("model").cloned().unwrap_or(Value::Null),
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }});
            sse::write_event(out, "message_start", start.to_string().as_bytes());
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta.get("content").and_then(Value::as_str)
            && !text.is_empty()
        {
            let index = self.open_block(Block::Text, out, || json!({"type": "text", "text": ""}));
            let d =
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}});
            sse::write_event(out, "content_block_delta", d.to_string().as_bytes());
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let i = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let f = call.get("function").unwrap_or(&Value::Null);
            let index = self.open_block(Block::Tool(i), out, || {
                json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or(Value::Null),
                       "name": f.get("name").cloned().unwrap_or(Value::Null), "input": {}})
            });
            if let Some(args) = f.get("arguments").and_then(Value::as_str)
                && !args.is_empty()
            {
                let d = json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}});
                sse::write_event(out, "content_block_delta", d.to_string().as_bytes());
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
        }
    }

    /// Opens `block` unless it is the open one; returns its Anthropic index.
    fn open_block(&mut self, block: Block, out: &mut Vec<u8>, start: impl FnOnce() -> Value) -> u64 {
        if let Some((b, i)) = self.open
            && b == block
        {
            return i;
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        let e = json!({"type": "content_block_start", "index": index, "content_block": start()});
        sse::write_event(out, "content_block_start", e.to_string().as_bytes());
        self.open = Some((block, index));
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            let e = json!({"type": "content_block_stop", "index": index});
            sse::write_event(out, "content_block_stop", e.to_string().as_bytes());
        }
    }

    /// `[DONE]` (or the end of the body): close the message with its stop reason and usage.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.done || !self.started {
            self.done = true;
            return;
        }
        self.done = true;
        self.close_block(out);
        let mut u = usage(self.usage.as_ref());
        // Newer Anthropic streams repeat the input count here; SDKs read it when present.
        let output = u["output_tokens"].take();
        let delta = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null},
            "usage": {"output_tokens": output, "input_tokens": u["input_tokens"]}});
        sse::write_event(out, "message_delta", delta.to_string().as_bytes());
        sse::write_event(out, "message_stop", br#"{"type":"message_stop"}"#);
    }

    /// The upstream body ended. Servers that finished the message but sent no `[DONE]` still
    /// close it; a stream cut before its finish reason is left cut, so the client sees it.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finish.is_some() {
            self.end(out);
        }
        self.done = true;
    }
}
