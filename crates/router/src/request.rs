//! Request parsing: one borrowed pass over the JSON body that yields the requested model (with
//! its byte span, so the body can be rewritten by splicing instead of re-serialising) and the
//! text signals look at.

use std::ops::Range;

use llmsoup_rules::request::Parsed;
use tokio::sync::OnceCell;

use llmsoup_contract::ApiError;

use crate::models::{Embedder, Embedding, ModelError};

/// What signals see of a request.
#[derive(Debug, Clone, Default)]
pub struct RequestView {
    /// Text text-based signals evaluate: the last user turn, or every user turn with history.
    pub text: String,
    /// Earlier user turns that are not in `text` (empty with `include_history`), for safety
    /// rules that opt into scanning the whole conversation.
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
    /// The complexity score (0–1), once a complexity signal computed it.
    pub complexity: std::sync::OnceLock<f64>,
    /// The learned router's prediction, once a difficulty signal computed it.
    pub difficulty: std::sync::OnceLock<crate::prediction::Prediction>,
    /// The embedding of `text`, computed once per request and shared by every model signal.
    query_embedding: OnceCell<Result<Embedding, ModelError>>,
    /// Whether that embedding was already in the embedder's cache.
    query_embedding_cached: std::sync::OnceLock<bool>,
    /// What breaks ties at a live-calibrated threshold: the request id's hash when the engine
    /// knows one (so repeated prompts split as the target share says), else the text's.
    pub tiebreak_key: Option<u64>,
}

impl RequestView {
    /// A view of a bare prompt (used by `llmsoup route` and tests).
    pub fn from_text(text: &str) -> Self {
        RequestView {
            text: text.to_string(),
            prompt_tokens: estimate_tokens(text.len()),
            messages: 1,
            ..Default::default()
        }
    }

    /// The embedding of `text`; the first model signal to ask computes it, the others wait for it.
    pub async fn embedding(&self, embedder: &Embedder) -> Result<Embedding, ModelError> {
        self.query_embedding
            .get_or_init(|| {
                let _ = self.query_embedding_cached.set(embedder.is_cached(&self.text));
                embedder.embed(&self.text)
            })
            .await
            .clone()
    }

    /// Whether the query embedding came from the cache; `None` when no signal asked for it.
    pub fn embedding_cached(&self) -> Option<bool> {
        self.query_embedding_cached.get().copied()
    }

    /// A number in [0, 1) that is the same every time for this request (its id's hash, else its
    /// text's) and spread evenly over requests: a calibrated rule sends the requests whose score
    /// equals the threshold to the strong side when it is below the share of them that should
    /// go (`calibration::Cut`).
    pub fn tiebreak(&self) -> f64 {
        let key = self.tiebreak_key.unwrap_or_else(|| stable_hash(self.text.as_bytes()));
        // The top 53 bits as a fraction: uniform in [0, 1).
        (key >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A hash that is the same in every process and build (FNV-1a, then a SplitMix64 finaliser so
/// nearby inputs land far apart): tie-breaks must not change across restarts or replicas.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A parsed client request.
#[derive(Debug)]
pub struct ParsedRequest {
    /// The `model` the client asked for.
    pub model: String,
    /// The shared parse (`llmsoup_rules::request`, the one the wasm filter runs too).
    parsed: Parsed,
    /// Whether the client asked for SSE.
    pub stream: bool,
    /// What signals see.
    pub view: RequestView,
}

impl ParsedRequest {
    /// Byte range of the `model` JSON value in the parsed body.
    pub fn model_span(&self) -> Range<usize> {
        self.parsed.model_span()
    }

    /// Byte range of the `model` value in [`Self::with_model`]'s output for `model`.
    pub fn spliced_span(&self, model: &str) -> Range<usize> {
        self.parsed.spliced_span(model)
    }

    /// The body with `model` replaced, all other bytes untouched.
    pub fn with_model(&self, body: &[u8], model: &str) -> Vec<u8> {
        self.parsed.with_model(body, model)
    }
}

/// Tokens ≈ ceil(bytes / 4), the estimate vLLM Semantic Router uses for context rules.
pub fn estimate_tokens(bytes: usize) -> u64 {
    llmsoup_rules::request::estimate_tokens(bytes)
}

/// Parses a request body. Errors are client errors (400) with an OpenAI-style message.
pub fn parse_request(body: &[u8], include_history: bool) -> Result<ParsedRequest, ApiError> {
    let mut parsed = llmsoup_rules::request::parse(body, include_history)?;
    let view = RequestView {
        text: std::mem::take(&mut parsed.text),
        history: std::mem::take(&mut parsed.history),
        prompt_tokens: parsed.prompt_tokens,
        messages: parsed.messages,
        system_chars: parsed.system_chars,
        json_mode: parsed.json_mode,
        tools: parsed.tools,
        images: parsed.images,
        ..Default::default()
    };
    Ok(ParsedRequest {
        model: std::mem::take(&mut parsed.model),
        stream: parsed.stream,
        parsed,
        view,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_last_user_turn_and_counts_all() {
        let body = br#"{"model":"auto","messages":[
            {"role":"system","content":"You are terse."},
            {"role":"user","content":"first question"},
            {"role":"assistant","content":"answer"},
            {"role":"user","content":[{"type":"text","text":"second"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"part"}]}
        ],"stream":true}"#;
        let p = parse_request(body, false).unwrap();
        assert_eq!(p.model, "auto");
        assert!(p.stream);
        assert_eq!(p.view.text, "second\npart");
        assert_eq!(p.view.messages, 4);
        let total = "You are terse.\nfirst question\nanswer\nsecond\npart".len();
        assert_eq!(p.view.prompt_tokens, estimate_tokens(total));
        assert_eq!(p.view.history, "first question");
        let h = parse_request(body, true).unwrap();
        assert_eq!(h.view.text, "first question\nsecond\npart");
        assert_eq!(h.view.history, "", "history is already in `text`");
        assert_eq!(p.view.system_chars, "You are terse.".len());
        assert!(!p.view.json_mode && !p.view.tools);
        let t = parse_request(
            br#"{"model":"auto","messages":[],"tools":[{"type":"function"}],"response_format":{"type":"json_object"}}"#,
            false,
        )
        .unwrap();
        assert!(t.view.json_mode && t.view.tools);
        assert!(p.view.images, "an image_url part");
        assert!(!t.view.images);
    }

    #[test]
    fn rewrites_only_the_model_bytes() {
        let body =
            br#"{ "messages": [{"role":"user","content":"hi \"model\": x"}], "model" : "auto", "temperature": 0.70 }"#;
        let p = parse_request(body, false).unwrap();
        let out = p.with_model(body, "gpt-4o\"mini");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{ "messages": [{"role":"user","content":"hi \"model\": x"}], "model" : "gpt-4o\"mini", "temperature": 0.70 }"#
        );
    }

    #[test]
    fn client_errors() {
        assert_eq!(
            parse_request(b"{not json", false).unwrap_err().code,
            Some("invalid_json")
        );
        assert_eq!(parse_request(b"[1,2]", false).unwrap_err().code, Some("invalid_json"));
        // Found by fuzz/ (request target): serde reads an array as a struct by position.
        for body in [
            &br#"["auto"]"#[..],
            br#" ["auto", [{"role":"user","content":"hi"}]]"#,
            b"\"auto\"",
            b"null",
        ] {
            let e = parse_request(body, false).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (400, Some("invalid_json")),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(parse_request(b" \r\n\t{\"model\":\"a\"}", false).unwrap().model, "a");
        assert_eq!(parse_request(b"{}", false).unwrap_err().code, Some("missing_model"));
        assert_eq!(
            parse_request(br#"{"model":5}"#, false).unwrap_err().code,
            Some("invalid_model")
        );
        assert_eq!(
            parse_request(b"\xff\xfe", false).unwrap_err().code,
            Some("invalid_json")
        );
        assert_eq!(
            parse_request(br#"{"model":"a","model":"b"}"#, false).unwrap_err().code,
            Some("invalid_json")
        );
    }

    #[test]
    fn responses_api_item_lists_are_read_like_chat_turns() {
        let body = br#"{"model":"auto","instructions":"Be terse.","input":[
            {"role":"user","content":[{"type":"input_text","text":"first"}]},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"}]},
            {"type":"function_call_output","call_id":"c1","output":"42"},
            {"role":"user","content":"explain rust lifetimes"}]}"#;
        let p = parse_request(body, false).unwrap();
        assert_eq!(p.view.text, "explain rust lifetimes");
        assert_eq!(p.view.history, "first");
        assert_eq!(p.view.messages, 4);
        assert_eq!(p.view.system_chars, "Be terse.".len());
        let total = "Be terse.\nfirst\nok\nexplain rust lifetimes".len();
        assert_eq!(p.view.prompt_tokens, estimate_tokens(total));
        // A plain string input is the prompt.
        let p = parse_request(br#"{"model":"auto","input":"hello there"}"#, false).unwrap();
        assert_eq!(p.view.text, "hello there");
    }

    #[test]
    fn completions_and_anthropic_shapes() {
        let p = parse_request(br#"{"model":"auto","prompt":["a","b"]}"#, false).unwrap();
        assert_eq!(p.view.text, "a\nb");
        let p = parse_request(
            br#"{"model":"auto","system":"sys","messages":[{"role":"user","content":"q"}]}"#,
            false,
        )
        .unwrap();
        assert_eq!(p.view.text, "q");
        assert_eq!(p.view.prompt_tokens, estimate_tokens("sys\nq".len()));
    }
}
