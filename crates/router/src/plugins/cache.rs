//! `cache`: the response cache plugin (vLLM Semantic Router's `semantic-cache` maps onto it).
//!
//! This module is the pure part: which requests may be cached, the keys that identify them, the
//! stored form of an answer and how a stored answer is replayed. The store itself (in-process or
//! Redis), in-flight deduplication and capturing answers from the response path live in the
//! sidecar, which owns state and I/O.
//!
//! Two keys per request:
//! - the **exact key**: SHA-256 over the scope (tenant or shared), the chosen model, the API path
//!   and a canonical form of the whole body (object keys sorted, so field order does not matter)
//!   minus fields that do not change the answer (`model`, which is the chosen model above,
//!   `stream`, `stream_options`, `user`, `metadata`, `store`, `n: 1`);
//! - the **context key**: the same without the last user turn. Semantic matching compares the
//!   embedding of the last user turn only among entries with the same context key, so a
//!   paraphrase can hit but a different system prompt, history, tool list or sampling parameter
//!   never does.
//!
//! OpenAI chat completions are stored as one `chat.completion` JSON (a streamed answer is
//! reassembled), so a JSON answer can be replayed to a streaming client as SSE and the other way
//! round. Other APIs (Anthropic Messages, legacy completions) are stored as received and their
//! key includes `stream`: they are only replayed to a client asking the same way.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::Api;
use crate::config::{CachePlugin, CacheScope};
use crate::models::Embedding;
use llmsoup_contract::headers::CACHE_HEADER;
use llmsoup_contract::outcome::Reply;

/// A SHA-256 cache key.
pub type Key = [u8; 32];

/// Body fields that never change the answer (or are part of the key elsewhere).
const IGNORED: &[&str] = &["model", "stream", "stream_options", "user", "metadata", "store"];

/// How an answer is stored and replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// OpenAI chat completions: stored as one `chat.completion` JSON, replayed as JSON or SSE.
    Chat,
    /// Stored as received; replayed only to a client that asked the same way (`stream` is in the
    /// key).
    Raw,
}

/// Why a request is not looked up (nor stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The plugin is disabled.
    Disabled,
    /// `n > 1`: several sampled answers.
    Choices,
    /// `temperature` above the plugin's `max_temperature`.
    Temperature,
    /// The body is not a JSON object.
    NotAnObject,
}

impl Skip {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Disabled => "disabled",
            Skip::Choices => "n_above_1",
            Skip::Temperature => "temperature",
            Skip::NotAnObject => "not_an_object",
        }
    }
}

/// What the engine asks of the front end's response cache for one forwarded request.
#[derive(Debug, Clone)]
pub enum CacheStep {
    /// Look it up (and, on a miss, keep its answer).
    Lookup(Box<CacheLookup>),
    /// The decision caches, but not this request.
    Skipped {
        /// Why.
        reason: Skip,
        /// The tenant.
        tenant: String,
        /// The decision.
        decision: String,
    },
}

/// What the store needs to look a request up and, on a miss, to keep its answer.
#[derive(Debug, Clone)]
pub struct CacheLookup {
    /// Exact key.
    pub key: Key,
    /// Context key (everything but the last user turn), for semantic candidates.
    pub context: Key,
    /// Semantic threshold, when semantic matching applies to this request (the last message is a
    /// user turn and the plugin allows it).
    pub threshold: Option<f32>,
    /// The last user turn's embedding (the shared query embedding), when semantic matching
    /// applies and the embedder answered.
    pub embedding: Option<Embedding>,
    /// Storage shape.
    pub shape: Shape,
    /// The client asked for SSE.
    pub stream: bool,
    /// The streaming client asked for a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Entry lifetime override (seconds), else the store's default.
    pub ttl_seconds: Option<u64>,
    /// The tenant (client token name; empty without auth).
    pub tenant: String,
    /// The chosen model.
    pub model: String,
    /// The decision whose plugin asked for caching.
    pub decision: String,
}

impl CacheLookup {
    /// The exact key in hex (the ticket the response path hands back).
    pub fn key_hex(&self) -> String {
        hex::encode(self.key)
    }
}

/// Whether `body` (as the client sent it) may be cached under `plugin`, and its keys; the
/// embedding is left for the engine to fill in.
pub fn lookup(
    plugin: &CachePlugin,
    api: Api,
    path: &str,
    body: &[u8],
    model: &str,
    tenant: &str,
    decision: &str,
) -> Result<CacheLookup, Skip> {
    if !plugin.enabled {
        return Err(Skip::Disabled);
    }
    let obj: Map<String, Value> = serde_json::from_slice(body).map_err(|_| Skip::NotAnObject)?;
    if obj.get("n").and_then(Value::as_f64).is_some_and(|n| n > 1.0) {
        return Err(Skip::Choices);
    }
    if let (Some(limit), Some(t)) = (plugin.max_temperature, obj.get("temperature").and_then(Value::as_f64))
        && t > limit
    {
        return Err(Skip::Temperature);
    }
    let path = path.split('?').next().unwrap_or(path);
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let shape = if api == Api::OpenAi && path.trim_end_matches('/').ends_with("/chat/completions") {
        Shape::Chat
    } else {
        Shape::Raw
    };
    let scope = match plugin.scope {
        CacheScope::Tenant => tenant,
        CacheScope::Shared => "\u{1}shared",
    };
    let mut head = Vec::with_capacity(body.len() + 64);
    head.extend_from_slice(b"llmsoup-cache-v1\0");
    for part in [scope, decision, model, path] {
        head.extend_from_slice(part.as_bytes());
        head.push(0);
    }
    if shape == Shape::Raw {
        head.push(u8::from(stream));
    }
    let mut keyed = obj;
    for f in IGNORED {
        keyed.remove(*f);
    }
    if keyed.get("n").and_then(Value::as_f64) == Some(1.0) {
        keyed.remove("n");
    }
    let mut exact = head.clone();
    canonical(&Value::Object(keyed.clone()), &mut exact);
    // The context: the same request without its last user turn.
    let mut semantic = false;
    if let Some(Value::Array(messages)) = keyed.get_mut("messages")
        && messages
            .last()
            .is_some_and(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    {
        messages.pop();
        semantic = plugin.semantic;
    }
    let mut context = head;
    context.extend_from_slice(b"\0context\0");
    canonical(&Value::Object(keyed), &mut context);
    Ok(CacheLookup {
        key: llmsoup_contract::auth::hash(&exact),
        context: llmsoup_contract::auth::hash(&context),
        threshold: semantic.then_some(plugin.similarity_threshold),
        embedding: None,
        shape,
        stream,
        include_usage,
        ttl_seconds: plugin.ttl_seconds,
        tenant: tenant.to_string(),
        model: model.to_string(),
        decision: decision.to_string(),
    })
}

/// Writes `v` as JSON with object keys sorted, recursively.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// How it was stored.
    pub shape: Shape,
    /// The body is SSE (only for [`Shape::Raw`]).
    pub sse: bool,
    /// Prompt tokens the provider counted (what a hit saves).
    pub prompt_tokens: u64,
    /// Completion tokens the provider counted.
    pub completion_tokens: u64,
    /// The body.
    pub body: Vec<u8>,
}

const ENTRY_VERSION: u8 = 1;

impl Entry {
    /// The answer to keep from a finished response, if it may be kept: a complete 200 whose
    /// body fits the shape (a chat completion, or a stream that reached its end).
    pub fn from_response(shape: Shape, status: u32, sse: bool, body: &[u8]) -> Option<Entry> {
        if status != 200 || body.is_empty() {
            return None;
        }
        let (body, usage) = match (shape, sse) {
            (Shape::Chat, true) => reassemble(body)?,
            (Shape::Chat, false) => {
                let v: Value = serde_json::from_slice(body).ok()?;
                v.get("choices")?.as_array()?;
                (body.to_vec(), usage_of(&v))
            }
            (Shape::Raw, _) => {
                let mut s = llmsoup_contract::usage::UsageScanner::new(sse);
                s.feed(body);
                let u = s.finish();
                if !sse {
                    serde_json::from_slice::<serde::de::IgnoredAny>(body).ok()?;
                } else if !body.windows(2).any(|w| w == b"\n\n") {
                    return None;
                }
                (body.to_vec(), u.map(|u| (u.prompt, u.completion)))
            }
        };
        let (prompt_tokens, completion_tokens) = usage.unwrap_or_default();
        Some(Entry {
            shape,
            sse: sse && shape == Shape::Raw,
            prompt_tokens,
            completion_tokens,
            body,
        })
    }

    /// The stored bytes (for a shared store).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 18);
        out.push(ENTRY_VERSION);
        out.push(u8::from(self.shape == Shape::Raw) | (u8::from(self.sse) << 1));
        out.extend_from_slice(&self.prompt_tokens.to_le_bytes());
        out.extend_from_slice(&self.completion_tokens.to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads [`Entry::encode`]'s bytes; `None` for anything else (another version, corruption).
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let (&[version, flags], rest) = bytes.split_first_chunk::<2>()?;
        if version != ENTRY_VERSION || flags > 3 {
            return None;
        }
        let (p, rest) = rest.split_first_chunk::<8>()?;
        let (c, body) = rest.split_first_chunk::<8>()?;
        Some(Entry {
            shape: if flags & 1 == 1 { Shape::Raw } else { Shape::Chat },
            sse: flags & 2 == 2,
            prompt_tokens: u64::from_le_bytes(*p),
            completion_tokens: u64::from_le_bytes(*c),
            body: body.to_vec(),
        })
    }

    /// The reply to `lookup`'s client: the stored answer, as JSON or SSE as the client asked,
    /// marked `x-llmsoup-cache: hit`. `None` when this entry cannot answer that client (a raw
    /// entry of the other streaming kind; the keys make that a hash collision).
    pub fn replay(&self, lookup: &CacheLookup) -> Option<Reply> {
        let (sse, body) = match (self.shape, lookup.stream) {
            (Shape::Chat, false) => (false, self.body.clone()),
            (Shape::Chat, true) => (true, to_sse(&self.body, lookup.include_usage)?),
            (Shape::Raw, stream) if stream == self.sse => (self.sse, self.body.clone()),
            (Shape::Raw, _) => return None,
        };
        let mut headers = vec![(
            "content-type",
            if sse { "text/event-stream" } else { "application/json" }.to_string(),
        )];
        if sse {
            headers.push(("cache-control", "no-cache".into()));
        }
        headers.push((CACHE_HEADER, "hit".into()));
        Some(Reply {
            status: 200,
            headers,
            body,
        })
    }
}

/// Prompt and completion tokens.
type Tokens = (u64, u64);

fn usage_of(v: &Value) -> Option<Tokens> {
    let u = v.get("usage")?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some((n("prompt_tokens"), n("completion_tokens")))
}

/// Turns a streamed chat completion back into the `chat.completion` it streamed, or `None` when
/// the stream did not finish (a choice without its finish reason), carried log probabilities (not
/// kept) or is not a chat completion stream.
pub fn reassemble(body: &[u8]) -> Option<(Vec<u8>, Option<Tokens>)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut head: Option<Map<String, Value>> = None;
    let mut choices: Vec<Map<String, Value>> = Vec::new();
    let mut usage = None;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            continue;
        }
        let Value::Object(event) = serde_json::from_str::<Value>(data).ok()? else {
            return None;
        };
        if event.get("object").and_then(Value::as_str) != Some("chat.completion.chunk") {
            return None;
        }
        if head.is_none() {
            let mut h = Map::new();
            for k in ["id", "created", "model", "system_fingerprint", "service_tier"] {
                if let Some(v) = event.get(k).filter(|v| !v.is_null()) {
                    h.insert(k.into(), v.clone());
                }
            }
            head = Some(h);
        }
        if let Some(u) = event.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
        for c in event.get("choices").and_then(Value::as_array).into_iter().flatten() {
            if c.get("logprobs").is_some_and(|l| !l.is_null()) {
                return None;
            }
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            if index > 128 {
                return None;
            }
            while choices.len() <= index {
                let mut m = Map::new();
                m.insert("index".into(), json!(choices.len()));
                m.insert("message".into(), json!({"role": "assistant", "content": null}));
                m.insert("finish_reason".into(), Value::Null);
                choices.push(m);
            }
            let choice = &mut choices[index];
            if let Some(f) = c.get("finish_reason").filter(|f| !f.is_null()) {
                choice.insert("finish_reason".into(), f.clone());
            }
            let Some(delta) = c.get("delta").and_then(Value::as_object) else {
                continue;
            };
            let message = choice.get_mut("message")?.as_object_mut()?;
            for (k, v) in delta {
                match (k.as_str(), v) {
                    (_, Value::Null) => {}
                    ("role", v) => {
                        message.insert("role".into(), v.clone());
                    }
                    ("content" | "refusal", Value::String(s)) => append(message, k, s),
                    ("tool_calls", Value::Array(calls)) => {
                        let list = message
                            .entry("tool_calls")
                            .or_insert_with(|| Value::Array(Vec::new()))
                            .as_array_mut()?;
                        for call in calls {
                            let i = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                            if i > 128 {
                                return None;
                            }
                            while list.len() <= i {
                                list.push(
                                    json!({"id": null, "type": "function", "function": {"name": "", "arguments": ""}}),
                                );
                            }
                            let slot = list[i].as_object_mut()?;
                            for k in ["id", "type"] {
                                if let Some(v) = call.get(k).filter(|v| !v.is_null()) {
                                    slot.insert(k.into(), v.clone());
                                }
                            }
                            if let Some(f) = call.get("function").and_then(Value::as_object) {
                                let func = slot.get_mut("function")?.as_object_mut()?;
                                for k in ["name", "arguments"] {
                                    if let Some(Value::String(s)) = f.get(k) {
                                        append(func, k, s);
                                    }
                                }
                            }
                        }
                    }
                    // Anything else a delta carries (annotations, audio, ...) is not kept: such
                    // answers are not cached.
                    _ => return None,
                }
            }
        }
    }
    let finished = !choices.is_empty() && choices.iter().all(|c| !c["finish_reason"].is_null());
    // Every choice reached its finish reason (a stream cut short never does).
    if !finished {
        return None;
    }
    let mut out = head?;
    out.insert("object".into(), json!("chat.completion"));
    out.insert(
        "choices".into(),
        Value::Array(choices.into_iter().map(Value::Object).collect()),
    );
    let tokens = usage.as_ref().and_then(|u| usage_of(&json!({"usage": u})));
    if let Some(u) = usage {
        out.insert("usage".into(), u);
    }
    Some((serde_json::to_vec(&Value::Object(out)).ok()?, tokens))
}

fn append(obj: &mut Map<String, Value>, key: &str, s: &str) {
    match obj.get_mut(key) {
        Some(Value::String(existing)) => existing.push_str(s),
        _ => {
            obj.insert(key.into(), Value::String(s.to_string()));
        }
    }
}

/// Replays a stored `chat.completion` as the chunks a streaming client expects: per choice its
/// whole message in one delta, then its finish reason; the usage chunk when asked; `[DONE]`.
pub fn to_sse(body: &[u8], include_usage: bool) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut head = Map::new();
    for k in ["id", "created", "model", "system_fingerprint", "service_tier"] {
        if let Some(x) = v.get(k).filter(|x| !x.is_null()) {
            head.insert(k.into(), x.clone());
        }
    }
    head.insert("object".into(), json!("chat.completion.chunk"));
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = head.clone();
        c.insert("choices".into(), choices);
        if let Some(u) = usage {
            c.insert("usage".into(), u.clone());
        }
        Value::Object(c)
    };
    let mut out = String::new();
    let mut push = |event: Value| {
        let _ = write!(out, "data: {event}\n\n");
    };
    for (i, c) in v.get("choices")?.as_array()?.iter().enumerate() {
        let index = c.get("index").cloned().unwrap_or(json!(i));
        let mut delta = c.get("message").and_then(Value::as_object).cloned().unwrap_or_default();
        if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
            for (k, call) in calls.iter_mut().enumerate() {
                if let Some(o) = call.as_object_mut() {
                    o.insert("index".into(), json!(k));
                }
            }
        }
        delta.retain(|_, x| !x.is_null());
        push(chunk(
            json!([{"index": index, "delta": delta, "finish_reason": null}]),
            None,
        ));
        let finish = c.get("finish_reason").cloned().unwrap_or(json!("stop"));
        push(chunk(
            json!([{"index": index, "delta": {}, "finish_reason": finish}]),
            None,
        ));
    }
    if include_usage && let Some(u) = v.get("usage") {
        push(chunk(json!([]), Some(u)));
    }
    out.push_str("data: [DONE]\n\n");
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> CachePlugin {
        CachePlugin::default()
    }

    fn key_of(body: &str, tenant: &str) -> CacheLookup {
        lookup(
            &plugin(),
            Api::OpenAi,
            "/v1/chat/completions",
            body.as_bytes(),
            "m",
            tenant,
            "d",
        )
        .unwrap()
    }

    #[test]
    fn the_key_ignores_order_stream_and_model_but_not_what_changes_answers() {
        let a = key_of(
            r#"{"model":"auto","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
            "t",
        );
        let b = key_of(
            r#"{"messages":[{"content":"hi","role":"user"}],"temperature":0,"stream":true,"model":"MoM","user":"u","n":1}"#,
            "t",
        );
        assert_eq!(a.key, b.key);
        assert!(b.stream && !a.stream);
        for other in [
            key_of(
                r#"{"temperature":0.5,"messages":[{"role":"user","content":"hi"}]}"#,
                "t",
            ),
            key_of(r#"{"temperature":0,"messages":[{"role":"user","content":"hi"}]}"#, "u"),
            key_of(
                r#"{"temperature":0,"tools":[],"messages":[{"role":"user","content":"hi"}]}"#,
                "t",
            ),
            key_of(
                r#"{"temperature":0,"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}]}"#,
                "t",
            ),
        ] {
            assert_ne!(a.key, other.key);
            assert_ne!(a.context, other.context);
        }
        let model = lookup(
            &plugin(),
            Api::OpenAi,
            "/v1/chat/completions",
            br#"{"messages":[]}"#,
            "x",
            "t",
            "d",
        )
        .unwrap();
        let model2 = lookup(
            &plugin(),
            Api::OpenAi,
            "/v1/chat/completions",
            br#"{"messages":[]}"#,
            "y",
            "t",
            "d",
        )
        .unwrap();
        assert_ne!(model.key, model2.key);
    }

    #[test]
    fn paraphrases_share_a_context_and_histories_do_not() {
        let turn = |history: &str, last: &str| {
            key_of(
                &format!(
                    r#"{{"messages":[{{"role":"user","content":"{history}"}},{{"role":"assistant","content":"ok"}},{{"role":"user","content":"{last}"}}]}}"#
                ),
                "t",
            )
        };
        let a = turn("one", "what is the capital of France?");
        let b = turn("one", "capital city of France?");
        assert_ne!(a.key, b.key);
        assert_eq!(a.context, b.context);
        assert_eq!(a.threshold, Some(plugin().similarity_threshold));
        assert_ne!(turn("two", "what is the capital of France?").context, a.context);
        // The last message is not a user turn: exact matching only.
        let tool = key_of(
            r#"{"messages":[{"role":"user","content":"x"},{"role":"tool","content":"y"}]}"#,
            "t",
        );
        assert_eq!(tool.threshold, None);
    }

    #[test]
    fn shared_scope_ignores_the_tenant_and_raw_apis_key_on_stream() {
        let shared = CachePlugin {
            scope: CacheScope::Shared,
            ..plugin()
        };
        let body = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
        let a = lookup(&shared, Api::OpenAi, "/v1/chat/completions", body, "m", "t", "d").unwrap();
        let b = lookup(&shared, Api::OpenAi, "/v1/chat/completions", body, "m", "u", "d").unwrap();
        assert_eq!(a.key, b.key);
        let anthropic = |stream: bool| {
            let body = format!(r#"{{"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#);
            lookup(
                &plugin(),
                Api::Anthropic,
                "/v1/messages",
                body.as_bytes(),
                "m",
                "t",
                "d",
            )
            .unwrap()
        };
        assert_eq!(anthropic(false).shape, Shape::Raw);
        assert_ne!(anthropic(false).key, anthropic(true).key);
    }

    #[test]
    fn several_choices_hot_temperatures_and_disabled_plugins_skip() {
        let p = plugin();
        let skip = |p: &CachePlugin, body: &str| {
            lookup(p, Api::OpenAi, "/v1/chat/completions", body.as_bytes(), "m", "t", "d").unwrap_err()
        };
        assert_eq!(skip(&p, r#"{"n":2,"messages":[]}"#), Skip::Choices);
        assert_eq!(skip(&p, r#"{"temperature":1.2,"messages":[]}"#), Skip::Temperature);
        assert_eq!(skip(&p, "[1]"), Skip::NotAnObject);
        let off = CachePlugin {
            enabled: false,
            ..plugin()
        };
        assert_eq!(skip(&off, "{}"), Skip::Disabled);
        let hot = CachePlugin {
            max_temperature: None,
            ..plugin()
        };
        assert!(
            lookup(
                &hot,
                Api::OpenAi,
                "/v1/chat/completions",
                br#"{"temperature":2}"#,
                "m",
                "t",
                "d"
            )
            .is_ok()
        );
    }

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn a_stream_is_reassembled_into_its_completion_and_replayed_back() {
        let e = Entry::from_response(Shape::Chat, 200, true, STREAM.as_bytes()).unwrap();
        assert_eq!((e.prompt_tokens, e.completion_tokens), (3, 5));
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["id"], "c1");
        let msg = &v["choices"][0]["message"];
        assert_eq!(msg["content"], "Hello");
        assert_eq!(msg["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(msg["tool_calls"][0]["id"], "call_1");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");

        let mut l = key_of(r#"{"messages":[]}"#, "t");
        l.stream = true;
        l.include_usage = true;
        let r = e.replay(&l).unwrap();
        assert!(r.headers.contains(&("content-type", "text/event-stream".into())));
        assert!(r.headers.contains(&(CACHE_HEADER, "hit".into())));
        // Replaying the replay gives the same completion: the SSE is what a client would parse.
        let again = Entry::from_response(Shape::Chat, 200, true, &r.body).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&again.body).unwrap(), v);
        l.stream = false;
        assert_eq!(e.replay(&l).unwrap().body, e.body);
    }

    #[test]
    fn unfinished_failed_or_foreign_answers_are_not_kept() {
        let cut = &STREAM[..STREAM.find("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\"").unwrap()];
        assert!(Entry::from_response(Shape::Chat, 200, true, cut.as_bytes()).is_none());
        assert!(Entry::from_response(Shape::Chat, 500, false, br#"{"choices":[]}"#).is_none());
        assert!(Entry::from_response(Shape::Chat, 200, false, b"{\"choices\":[").is_none());
        assert!(Entry::from_response(Shape::Chat, 200, false, br#"{"error":{}}"#).is_none());
        let logprobs = "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"logprobs\":{\"content\":[]},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        assert!(Entry::from_response(Shape::Chat, 200, true, logprobs.as_bytes()).is_none());
    }

    #[test]
    fn entries_round_trip_through_bytes() {
        let e = Entry::from_response(Shape::Raw, 200, true, b"event: x\ndata: {}\n\n").unwrap();
        assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
        assert!(e.sse);
        assert_eq!(Entry::decode(b"\x02\x00"), None);
        assert_eq!(Entry::decode(&e.encode()[..10]), None);
        let mut l = key_of(r#"{"messages":[]}"#, "t");
        l.shape = Shape::Raw;
        assert!(
            e.replay(&l).is_none(),
            "a raw SSE answer is not replayed to a JSON client"
        );
        l.stream = true;
        assert_eq!(e.replay(&l).unwrap().body, e.body);
    }
}
