//! `request_params`: removes blocked top-level parameters, caps `max_tokens` (or
//! `max_completion_tokens`) and `n`, and optionally drops fields the API does not define.

use serde_json::{Map, Value};

use super::Api;
use crate::config::RequestParamsPlugin;

/// Top-level fields of an OpenAI chat-completions request (kept by `strip_unknown`), plus the
/// vLLM extensions llmsoup itself writes.
const OPENAI_FIELDS: &[&str] = &[
    "model",
    "messages",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
    "chat_template_kwargs",
];

/// Top-level fields of an Anthropic Messages request.
const ANTHROPIC_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "metadata",
    "service_tier",
    "stop_sequences",
    "stream",
    "system",
    "temperature",
    "thinking",
    "tool_choice",
    "tools",
    "top_k",
    "top_p",
];

/// Applies the plugin to a request object.
pub fn apply(obj: &mut Map<String, Value>, api: Api, plugin: &RequestParamsPlugin) {
    for name in &plugin.blocked_params {
        // `model` and `messages` are what routing is about; blocking them would break the request.
        if name != "model" && name != "messages" {
            obj.shift_remove(name);
        }
    }
    if plugin.strip_unknown {
        let known = match api {
            Api::OpenAi => OPENAI_FIELDS,
            Api::Anthropic => ANTHROPIC_FIELDS,
        };
        obj.retain(|k, _| known.contains(&k.as_str()));
    }
    if let Some(limit) = plugin.max_tokens_limit {
        let mut present = false;
        for key in ["max_tokens", "max_completion_tokens"] {
            if let Some(v) = obj.get_mut(key) {
                present = true;
                cap(v, limit);
            }
        }
        if !present {
            obj.insert("max_tokens".into(), Value::from(limit));
        }
    }
    if let Some(max_n) = plugin.max_n
        && let Some(v) = obj.get_mut("n")
    {
        cap(v, max_n);
    }
}

/// Caps a numeric value; a non-numeric or negative one is replaced by the limit, so the limit
/// holds whatever the client sent.
fn cap(v: &mut Value, limit: u64) {
    match v.as_u64() {
        Some(n) if n <= limit => {}
        _ => *v = Value::from(limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(body: Value, api: Api, plugin: RequestParamsPlugin) -> Value {
        let mut body = body;
        apply(body.as_object_mut().unwrap(), api, &plugin);
        body
    }

    #[test]
    fn caps_max_tokens_and_n_and_sets_a_missing_limit() {
        let p = RequestParamsPlugin {
            max_tokens_limit: Some(256),
            max_n: Some(1),
            ..Default::default()
        };
        let b = run(
            json!({"model": "m", "max_tokens": 4096, "n": 3}),
            Api::OpenAi,
            p.clone(),
        );
        assert_eq!(b, json!({"model": "m", "max_tokens": 256, "n": 1}));
        let b = run(json!({"max_completion_tokens": 100, "n": 1}), Api::OpenAi, p.clone());
        assert_eq!(
            b,
            json!({"max_completion_tokens": 100, "n": 1}),
            "under the caps: unchanged"
        );
        let b = run(json!({"messages": []}), Api::OpenAi, p.clone());
        assert_eq!(b["max_tokens"], 256);
        assert!(b.get("n").is_none(), "a missing n means 1");
        let b = run(json!({"max_tokens": "lots", "n": -2}), Api::OpenAi, p);
        assert_eq!(b, json!({"max_tokens": 256, "n": 1}));
    }

    #[test]
    fn blocks_params_but_never_model_or_messages() {
        let p = RequestParamsPlugin {
            blocked_params: vec!["logit_bias".into(), "model".into(), "messages".into(), "absent".into()],
            ..Default::default()
        };
        let b = run(
            json!({"model": "m", "messages": [], "logit_bias": {"1": 2}, "temperature": 1}),
            Api::OpenAi,
            p,
        );
        assert_eq!(b, json!({"model": "m", "messages": [], "temperature": 1}));
    }

    #[test]
    fn strip_unknown_per_api() {
        let p = RequestParamsPlugin {
            strip_unknown: true,
            ..Default::default()
        };
        let body = json!({"model": "m", "messages": [], "temperature": 1, "system": "s", "top_k": 5, "foo": 1});
        assert_eq!(
            run(body.clone(), Api::OpenAi, p.clone()),
            json!({"model": "m", "messages": [], "temperature": 1})
        );
        assert_eq!(
            run(body, Api::Anthropic, p),
            json!({"model": "m", "messages": [], "temperature": 1, "system": "s", "top_k": 5})
        );
    }
}
