//! Request parsing: one borrowed pass over the JSON body that yields the requested model (with
//! its byte span, so the body can be rewritten by splicing instead of re-serialising) and the
//! text signals look at. The sidecar's engine (`router::request`) and the wasm filter's local
//! routing both read requests with it.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use serde_json::value::RawValue;

use llmsoup_contract::ApiError;

/// A parsed client request: what routing reads of it.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// The `model` the client asked for.
    pub model: String,
    /// Byte range of the `model` JSON value in the body.
    model_span: Range<usize>,
    /// Whether the client asked for SSE.
    pub stream: bool,
    /// Text text-based signals evaluate: the last user turn, or every user turn with history.
    pub text: String,
    /// Earlier user turns that are not in `text` (empty with `include_history`).
    pub history: String,
    /// Estimated prompt tokens over the whole conversation.
    pub prompt_tokens: u64,
    /// Number of messages in the conversation.
    pub messages: usize,
    /// Characters of system prompt.
    pub system_chars: usize,
    /// The client asked for JSON output (`response_format`).
    pub json_mode: bool,
    /// The request offers tools (function calling).
    pub tools: bool,
    /// A message has an image part (`image_url`, `input_image`, Anthropic `image`).
    pub images: bool,
}

impl Parsed {
    /// Byte range of the `model` JSON value in the parsed body.
    pub fn model_span(&self) -> Range<usize> {
        self.model_span.clone()
    }

    /// Byte range of the `model` value in [`Self::with_model`]'s output for `model`.
    pub fn spliced_span(&self, model: &str) -> Range<usize> {
        let quoted = serde_json::to_string(model).expect("strings serialise").len();
        self.model_span.start..self.model_span.start + quoted
    }

    /// The body with `model` replaced, all other bytes untouched.
    pub fn with_model(&self, body: &[u8], model: &str) -> Vec<u8> {
        let quoted = serde_json::to_string(model).expect("strings serialise");
        let mut out = Vec::with_capacity(body.len() + quoted.len());
        out.extend_from_slice(&body[..self.model_span.start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&body[self.model_span.end..]);
        out
    }
}

/// Tokens ≈ ceil(bytes / 4), the estimate vLLM Semantic Router uses for context rules.
pub fn estimate_tokens(bytes: usize) -> u64 {
    bytes.div_ceil(4) as u64
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(default, borrow)]
    messages: Option<Vec<WireMessage<'a>>>,
    #[serde(default, borrow)]
    prompt: Option<&'a RawValue>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    system: Option<&'a RawValue>,
    /// The Responses API's system prompt.
    #[serde(default, borrow)]
    instructions: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    response_format: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tools: Option<&'a RawValue>,
    #[serde(default, borrow)]
    functions: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

/// Appends the text of an OpenAI/Anthropic content value (string, or array of parts). Returns
/// whether it holds an image part.
fn push_text(raw: &RawValue, out: &mut String) -> bool {
    let s = raw.get();
    let mut images = false;
    match s.as_bytes().first() {
        Some(b'"') => {
            if let Ok(t) = serde_json::from_str::<Cow<str>>(s) {
                push_sep(out);
                out.push_str(&t);
            }
        }
        Some(b'[') => {
            // Arrays of parts (`[{"type":"text","text":...}]`) or of strings (completions prompts).
            if let Ok(parts) = serde_json::from_str::<Vec<&RawValue>>(s) {
                for p in parts {
                    match p.get().as_bytes().first() {
                        Some(b'{') => {
                            if let Ok(part) = serde_json::from_str::<Part>(p.get()) {
                                images |= matches!(part.kind.as_deref(), Some("image_url" | "input_image" | "image"));
                                if let Some(t) = part.text {
                                    push_sep(out);
                                    out.push_str(&t);
                                }
                            }
                        }
                        Some(b'"') => {
                            push_text(p, out);
                        }
                        _ => {}
                    }
                }
            }
        }
        _ => {}
    }
    images
}

fn push_sep(out: &mut String) {
    if !out.is_empty() {
        out.push('\n');
    }
}

/// Parses a request body. Errors are client errors (400) with an OpenAI-style message.
pub fn parse(body: &[u8], include_history: bool) -> Result<Parsed, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("Request body is not valid UTF-8.", None, "invalid_json"))?;
    // serde's derived visitor also reads a JSON array as a struct (fields by position), so
    // `["auto"]` would route as model "auto" and be forwarded as an array: a request is an object.
    if text.trim_start_matches([' ', '\t', '\n', '\r']).as_bytes().first() != Some(&b'{') {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
            None,
            "invalid_json",
        ));
    }
    let wire: Wire = serde_json::from_str(text).map_err(|e| ApiError::invalid_json(&e))?;
    let raw = wire
        .model
        .ok_or_else(|| ApiError::bad_request("You must provide a model parameter.", Some("model"), "missing_model"))?;
    let model: String = serde_json::from_str(raw.get())
        .map_err(|_| ApiError::bad_request("`model` must be a string.", Some("model"), "invalid_model"))?;
    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
    let model_span = start..start + raw.get().len();

    let mut view = Parsed::default();
    let mut total = String::new();
    if let Some(system) = wire.system.or(wire.instructions) {
        push_text(system, &mut total);
        view.system_chars = total.len();
    }
    // The Responses API's `input` may be a list of items: its messages are read like chat turns
    // (`input_text` parts carry `text`), so routing sees the same text whatever the API.
    let input_items = match (&wire.messages, wire.input) {
        (None, Some(input)) if input.get().trim_start().starts_with('[') => {
            serde_json::from_str::<Vec<WireMessage>>(input.get())
                .ok()
                .filter(|items| items.iter().any(|m| m.role.is_some()))
        }
        _ => None,
    };
    view.json_mode = wire.response_format.is_some_and(|r| r.get().contains("json"));
    let non_empty = |r: Option<&RawValue>| r.is_some_and(|r| !matches!(r.get().trim(), "null" | "[]"));
    view.tools = non_empty(wire.tools) || non_empty(wire.functions);
    if let Some(messages) = wire.messages.as_ref().or(input_items.as_ref()) {
        view.messages = messages.len();
        let mut last_user: Option<&RawValue> = None;
        for m in messages {
            let Some(content) = m.content else { continue };
            let before = total.len();
            view.images |= push_text(content, &mut total);
            if matches!(m.role.as_deref(), Some("system" | "developer")) {
                view.system_chars += total.len() - before;
            }
            if m.role.as_deref() == Some("user") {
                if include_history {
                    push_text(content, &mut view.text);
                } else if let Some(earlier) = last_user {
                    push_text(earlier, &mut view.history);
                }
                last_user = Some(content);
            }
        }
        if !include_history && let Some(c) = last_user {
            push_text(c, &mut view.text);
        }
    } else if let Some(p) = wire.prompt.or(wire.input) {
        view.messages = 1;
        push_text(p, &mut view.text);
        total.push_str(&view.text);
    }
    view.prompt_tokens = estimate_tokens(total.len());
    view.model = model;
    view.model_span = model_span;
    view.stream = wire.stream.unwrap_or(false);
    Ok(view)
}
