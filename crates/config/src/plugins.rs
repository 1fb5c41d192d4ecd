//! Decision plugins and reasoning settings: what a matched decision does to the request besides
//! choosing a model (vLLM Semantic Router's plugin names and shapes are accepted as is).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One decision plugin, written as vLLM Semantic Router does: `{type, configuration}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", content = "configuration", rename_all = "snake_case")]
pub enum PluginConfig {
    /// Sets the system prompt (`insert` before an existing one, or `replace` it).
    SystemPrompt(SystemPromptPlugin),
    /// Adds, updates or deletes request headers sent upstream.
    HeaderMutation(HeaderMutationPlugin),
    /// Answers immediately without calling a model (used to block requests).
    FastResponse(FastResponsePlugin),
    /// Rejects or caps request parameters.
    RequestParams(RequestParamsPlugin),
    /// Response cache: exact match, then semantic (vLLM Semantic Router's `semantic-cache`).
    #[serde(
        rename = "cache",
        alias = "semantic-cache",
        alias = "semantic_cache",
        alias = "response-cache",
        alias = "response_cache"
    )]
    Cache(CachePlugin),
}

impl PluginConfig {
    /// The plugin's type name as written in configs.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginConfig::SystemPrompt(_) => "system_prompt",
            PluginConfig::HeaderMutation(_) => "header_mutation",
            PluginConfig::FastResponse(_) => "fast_response",
            PluginConfig::RequestParams(_) => "request_params",
            PluginConfig::Cache(_) => "cache",
        }
    }
}

fn yes() -> bool {
    true
}

/// How the configured system prompt meets one the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemPromptMode {
    /// Replace the client's system message (or add one when there is none).
    #[default]
    Replace,
    /// Put the configured prompt before the client's system message text.
    Insert,
}

/// `system_prompt` plugin.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemPromptPlugin {
    /// Off = the plugin does nothing.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The system prompt text.
    pub system_prompt: String,
    /// `replace` (default) or `insert`.
    #[serde(default)]
    pub mode: SystemPromptMode,
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderValue {
    /// Header name (lower-cased on the wire).
    pub name: String,
    /// Header value.
    pub value: String,
}

/// `header_mutation` plugin: applied to the request Envoy sends upstream.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderMutationPlugin {
    /// Headers appended (kept alongside existing values).
    #[serde(default)]
    pub add: Vec<HeaderValue>,
    /// Headers set, replacing existing values.
    #[serde(default)]
    pub update: Vec<HeaderValue>,
    /// Header names removed.
    #[serde(default)]
    pub delete: Vec<String>,
}

/// `fast_response` plugin: the gateway answers in the client's API shape.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FastResponsePlugin {
    /// The assistant message text returned.
    pub message: String,
    /// HTTP status (default 200, as vLLM Semantic Router; 403 makes it an OpenAI error body).
    #[serde(default = "default_fast_status")]
    pub status: u16,
}

fn default_fast_status() -> u16 {
    200
}

/// `request_params` plugin.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestParamsPlugin {
    /// Top-level body fields removed before the request goes upstream.
    #[serde(default)]
    pub blocked_params: Vec<String>,
    /// Caps `max_tokens` / `max_completion_tokens` (and sets it when absent).
    #[serde(default)]
    pub max_tokens_limit: Option<u64>,
    /// Caps `n`.
    #[serde(default)]
    pub max_n: Option<u64>,
    /// Drop top-level fields that are not OpenAI chat-completions parameters.
    #[serde(default)]
    pub strip_unknown: bool,
}

/// Whose answers a cached entry may serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// Only the client token (tenant) whose request stored it.
    #[default]
    Tenant,
    /// Every client.
    Shared,
}

/// `cache` plugin (alias `semantic-cache`): answers a request from a stored answer to the same
/// request (exact match on the chosen model, the whole conversation, system prompt, tools and
/// sampling parameters) or, with `semantic`, to a paraphrase of its last user turn in the same
/// conversation context. Storage, TTL and size bounds: the top-level `response_cache` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePlugin {
    /// Off = the plugin does nothing.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also match paraphrases of the last user turn (cosine similarity of the shared query
    /// embedding) when the rest of the request is identical.
    #[serde(default = "yes")]
    pub semantic: bool,
    /// Least cosine similarity for a semantic hit (0–1].
    #[serde(default = "default_similarity_threshold")]
    pub similarity_threshold: f32,
    /// Entry lifetime in seconds (default: `response_cache.ttl_seconds`).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Requests with a higher `temperature` are neither looked up nor stored (sampled answers
    /// are meant to vary); `null` caches any temperature. A request without `temperature` is
    /// cached.
    #[serde(default = "default_max_temperature")]
    pub max_temperature: Option<f64>,
    /// `tenant` (default): answers serve only the client token that stored them; `shared`: all.
    #[serde(default)]
    pub scope: CacheScope,
}

fn default_similarity_threshold() -> f32 {
    0.92
}

fn default_max_temperature() -> Option<f64> {
    Some(1.0)
}

impl Default for CachePlugin {
    fn default() -> Self {
        CachePlugin {
            enabled: true,
            semantic: true,
            similarity_threshold: default_similarity_threshold(),
            ttl_seconds: None,
            max_temperature: default_max_temperature(),
            scope: CacheScope::Tenant,
        }
    }
}

/// Reasoning effort levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningEffort {
    /// Little thinking.
    Low,
    /// Default thinking.
    Medium,
    /// Most thinking.
    High,
}

impl ReasoningEffort {
    /// The value sent upstream.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }
}

/// How a model family turns reasoning on and off in the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningToggle {
    /// `chat_template_kwargs.<parameter> = true|false` (Qwen3 `enable_thinking`, DeepSeek `thinking`).
    ChatTemplateKwargs,
    /// `<parameter> = low|medium|high` when reasoning is on (e.g. gpt-oss `reasoning_effort`).
    ReasoningEffort,
    /// Top-level `reasoning_effort` field, as OpenAI o-series models take it.
    TopLevelReasoningEffort,
}

/// One reasoning family (keyed by name under `routing.reasoning_families`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasoningFamily {
    /// How the toggle is written.
    #[serde(rename = "type")]
    pub kind: ReasoningToggle,
    /// The field (or template kwarg) name.
    pub parameter: String,
}

/// Named reasoning families.
pub type ReasoningFamilies = BTreeMap<String, ReasoningFamily>;
