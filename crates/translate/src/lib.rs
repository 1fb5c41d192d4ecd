//! Protocol translation between the APIs clients speak and the APIs providers speak: one module
//! per schema pair, each with its request, JSON response and SSE state machine, plus the stream
//! usage rewrite for OpenAI-format providers. It builds for `wasm32-unknown-unknown` (serde and
//! the contract only), so the proxy-wasm filter translates response bodies in Envoy's worker while
//! the sidecar does the same in ext_proc mode: both attach modes run this code.
//!
//! - [`anthropic_to_openai_chat`]: an Anthropic Messages client, an OpenAI Chat provider;
//! - [`openai_chat_to_anthropic`]: an OpenAI Chat client, an Anthropic Messages provider;
//! - [`stream_usage`]: usage asked for on the client's behalf, its extra chunk removed;
//! - [`sse`]: the incremental SSE parser every stream goes through;
//! - [`ResponseTranslator`]: the response side, fed chunks as they pass, whichever the pair.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod anthropic_to_openai_chat;
pub mod openai_chat_to_anthropic;
pub mod sse;
pub mod stream_usage;

use llmsoup_contract::ApiError;
pub use llmsoup_contract::outcome::Translation;
use serde_json::{Map, Value, json};

/// A JSON object.
type Obj = Map<String, Value>;

/// The request paths of each API.
pub mod paths {
    /// OpenAI Chat Completions.
    pub const CHAT_COMPLETIONS: &str = "/v1/chat/completions";
    /// Anthropic Messages.
    pub const MESSAGES: &str = "/v1/messages";
}

/// The API a client or provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    OpenAiChat,
    /// Anthropic Messages (`/v1/messages`).
    AnthropicMessages,
}

impl Dialect {
    /// The endpoint path of this API.
    pub fn path(self) -> &'static str {
        match self {
            Dialect::OpenAiChat => paths::CHAT_COMPLETIONS,
            Dialect::AnthropicMessages => paths::MESSAGES,
        }
    }

    /// A human name, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::OpenAiChat => "OpenAI Chat Completions",
            Dialect::AnthropicMessages => "Anthropic Messages",
        }
    }
}

/// A translated request.
#[derive(Debug)]
pub struct TranslatedRequest {
    /// The body in the provider's API.
    pub body: Vec<u8>,
    /// The provider's endpoint (replaces the client's path).
    pub path: &'static str,
    /// What the response needs on its way back.
    pub translation: Translation,
}

/// Translates a request body from the client's API to the provider's, naming `model` (the
/// provider's model id). Unsupported fields get a 400 naming them, never a silent drop.
/// `stream_usage`: an OpenAI-format provider takes `stream_options`, so a translated stream asks
/// it for the usage chunk (off for servers that reject the field: the stream then reports no
/// usage).
pub fn translate_request(
    from: Dialect,
    to: Dialect,
    body: &[u8],
    model: &str,
    stream_usage: bool,
) -> Result<TranslatedRequest, ApiError> {
    let mut obj: Obj = serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))?;
    obj.insert("model".into(), Value::String(model.to_string()));
    let (body, translation) = match (from, to) {
        (Dialect::AnthropicMessages, Dialect::OpenAiChat) => (
            anthropic_to_openai_chat::request(obj, stream_usage)?,
            Translation::AnthropicFromOpenAiChat,
        ),
        (Dialect::OpenAiChat, Dialect::AnthropicMessages) => {
            let t = openai_chat_to_anthropic::request(obj)?;
            (
                t.body,
                Translation::OpenAiChatFromAnthropic {
                    include_usage: t.include_usage,
                },
            )
        }
        _ => (Value::Object(obj), Translation::None),
    };
    Ok(TranslatedRequest {
        body: serde_json::to_vec(&body).expect("JSON values serialise"),
        path: to.path(),
        translation,
    })
}

/// A 400 about one parameter.
fn reject(param: &'static str, message: impl Into<String>) -> ApiError {
    let mut message = message.into();
    if !message.ends_with('.') {
        message.push('.');
    }
    ApiError::bad_request(message, Some(param), "unsupported_parameter")
}

/// A 400 for a field the provider's API has no equivalent for.
fn unsupported(field: &str, from: &str, to: &str) -> ApiError {
    ApiError::bad_request(
        format!(
            "`{}` is not supported when an {from} request is served by an {to} provider.",
            llmsoup_contract::error::truncate_echo(field)
        ),
        None,
        "unsupported_parameter",
    )
}

/// Largest JSON response translated; a larger one gets an error body (translation needs it whole).
const MAX_JSON: usize = 32 << 20;

/// The response side of a translated (or usage-rewritten) request: fed every body chunk as it
/// passes, it writes what the client must receive instead. JSON bodies come out whole at
/// [`ResponseTranslator::finish`]; SSE comes out event by event, chunk boundaries anywhere.
#[derive(Debug)]
pub struct ResponseTranslator {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// Nothing to change.
    Pass,
    /// A JSON body, collected, translated at the end.
    Json {
        translation: Translation,
        status: u16,
        created: u64,
        buf: Vec<u8>,
        overflow: bool,
    },
    /// An OpenAI stream whose usage chunk the client did not ask for.
    StripUsage(sse::SseParser),
    /// OpenAI chunks → Anthropic events.
    ToAnthropic(sse::SseParser, anthropic_to_openai_chat::Stream),
    /// Anthropic events → OpenAI chunks.
    ToOpenAi(sse::SseParser, openai_chat_to_anthropic::Stream),
}

impl ResponseTranslator {
    /// The translator for a response with this status and body kind; `created` (Unix seconds)
    /// stamps the OpenAI objects it writes.
    pub fn new(translation: Translation, status: u16, sse: bool, created: u64) -> Self {
        let ok = (200..300).contains(&status);
        let inner = match (translation, sse) {
            (Translation::None, _) => Inner::Pass,
            (Translation::StripUsageChunk, true) if ok => Inner::StripUsage(Default::default()),
            (Translation::StripUsageChunk, _) => Inner::Pass,
            (Translation::AnthropicFromOpenAiChat, true) if ok => {
                Inner::ToAnthropic(Default::default(), Default::default())
            }
            (Translation::OpenAiChatFromAnthropic { include_usage }, true) if ok => Inner::ToOpenAi(
                Default::default(),
                openai_chat_to_anthropic::Stream::new(include_usage, created),
            ),
            (t, _) => Inner::Json {
                translation: t,
                status,
                created,
                buf: Vec::new(),
                overflow: false,
            },
        };
        ResponseTranslator { inner }
    }

    /// Whether the body changes (callers leave it alone, and keep `content-length`, otherwise).
    pub fn active(&self) -> bool {
        !matches!(self.inner, Inner::Pass)
    }

    /// Whether the body comes out only at the end (a JSON body is translated whole).
    pub fn whole_body(&self) -> bool {
        matches!(self.inner, Inner::Json { .. })
    }

    /// The next upstream chunk; what the client receives for it is appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        match &mut self.inner {
            Inner::Pass => out.extend_from_slice(chunk),
            Inner::Json { buf, overflow, .. } => {
                if buf.len() + chunk.len() > MAX_JSON {
                    *overflow = true;
                    *buf = Vec::new();
                } else if !*overflow {
                    buf.extend_from_slice(chunk);
                }
            }
            Inner::StripUsage(p) => p.feed(chunk, &mut |e| stream_usage::on_event(e, out)),
            Inner::ToAnthropic(p, s) => p.feed(chunk, &mut |e| s.on_event(e, out)),
            Inner::ToOpenAi(p, s) => p.feed(chunk, &mut |e| s.on_event(e, out)),
        }
    }

    /// The upstream body ended; the rest of what the client receives is appended to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match &mut self.inner {
            Inner::Pass => {}
            Inner::Json {
                translation,
                status,
                created,
                buf,
                overflow,
            } => {
                let body = std::mem::take(buf);
                out.extend(json_body(*translation, *status, *created, &body, *overflow));
            }
            Inner::StripUsage(p) => p.finish(&mut |e| stream_usage::on_event(e, out)),
            Inner::ToAnthropic(p, s) => {
                p.finish(&mut |e| s.on_event(e, out));
                s.finish(out);
            }
            Inner::ToOpenAi(p, s) => {
                p.finish(&mut |e| s.on_event(e, out));
                s.finish(out);
            }
        }
    }
}

/// Whether the client reads Anthropic-shaped bodies.
fn client_is_anthropic(t: Translation) -> bool {
    matches!(t, Translation::AnthropicFromOpenAiChat)
}

/// A whole JSON body, translated: a success body to the client's shape, an error body to the
/// client's error shape. A body that is not what the provider's API returns is turned into an
/// error in the client's shape rather than passed in a shape the client cannot read.
fn json_body(t: Translation, status: u16, created: u64, body: &[u8], overflow: bool) -> Vec<u8> {
    let anthropic_client = client_is_anthropic(t);
    let error = |status: u16, message: String| {
        let e = ApiError {
            status,
            message,
            kind: "api_error",
            param: None,
            code: None,
        };
        if anthropic_client {
            e.to_anthropic_json()
        } else {
            e.to_json()
        }
    };
    if overflow {
        return error(502, "The provider's response was too large to translate.".into());
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        if (200..300).contains(&status) {
            return error(502, "The provider's response was not valid JSON.".into());
        }
        let text = String::from_utf8_lossy(body);
        return error(
            status,
            format!(
                "The provider answered {status}: {}",
                llmsoup_contract::error::truncate_echo(text.trim())
            ),
        );
    };
    if !(200..300).contains(&status) {
        return error_body(anthropic_client, status, &value);
    }
    let translated = match t {
        Translation::AnthropicFromOpenAiChat => anthropic_to_openai_chat::response(&value),
        Translation::OpenAiChatFromAnthropic { .. } => openai_chat_to_anthropic::response(&value, created),
        Translation::None | Translation::StripUsageChunk => return body.to_vec(),
    };
    match translated {
        Some(v) => serde_json::to_vec(&v).expect("JSON values serialise"),
        None => error(502, "The provider's response could not be translated.".into()),
    }
}

/// An error body from either API, in the client's shape (one already in it passes unchanged:
/// Envoy's own local replies are OpenAI-shaped).
fn error_body(anthropic_client: bool, status: u16, v: &Value) -> Vec<u8> {
    let is_anthropic = v.get("type").and_then(Value::as_str) == Some("error");
    let err = v.get("error").unwrap_or(&Value::Null);
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("The provider returned an error.")
        .to_string();
    let kind = err.get("type").and_then(Value::as_str).unwrap_or("api_error");
    if anthropic_client == is_anthropic {
        return serde_json::to_vec(v).expect("JSON values serialise");
    }
    if anthropic_client {
        ApiError {
            status,
            message,
            kind: "api_error",
            param: None,
            code: None,
        }
        .to_anthropic_json()
    } else {
        serde_json::to_vec(&json!({"error": {"message": message, "type": kind, "param": null, "code": null}}))
            .expect("JSON values serialise")
    }
}

#[cfg(test)]
mod tests;
