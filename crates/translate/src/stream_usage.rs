//! Usage on every stream: OpenAI-format providers report a stream's tokens only when asked
//! (`stream_options.include_usage`). llmsoup asks on the client's behalf so accounting gets exact
//! tokens, cost and TPOT, and removes what asking added, so the client receives exactly the
//! events it would have received: the final usage-only chunk, and the `"usage":null` member
//! OpenAI adds to every other chunk.

use serde_json::{Map, Value};

use crate::sse::Event;

/// The body with `stream_options.include_usage: true`, when it is a stream that did not ask for
/// usage (`None`: leave the request alone).
pub fn ask_for_usage(body: &[u8]) -> Option<Vec<u8>> {
    let mut obj: Map<String, Value> = serde_json::from_slice(body).ok()?;
    if obj.get("stream").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    match obj.get_mut("stream_options") {
        Some(Value::Object(o)) => {
            if o.get("include_usage").and_then(Value::as_bool) == Some(true) {
                return None;
            }
            o.insert("include_usage".into(), Value::Bool(true));
        }
        Some(Value::Null) | None => {
            let mut o = Map::new();
            o.insert("include_usage".into(), Value::Bool(true));
            obj.insert("stream_options".into(), Value::Object(o));
        }
        Some(_) => return None, // not ours to fix: the provider answers it
    }
    Some(serde_json::to_vec(&obj).expect("JSON values serialise"))
}

/// The member OpenAI adds to every chunk once usage is asked for (it writes compact JSON).
const NULL_USAGE: &[u8] = br#","usage":null"#;

/// One upstream event: passed byte for byte, except the usage-only chunk (dropped) and the
/// `"usage":null` member (removed).
pub fn on_event(e: &Event<'_>, out: &mut Vec<u8>) {
    let data = e.data;
    if data.windows(7).any(|w| w == b"\"usage\"") {
        if let Ok(v) = serde_json::from_slice::<Value>(data) {
            let usage_only = v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty)
                && v.get("usage").is_some_and(|u| !u.is_null());
            if usage_only {
                return;
            }
            if v.get("usage").is_some_and(Value::is_null)
                && let Some(at) = e.raw.windows(NULL_USAGE.len()).position(|w| w == NULL_USAGE)
            {
                out.extend_from_slice(&e.raw[..at]);
                out.extend_from_slice(&e.raw[at + NULL_USAGE.len()..]);
                return;
            }
        }
    }
    out.extend_from_slice(e.raw);
}
