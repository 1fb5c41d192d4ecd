//! `system_prompt`: puts the decision's system prompt into the request, replacing the client's
//! (`replace`) or in front of it (`insert`). OpenAI requests carry it as the first `system` (or
//! `developer`) message; Anthropic requests as the top-level `system` field.

use serde_json::{Map, Value, json};

use super::Api;
use crate::config::{SystemPromptMode, SystemPromptPlugin};

/// Separates the inserted prompt from the client's own system text.
const SEPARATOR: &str = "\n\n";

/// Applies the plugin; returns whether the prompt was put into the request.
pub fn apply(obj: &mut Map<String, Value>, api: Api, plugin: &SystemPromptPlugin) -> bool {
    match api {
        Api::Anthropic => {
            let system = obj.entry("system").or_insert(Value::Null);
            merge(system, &plugin.system_prompt, plugin.mode);
            true
        }
        Api::OpenAi => {
            let Some(Value::Array(messages)) = obj.get_mut("messages") else {
                // Completions-style prompts have no place for a system prompt.
                return false;
            };
            let existing = messages
                .iter_mut()
                .find(|m| matches!(m.get("role").and_then(Value::as_str), Some("system" | "developer")));
            match existing.and_then(|m| m.as_object_mut()) {
                Some(m) => merge(
                    m.entry("content").or_insert(Value::Null),
                    &plugin.system_prompt,
                    plugin.mode,
                ),
                None => messages.insert(0, json!({"role": "system", "content": plugin.system_prompt})),
            }
            true
        }
    }
}

/// Merges the prompt into a content value: a string, an array of text parts, or nothing.
fn merge(content: &mut Value, prompt: &str, mode: SystemPromptMode) {
    match (mode, content) {
        (SystemPromptMode::Insert, Value::String(s)) if !s.is_empty() => {
            s.insert_str(0, SEPARATOR);
            s.insert_str(0, prompt);
        }
        // Multi-part content keeps its parts (and any cache-control markers on them).
        (SystemPromptMode::Insert, Value::Array(parts)) if !parts.is_empty() => {
            parts.insert(0, json!({"type": "text", "text": prompt}));
        }
        (_, content) => *content = Value::String(prompt.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(mode: SystemPromptMode) -> SystemPromptPlugin {
        SystemPromptPlugin {
            enabled: true,
            system_prompt: "You are a math tutor.".into(),
            mode,
        }
    }

    fn run(body: Value, api: Api, mode: SystemPromptMode) -> (bool, Value) {
        let mut body = body;
        let done = apply(body.as_object_mut().unwrap(), api, &plugin(mode));
        (done, body)
    }

    #[test]
    fn openai_without_system_message_gets_one_first() {
        for mode in [SystemPromptMode::Replace, SystemPromptMode::Insert] {
            let (done, b) = run(
                json!({"messages": [{"role": "user", "content": "2+2?"}]}),
                Api::OpenAi,
                mode,
            );
            assert!(done);
            assert_eq!(
                b["messages"],
                json!([{"role": "system", "content": "You are a math tutor."}, {"role": "user", "content": "2+2?"}])
            );
        }
    }

    #[test]
    fn openai_replace_and_insert_with_an_existing_system_message() {
        let body = json!({"messages": [{"role": "user", "content": "u0"}, {"role": "system", "content": "Be terse."}]});
        let (_, b) = run(body.clone(), Api::OpenAi, SystemPromptMode::Replace);
        assert_eq!(b["messages"][1]["content"], "You are a math tutor.");
        assert_eq!(b["messages"].as_array().unwrap().len(), 2);
        let (_, b) = run(body, Api::OpenAi, SystemPromptMode::Insert);
        assert_eq!(b["messages"][1]["content"], "You are a math tutor.\n\nBe terse.");
        assert_eq!(b["messages"][0]["content"], "u0");
    }

    #[test]
    fn openai_multipart_and_developer_messages() {
        let body = json!({"messages": [{"role": "developer", "content": [{"type": "text", "text": "Be terse."}]}]});
        let (_, b) = run(body.clone(), Api::OpenAi, SystemPromptMode::Insert);
        assert_eq!(
            b["messages"][0]["content"],
            json!([{"type": "text", "text": "You are a math tutor."}, {"type": "text", "text": "Be terse."}])
        );
        assert_eq!(b["messages"][0]["role"], "developer");
        let (_, b) = run(body, Api::OpenAi, SystemPromptMode::Replace);
        assert_eq!(b["messages"][0]["content"], "You are a math tutor.");
    }

    #[test]
    fn openai_completions_prompt_is_left_alone() {
        let (done, b) = run(json!({"prompt": "x"}), Api::OpenAi, SystemPromptMode::Replace);
        assert!(!done);
        assert_eq!(b, json!({"prompt": "x"}));
    }

    #[test]
    fn anthropic_top_level_system() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let (done, b) = run(json!({"messages": msgs}), Api::Anthropic, SystemPromptMode::Insert);
        assert!(done);
        assert_eq!(b["system"], "You are a math tutor.");
        assert_eq!(b["messages"], msgs, "no system message is added to Anthropic messages");
        let (_, b) = run(
            json!({"system": "Be terse.", "messages": msgs}),
            Api::Anthropic,
            SystemPromptMode::Insert,
        );
        assert_eq!(b["system"], "You are a math tutor.\n\nBe terse.");
        let blocks = json!([{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}]);
        let (_, b) = run(
            json!({"system": blocks, "messages": msgs}),
            Api::Anthropic,
            SystemPromptMode::Insert,
        );
        assert_eq!(b["system"][0], json!({"type": "text", "text": "You are a math tutor."}));
        assert_eq!(b["system"][1]["cache_control"]["type"], "ephemeral");
        let (_, b) = run(
            json!({"system": blocks, "messages": msgs}),
            Api::Anthropic,
            SystemPromptMode::Replace,
        );
        assert_eq!(b["system"], "You are a math tutor.");
    }
}
