//! What routing a request produced, in HTTP terms both front ends translate: forward it upstream
//! with these mutations (and tell the client these `x-llmsoup-*` facts), or answer it locally.

use std::borrow::Cow;

use crate::error::ApiError;
use crate::headers::{COMPLEXITY_HEADER, CONFIDENCE_HEADER, DECISION_HEADER, MODEL_HEADER, SIGNALS_HEADER};

/// A request header name: llmsoup's own are static, configured ones are owned.
pub type HeaderName = Cow<'static, str>;

/// What the front end reports back to the client in `x-llmsoup-*` response headers.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The model the request went to.
    pub model: String,
    /// The decision, when one matched.
    pub decision: Option<String>,
    /// Matched signals (compact form).
    pub signals: String,
    /// Decision confidence, when routed.
    pub confidence: Option<f64>,
    /// Complexity score, when a complexity signal ran.
    pub complexity: Option<f64>,
    /// Whether the query embedding came from the cache (`None` when no model signal ran).
    pub embedding_cached: Option<bool>,
    /// Compatibility headers (`x-vsr-*`), already rendered.
    pub compat: Vec<(&'static str, String)>,
}

impl Summary {
    /// Headers to add to the client response.
    pub fn response_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![(MODEL_HEADER, self.model.clone())];
        if let Some(d) = &self.decision {
            h.push((DECISION_HEADER, d.clone()));
        }
        if !self.signals.is_empty() {
            h.push((SIGNALS_HEADER, self.signals.clone()));
        }
        if let Some(c) = self.confidence {
            h.push((CONFIDENCE_HEADER, format!("{c:.3}")));
        }
        if let Some(c) = self.complexity {
            h.push((COMPLEXITY_HEADER, format!("{c:.3}")));
        }
        h.extend(self.compat.iter().cloned());
        h
    }
}

/// Forward the request upstream with these changes.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Headers to remove (applied first).
    pub remove_headers: Vec<HeaderName>,
    /// Headers to set (overwriting).
    pub set_headers: Vec<(HeaderName, String)>,
    /// Headers to append (kept alongside existing values).
    pub append_headers: Vec<(HeaderName, String)>,
    /// Replacement body, when it changed (the front end must fix `content-length`).
    pub body: Option<Vec<u8>>,
    /// How the response must be rewritten for the client.
    pub translation: Translation,
    /// What to tell the client.
    pub summary: Summary,
}

/// What a forwarded request's response needs on its way back to the client: both front ends
/// hand it to `llmsoup_translate::ResponseTranslator` (the sidecar in ext_proc mode, the filter
/// in wasm mode), which rewrites the body chunk by chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Translation {
    /// Passed unchanged.
    #[default]
    None,
    /// An OpenAI-format stream whose usage llmsoup asked for: the usage-only chunk (and the
    /// `"usage":null` members) are removed, so the client sees what it would have seen.
    StripUsageChunk,
    /// An Anthropic Messages client served by an OpenAI Chat provider.
    AnthropicFromOpenAiChat,
    /// An OpenAI Chat client served by an Anthropic Messages provider.
    OpenAiChatFromAnthropic {
        /// The client asked for the stream's usage chunk (`stream_options.include_usage`).
        include_usage: bool,
    },
}

impl Translation {
    /// The wire form: the proto enum and `client_include_usage`.
    pub fn to_wire(self) -> (crate::v1::Translation, bool) {
        use crate::v1::Translation as W;
        match self {
            Translation::None => (W::None, false),
            Translation::StripUsageChunk => (W::StripUsageChunk, false),
            Translation::AnthropicFromOpenAiChat => (W::AnthropicFromOpenaiChat, false),
            Translation::OpenAiChatFromAnthropic { include_usage } => (W::OpenaiChatFromAnthropic, include_usage),
        }
    }

    /// From the wire form; unknown values (a newer sidecar) leave the response unchanged.
    pub fn from_wire(kind: i32, include_usage: bool) -> Self {
        use crate::v1::Translation as W;
        match W::try_from(kind) {
            Ok(W::StripUsageChunk) => Translation::StripUsageChunk,
            Ok(W::AnthropicFromOpenaiChat) => Translation::AnthropicFromOpenAiChat,
            Ok(W::OpenaiChatFromAnthropic) => Translation::OpenAiChatFromAnthropic { include_usage },
            Ok(W::None) | Err(_) => Translation::None,
        }
    }
}

/// Answer the client directly.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(&'static str, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply {
            status: e.status,
            headers: vec![("content-type", "application/json".into())],
            body: e.to_json(),
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Forward upstream, mutated.
    Forward(Forward),
    /// Reply locally.
    Reply(Reply),
}

/// Where a request's answer came from (bounded metric label and `x-vsr-response-path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePath {
    /// The upstream model answers.
    Upstream,
    /// A `fast_response` plugin answered as the assistant.
    FastResponse,
    /// A `fast_response` plugin refused the request with an error status.
    Blocked,
}

impl ResponsePath {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponsePath::Upstream => "upstream",
            ResponsePath::FastResponse => "fast_response",
            ResponsePath::Blocked => "blocked",
        }
    }
}
