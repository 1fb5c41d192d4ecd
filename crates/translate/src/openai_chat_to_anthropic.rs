//! An OpenAI Chat Completions client served by an Anthropic Messages provider: the request
//! `POST /v1/chat/completions` becomes `POST /v1/messages`; the response (JSON, SSE events,
//! errors) comes back as OpenAI Chat Completions.

use serde_json::{Map, Value, json};

use crate::sse::{self, Event};
use crate::{ApiError, Obj, reject, unsupported};

/// `max_tokens` is required by Anthropic and optional for OpenAI clients: what a request without
/// one gets.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The translated request, and whether the client asked for the usage chunk of a stream.
pub struct Translated {
    /// The Anthropic Messages body.
    pub body: Value,
    /// `stream_options.include_usage` was set.
    pub include_usage: bool,
}

/// The request, translated to Anthropic Messages.
pub fn request(body: Obj) -> Result<Translated, ApiError> {
    let mut out = Map::new();
    let mut include_usage = false;
    let mut max_tokens = None;
    let mut tool_choice = None;
    let mut parallel = None;
    let mut raw_messages = None;
    for (key, value) in body {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" | "top_p" | "stream" => {
                out.insert(key, value);
            }
            "temperature" => {
                // Anthropic's range is 0–1; OpenAI's goes to 2. Rescaling would change the meaning.
                if value.as_f64().is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                    return Err(reject(
                        "temperature",
                        "`temperature` must be between 0 and 1 for a model served by an Anthropic provider",
                    ));
                }
                out.insert(key, value);
            }
            "max_tokens" | "max_completion_tokens" => max_tokens = Some(value),
            "stop" => {
                let stops = match value {
                    Value::String(s) => vec![Value::String(s)],
                    Value::Array(a) => a,
                    _ => return Err(reject("stop", "`stop` must be a string or an array of strings")),
                };
                out.insert("stop_sequences".into(), Value::Array(stops));
            }
            "stream_options" => {
                include_usage = value.get("include_usage").and_then(Value::as_bool).unwrap_or(false);
            }
            "user" => {
                out.insert("metadata".into(), json!({"user_id": value}));
            }
            "messages" => raw_messages = Some(value),
            "tools" => {
                let tools = value
                    .as_array()
                    .ok_or_else(|| reject("tools", "`tools` must be an array"))?;
                let tools = tools.iter().map(tool).collect::<Result<Vec<_>, _>>()?;
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => tool_choice = Some(value),
            "parallel_tool_calls" => parallel = value.as_bool(),
            // Defaults that change nothing.
            "n" if value.as_u64() == Some(1) => {}
            "logprobs" if value == json!(false) => {}
            "presence_penalty" | "frequency_penalty" if value.as_f64() == Some(0.0) => {}
            "response_format" if value.get("type").and_then(Value::as_str) == Some("text") => {}
            other => return Err(unsupported(other, "OpenAI Chat Completions", "Anthropic Messages")),
        }
    }
    let max_tokens = match max_tokens {
        Some(v) => v,
        None => json!(DEFAULT_MAX_TOKENS),
    };
    out.insert("max_tokens".into(), max_tokens);
    let raw_messages = raw_messages.ok_or_else(|| reject("messages", "`messages` is required"))?;
    let raw_messages = raw_messages
        .as_array()
        .ok_or_else(|| reject("messages", "`messages` must be an array"))?;
    let (system, messages) = messages(raw_messages)?;
    if !system.is_empty() {
        out.insert("system".into(), json!(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    let choice = match tool_choice {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            _ => {
                return Err(reject(
                    "tool_choice",
                    "`tool_choice` must be auto, required, none or a function",
                ));
            }
        }),
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| reject("tool_choice", "`tool_choice` must name a function"))?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    let choice = match (choice, parallel) {
        (Some(mut c), Some(false)) if c["type"] != "none" => {
            c["disable_parallel_tool_use"] = json!(true);
            Some(c)
        }
        (None, Some(false)) if out.contains_key("tools") => {
            Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
        }
        (c, _) => c,
    };
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(Translated {
        body: Value::Object(out),
        include_usage,
    })
}

fn tool(t: &Value) -> Result<Value, ApiError> {
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(reject(
            "tools",
            "only `function` tools can be sent to an Anthropic provider",
        ));
    }
    let f = t
        .get("function")
        .ok_or_else(|| reject("tools", "every tool needs a `function`"))?;
    if f.get("strict").and_then(Value::as_bool) == Some(true) {
        return Err(reject(
            "tools",
            "`strict` function schemas are not enforced by Anthropic providers",
        ));
    }
    let mut out = Map::new();
    out.insert(
        "name".into(),
        f.get("name")
            .cloned()
            .ok_or_else(|| reject("tools", "every function needs a `name`"))?,
    );
    if let Some(d) = f.get("description") {
        out.insert("description".into(), d.clone());
    }
    out.insert(
        "input_schema".into(),
        f.get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    );
    Ok(Value::Object(out))
}

/// OpenAI messages → Anthropic's `system` text and user/assistant turns.
fn messages(raw: &[Value]) -> Result<(String, Vec<Value>), ApiError> {
    let mut system = String::new();
    let mut out: Vec<Value> = Vec::new();
    for m in raw {
        if m.get("name").is_some_and(|n| !n.is_null()) {
            return Err(reject(
                "messages",
                "`messages[].name` is not supported by Anthropic providers",
            ));
        }
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                if !system.is_empty() {
                    system.push_str("\n\n");
                }
                system.push_str(&text_of(content)?);
            }
            "user" => push_turn(&mut out, "user", user_blocks(content)?),
            "assistant" => {
                let mut blocks = Vec::new();
                match content {
                    Value::Null => {}
                    Value::String(s) if s.is_empty() => {}
                    c => blocks.push(json!({"type": "text", "text": text_of(c)?})),
                }
                for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let f = call.get("function").unwrap_or(&Value::Null);
                    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                    let input: Value = serde_json::from_str(if args.trim().is_empty() { "{}" } else { args })
                        .map_err(|_| reject("messages", "`tool_calls[].function.arguments` must be a JSON object"))?;
                    blocks.push(
                        json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or(Value::Null),
                                        "name": f.get("name").cloned().unwrap_or(Value::Null), "input": input}),
                    );
                }
                if m.get("function_call").is_some_and(|f| !f.is_null()) {
                    return Err(reject(
                        "messages",
                        "legacy `function_call` messages are not supported; use `tool_calls`",
                    ));
                }
                push_turn(&mut out, "assistant", blocks);
            }
            "tool" => {
                let block = json!({"type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "content": text_of(content)?});
                // Consecutive tool results answer one assistant turn: one user turn holds them.
                push_turn(&mut out, "user", vec![block]);
            }
            other => {
                return Err(reject(
                    "messages",
                    format!("messages with role `{other}` cannot be sent to an Anthropic provider"),
                ));
            }
        }
    }
    Ok((system, out))
}

/// Appends blocks to the last turn when it has the same role (Anthropic alternates roles).
fn push_turn(out: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if let Some(last) = out.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        // Tool results must come first in a user turn.
        let (results, rest): (Vec<Value>, Vec<Value>) = blocks.into_iter().partition(|b| b["type"] == "tool_result");
        let at = content.iter().take_while(|b| b["type"] == "tool_result").count();
        content.splice(at..at, results);
        content.extend(rest);
        return;
    }
    out.push(json!({"role": role, "content": blocks}));
}

/// A content value's text: a string, or text parts joined.
fn text_of(content: &Value) -> Result<String, ApiError> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => out.push_str(p.get("text").and_then(Value::as_str).unwrap_or_default()),
                    other => {
                        return Err(reject(
                            "messages",
                            format!(
                                "`{}` parts are only supported in user messages",
                                other.unwrap_or("untyped")
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(reject("messages", "`content` must be a string or an array of parts")),
    }
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({"type": "text", "text": p.get("text").cloned().unwrap_or(json!(""))})),
                Some("image_url") => {
                    let url = p
                        .pointer("/image_url/url")
                        .and_then(Value::as_str)
                        .ok_or_else(|| reject("messages", "`image_url` parts need a `url`"))?;
                    Ok(image(url))
                }
                other => Err(reject(
                    "messages",
                    format!(
                        "`{}` parts cannot be sent to an Anthropic provider",
                        other.unwrap_or("untyped")
                    ),
                )),
            })
            .collect(),
        _ => Err(reject(
            "messages",
            "user `content` must be a string or an array of parts",
        )),
    }
}

fn image(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media, data)) = rest.split_once(";base64,")
    {
        return json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// OpenAI usage from Anthropic's: prompt tokens include what was read from or written to the cache.
fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Value {
    let prompt = input + cache_read + cache_write;
    json!({"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
           "prompt_tokens_details": {"cached_tokens": cache_read}})
}

fn n(v: Option<&Value>, key: &str) -> u64 {
    v.and_then(|v| v.get(key)).and_then(Value::as_u64).unwrap_or(0)
}

/// An Anthropic message → a chat completion.
pub fn response(body: &Value, created: u64) -> Option<Value> {
    let content = body.get("content")?.as_array()?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in content {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(Value::Null), "type": "function",
                "function": {"name": b.get("name").cloned().unwrap_or(Value::Null),
                             "arguments": b.get("input").cloned().unwrap_or(json!({})).to_string()},
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let u = body.get("usage");
    Some(json!({
        "id": body.get("id").cloned().unwrap_or(json!("chatcmpl-llmsoup")),
        "object": "chat.completion",
        "created": created,
        "model": body.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish_reason(body.get("stop_reason").and_then(Value::as_str))}],
        "usage": usage(n(u, "input_tokens"), n(u, "output_tokens"), n(u, "cache_read_input_tokens"), n(u, "cache_creation_input_tokens")),
    }))
}

/// The SSE state machine: Anthropic events in, OpenAI chunks out, event by event.
#[derive(Debug)]
pub struct Stream {
    include_usage: bool,
    created: u64,
    id: Value,
    model: Value,
    /// Anthropic block index → OpenAI tool-call index, for tool_use blocks.
    tools: Vec<(u64, u64)>,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    done: bool,
}

impl Stream {
    /// A stream for a client that did (or did not) ask for the usage chunk.
    pub fn new(include_usage: bool, created: u64) -> Self {
        Stream {
            include_usage,
            created,
            id: json!("chatcmpl-llmsoup"),
            model: Value::Null,
            tools: Vec::new(),
            input: 0,
            output: 0,
            cache_read: 0,
            cache_write: 0,
            done: false,
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        let mut c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                           "model": self.model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        sse::write_data(out, c.to_string().as_bytes());
    }

    fn take_usage(&mut self, u: &Value) {
        let set = |key: &str, slot: &mut u64| {
            if let Some(v) = u.get(key).and_then(Value::as_u64) {
                *slot = v;
            }
        };
        set("input_tokens", &mut self.input);
        set("output_tokens", &mut self.output);
        set("cache_read_input_tokens", &mut self.cache_read);
        set("cache_creation_input_tokens", &mut self.cache_write);
    }

    /// One upstream event.
    pub fn on_event(&mut self, e: &Event<'_>, out: &mut Vec<u8>) {
        if self.done || e.data.is_empty() {
            return;
        }
        let Ok(ev) = serde_json::from_slice::<Value>(e.data) else {
            return;
        };
        let kind = ev.get("type").and_then(Value::as_str).or(e.name).unwrap_or_default();
        match kind {
            "message_start" => {
                let m = ev.get("message").unwrap_or(&Value::Null);
                if let Some(id) = m.get("id") {
                    self.id = id.clone();
                }
                self.model = m.get("model").cloned().unwrap_or(Value::Null);
                if let Some(u) = m.get("usage") {
                    self.take_usage(u);
                }
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            "content_block_start" => {
                let b = ev.get("content_block").unwrap_or(&Value::Null);
                if b.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let call = self.tools.len() as u64;
                    self.tools.push((index, call));
                    let d = json!({"tool_calls": [{"index": call, "id": b.get("id").cloned().unwrap_or(Value::Null), "type": "function",
                                                    "function": {"name": b.get("name").cloned().unwrap_or(Value::Null), "arguments": ""}}]});
                    self.chunk(out, d, None);
                }
            }
            "content_block_delta" => {
                let d = ev.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = d.get("text").cloned().unwrap_or(json!(""));
                        self.chunk(out, json!({"content": text}), None);
                    }
                    Some("input_json_delta") => {
                        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(&(_, call)) = self.tools.iter().find(|(b, _)| *b == index) {
                            let args = d.get("partial_json").cloned().unwrap_or(json!(""));
                            self.chunk(
                                out,
                                json!({"tool_calls": [{"index": call, "function": {"arguments": args}}]}),
                                None,
                            );
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = ev.get("usage") {
                    self.take_usage(u);
                }
                let stop = ev.pointer("/delta/stop_reason").and_then(Value::as_str);
                self.chunk(out, json!({}), Some(finish_reason(stop)));
            }
            "message_stop" => self.end(out),
            "error" => {
                let message = ev
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error");
                let kind = ev.pointer("/error/type").and_then(Value::as_str).unwrap_or("api_error");
                let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
                sse::write_data(out, body.to_string().as_bytes());
                self.done = true;
            }
            _ => {} // ping, content_block_stop, thinking deltas
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        if self.include_usage {
            let c = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                           "choices": [], "usage": usage(self.input, self.output, self.cache_read, self.cache_write)});
            sse::write_data(out, c.to_string().as_bytes());
        }
        sse::write_data(out, b"[DONE]");
    }

    /// The upstream body ended (normally after `message_stop`).
    pub fn finish(&mut self, _out: &mut Vec<u8>) {
        // A stream cut before `message_stop` gets no `[DONE]`: the client must see it was cut.
        self.done = true;
    }
}
