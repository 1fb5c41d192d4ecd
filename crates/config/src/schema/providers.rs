//! Upstream providers and the models they serve: `providers:`, `models:`.

use super::*;

/// The API a provider speaks. Requests in another API are translated on the way (OpenAI Chat
/// Completions <-> Anthropic Messages, JSON and SSE), responses on the way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderApi {
    /// OpenAI-compatible: `/v1/chat/completions`, `/v1/responses`, `/v1/completions`,
    /// `/v1/embeddings` (OpenAI, vLLM, Ollama, llama.cpp, ...).
    #[default]
    Openai,
    /// Anthropic Messages (`/v1/messages`): the key goes in `x-api-key` and Envoy adds
    /// `anthropic-version` when the client did not send one.
    Anthropic,
}

/// The `anthropic-version` Envoy sends to Anthropic providers when the client sent none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// An upstream LLM provider.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name; the Envoy cluster is `provider_<name>`.
    pub name: String,
    /// The API it speaks (`openai` or `anthropic`; `format` is the former name of this key).
    #[serde(default, alias = "format")]
    pub api: ProviderApi,
    /// Base URL as OpenAI SDKs take it, e.g. `https://api.openai.com/v1`; its path replaces the
    /// client's `/v1` prefix.
    pub base_url: String,
    /// Credential Envoy injects on every upstream request (never logged or printed).
    #[serde(default)]
    pub credentials: Option<CredentialsConfig>,
    /// TCP connect timeout in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Ejecting the provider while it fails (Envoy's outlier detection).
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
    /// Limits on connections and requests to the provider (Envoy's circuit breakers).
    #[serde(default)]
    pub circuit_breakers: CircuitBreakers,
    /// OpenAI-format providers: ask for the usage chunk on streams whose client did not
    /// (`stream_options.include_usage`, hidden from the client again), so streamed tokens and
    /// spend are accounted. Turn off for servers that reject `stream_options` (older Azure
    /// OpenAI API versions, some self-hosted servers): their streams then count no tokens
    /// unless the client asks for usage itself.
    #[serde(default = "yes")]
    pub stream_usage: bool,
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

/// Where Envoy reads a provider credential from.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Environment variable of the Envoy process holding the key.
    #[serde(default)]
    pub env: Option<String>,
    /// File holding the key (re-read by Envoy when it changes).
    #[serde(default)]
    pub file: Option<String>,
    /// Header to set (default: `authorization`, or `x-api-key` for an Anthropic provider).
    #[serde(default)]
    pub header: Option<String>,
    /// Prefix put before the key in the header value (default: `Bearer `, or none for an
    /// Anthropic provider).
    #[serde(default)]
    pub prefix: Option<String>,
}

/// A parsed provider base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether Envoy must speak TLS.
    pub tls: bool,
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path that replaces the client's `/v1` (no trailing slash).
    pub path_prefix: String,
}

impl ProviderConfig {
    /// The header Envoy puts the credential in, and the prefix before the key.
    pub fn credential_header(&self, c: &CredentialsConfig) -> (String, String) {
        let (header, prefix) = match self.api {
            ProviderApi::Openai => ("authorization", "Bearer "),
            ProviderApi::Anthropic => ("x-api-key", ""),
        };
        (
            c.header.clone().unwrap_or_else(|| header.into()),
            c.prefix.clone().unwrap_or_else(|| prefix.into()),
        )
    }

    /// Parses `base_url`.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let url = url::Url::parse(&self.base_url).map_err(|e| format!("`{}` is not a URL: {e}", self.base_url))?;
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            s => return Err(format!("scheme `{s}` is not supported (use http or https)")),
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("`{}` has no host", self.base_url)),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("`{}` has no port", self.base_url))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err("base_url must not have a query or fragment".into());
        }
        let path = url.path().trim_end_matches('/');
        let path_prefix = if path.is_empty() {
            "/v1".to_string()
        } else {
            path.to_string()
        };
        Ok(Endpoint {
            tls,
            host,
            port,
            path_prefix,
        })
    }
}

/// Per-million-token prices in USD.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// USD per 1M prompt tokens.
    #[serde(default)]
    pub prompt_per_1m: f64,
    /// USD per 1M completion tokens.
    #[serde(default)]
    pub completion_per_1m: f64,
    /// USD per 1M cached prompt tokens (defaults to the prompt price).
    #[serde(default)]
    pub cached_prompt_per_1m: Option<f64>,
}

/// A model clients can be routed to.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name clients and decisions use; also the `x-llmsoup-model` header value.
    pub name: String,
    /// Provider serving it.
    pub provider: String,
    /// Model id sent to the provider (defaults to `name`).
    #[serde(default)]
    pub model_id: Option<String>,
    /// Prices, for cost accounting and cost-aware selection.
    #[serde(default)]
    pub pricing: Option<Pricing>,
    /// Quality score in 0..1, for cost/quality trade-offs.
    #[serde(default)]
    pub quality: Option<f64>,
    /// Ability on the learned router's scale (Rasch logits fitted on MMLU-Pro outcomes:
    /// Mixtral-8x7B-Instruct −0.77, GPT-4o 1.45), read by `success_target` selection. Default:
    /// the learned value when `model_id` (or `name`) is one of the 30 models it was fitted on
    /// (`llmsoup_config::strengths`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    /// Free-form tier label (e.g. `cheap`, `strong`).
    #[serde(default)]
    pub tier: Option<String>,
    /// Disabled models are never selected.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
    /// Key of `routing.reasoning_families`: how this model's reasoning is toggled.
    #[serde(default)]
    pub reasoning_family: Option<String>,
    /// Models Envoy retries a failed request on, in order, within the same client request
    /// (connect error, reset, 5xx, 429); see `routing.fallback`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    /// What the model can take; fallbacks that cannot take a request are skipped.
    #[serde(default)]
    pub capabilities: Capabilities,
}

impl ModelConfig {
    /// The model id the provider expects in the body.
    pub fn provider_model_id(&self) -> &str {
        self.model_id.as_deref().unwrap_or(&self.name)
    }
}
