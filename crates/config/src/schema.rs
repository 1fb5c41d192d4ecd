//! The native configuration schema (published as JSON Schema by `llmsoup config schema`).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConfigError, PluginConfig, ReasoningEffort, ReasoningFamilies, TokenCount};

/// The whole llmsoup configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the sidecar listens.
    #[serde(default)]
    pub server: ServerConfig,
    /// How `llmsoup envoy-config` renders the Envoy bootstrap.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// Upstream LLM providers (one Envoy cluster each).
    pub providers: Vec<ProviderConfig>,
    /// Models clients can be routed to.
    pub models: Vec<ModelConfig>,
    /// Signal rules evaluated on each routed request.
    #[serde(default)]
    pub signals: SignalsConfig,
    /// Rule trees over signals that pick models.
    #[serde(default)]
    pub decisions: Vec<DecisionConfig>,
    /// Routing gate and decision selection settings.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Client authentication at the gateway.
    #[serde(default)]
    pub auth: AuthConfig,
    /// The sentence-embedding model shared by model-based signals.
    #[serde(default)]
    pub embedding: EmbeddingConfig,
    /// The built-in domain classifier.
    #[serde(default)]
    pub classifier: ClassifierConfig,
    /// The decision log.
    #[serde(default)]
    pub decision_log: Option<DecisionLogConfig>,
    /// Compatibility with vLLM Semantic Router clients, dashboards and Envoy routes.
    #[serde(default)]
    pub compat: CompatConfig,
}

/// Compatibility switches for users coming from vLLM Semantic Router.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompatConfig {
    /// Also send vSR's `x-vsr-selected-model`, `x-vsr-selected-decision`, ... response headers.
    #[serde(default)]
    pub vsr_headers: bool,
    /// Also set this request header to the selected model (e.g. `x-selected-model`), for Envoy
    /// routes written for vSR; `llmsoup envoy-config` routes on it when set.
    #[serde(default)]
    pub selected_model_header: Option<String>,
}

/// Where routed requests and feedback are logged (JSON lines).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionLogConfig {
    /// File to append to.
    pub path: String,
    /// Write prompts in clear (default: only their SHA-256).
    #[serde(default)]
    pub include_prompt: bool,
}

/// Settings of the built-in domain classifier (14 MMLU-Pro categories).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Probability the best category needs; below it the label is `other`.
    #[serde(default = "default_classifier_threshold")]
    pub threshold: f32,
    /// A BERT sequence-classification checkpoint (Hugging Face `BertForSequenceClassification`:
    /// a directory with `config.json` naming its labels in `id2label`, `tokenizer.json` and
    /// `model.safetensors`, or a hub id) used instead of the built-in head; domain rules match
    /// its labels by name or through `mmlu_categories`.
    #[serde(default)]
    pub checkpoint: Option<String>,
}

fn default_classifier_threshold() -> f32 {
    0.3
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            threshold: default_classifier_threshold(),
            checkpoint: None,
        }
    }
}

/// The sentence encoder behind embedding signals (loaded lazily, on first use).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// A directory holding `config.json`, `tokenizer.json` and `model.safetensors` (default:
    /// `$LLMSOUP_MODEL_DIR`, else `.cache/models/all-MiniLM-L6-v2` where `make models` puts it), or
    /// a Hugging Face id such as
    /// `sentence-transformers/all-MiniLM-L6-v2` (downloaded through hf-hub when online).
    #[serde(default = "default_embedding_model")]
    pub model: String,
    /// Longest input in tokens; longer texts keep their head and tail (default 128: a prompt's
    /// first and last sentences carry its intent, and the cost grows with this window).
    #[serde(default = "default_embedding_max_tokens")]
    pub max_tokens: usize,
    /// Most texts per forward pass when concurrent requests are batched.
    #[serde(default = "default_embedding_batch")]
    pub batch_size: usize,
    /// Inference threads (each forward pass uses every core; more helps only on big machines).
    #[serde(default = "one")]
    pub workers: usize,
    /// Bounded inference queue; when full, model signals report no match instead of waiting.
    #[serde(default = "default_embedding_queue")]
    pub queue: usize,
    /// Query embeddings cached (LRU).
    #[serde(default = "default_embedding_cache")]
    pub cache_entries: u64,
    /// How many matching embedding rules are reported (best first), as vLLM Semantic Router.
    #[serde(default = "one")]
    pub top_k: usize,
    /// Numeric precision of the encoder's dense layers: `auto` (default: bf16 on CPUs with AMX,
    /// else f32), `f32` (exact), `bf16` (AMX tiles, f32 accumulation; within cosine 0.9999 of
    /// f32), `int8` (AVX-512 VNNI; embeddings within ~1% of f32). Unsupported → f32 + warning.
    #[serde(default)]
    pub precision: Precision,
}

/// Numeric precision of the encoder's dense layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bf16 where the CPU has AMX tiles, else f32.
    #[default]
    Auto,
    /// 32-bit floats.
    F32,
    /// bf16 weights and inputs on AMX tiles, f32 accumulation.
    Bf16,
    /// 8-bit integer weights and activations (AVX-512 VNNI).
    Int8,
}

/// `$LLMSOUP_MODEL_DIR` when set (the container image sets it), else where `make models` puts it.
fn default_embedding_model() -> String {
    std::env::var("LLMSOUP_MODEL_DIR").unwrap_or_else(|_| ".cache/models/all-MiniLM-L6-v2".into())
}
fn default_embedding_max_tokens() -> usize {
    128
}
fn default_embedding_batch() -> usize {
    16
}
fn default_embedding_queue() -> usize {
    256
}
fn default_embedding_cache() -> u64 {
    4096
}
fn one() -> usize {
    1
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        EmbeddingConfig {
            model: default_embedding_model(),
            max_tokens: default_embedding_max_tokens(),
            batch_size: default_embedding_batch(),
            workers: 1,
            queue: default_embedding_queue(),
            cache_entries: default_embedding_cache(),
            top_k: 1,
            precision: Precision::Auto,
        }
    }
}

/// Sidecar listen addresses.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC address serving Envoy's ExternalProcessor (and llmsoup's Router) services.
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: String,
    /// Admin HTTP address (`/health`, `/ready`, `/metrics`); `null` turns it off.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: Option<String>,
    /// Shared secret the gRPC port requires (`authorization: Bearer <token>` metadata) on the
    /// ext_proc and Router services. `llmsoup envoy-config` renders it into Envoy's ext_proc
    /// `initial_metadata` and the wasm filter's config, so the rendered bootstrap is a secret
    /// too. Use `${ENV}` substitution to keep it out of the file. Unset: no gRPC auth (a
    /// warning at start when the port listens beyond loopback). Empty counts as unset, so a
    /// shared config can say `"${LLMSOUP_GRPC_TOKEN:-}"`.
    #[serde(default, deserialize_with = "empty_as_none", skip_serializing_if = "Option::is_none")]
    pub grpc_token: Option<String>,
}

fn empty_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

fn default_admin_listen() -> Option<String> {
    Some("127.0.0.1:9190".into())
}

fn default_grpc_listen() -> String {
    "127.0.0.1:50051".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_listen: default_grpc_listen(),
            admin_listen: default_admin_listen(),
            grpc_token: None,
        }
    }
}

/// Which Envoy filter talks to the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// Envoy's own `envoy.filters.http.ext_proc` filter.
    #[default]
    ExtProc,
    /// llmsoup's proxy-wasm filter calling the Router service.
    Wasm,
}

/// What Envoy does when the sidecar is unreachable or too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Keep serving: route to the default model.
    #[default]
    Open,
    /// Refuse with 503.
    Closed,
}

/// Envoy bootstrap rendering settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Envoy listener for client traffic (`host:port`).
    #[serde(default = "default_gateway_listen")]
    pub listen: String,
    /// Envoy admin interface (`host:port`); keep it on localhost.
    #[serde(default = "default_gateway_admin")]
    pub admin: String,
    /// Attach mode.
    #[serde(default)]
    pub mode: AttachMode,
    /// Behaviour when the sidecar fails.
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Largest request body Envoy buffers, in bytes; larger requests get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// How long Envoy waits for the sidecar per message, in milliseconds.
    #[serde(default = "default_sidecar_timeout_ms")]
    pub sidecar_timeout_ms: u64,
    /// Envoy's gRPC health check of the sidecar (`grpc.health.v1.Health`): while it fails, both
    /// attach modes take the fail-open (or fail-closed) path at once instead of waiting
    /// `sidecar_timeout_ms` per request.
    #[serde(default)]
    pub sidecar_health_check: SidecarHealthCheck,
    /// Address Envoy uses to reach the sidecar (defaults to `server.grpc_listen`).
    #[serde(default)]
    pub sidecar_address: Option<String>,
    /// CA bundle Envoy uses to verify HTTPS providers.
    #[serde(default = "default_ca_bundle")]
    pub ca_bundle: String,
    /// Path of the compiled wasm filter (wasm mode).
    #[serde(default)]
    pub wasm_path: Option<String>,
    /// Read response bodies for token usage, cost and time per output token. `false` keeps every
    /// response body away from the sidecar (ext_proc) and unread (wasm): requests, status, time to
    /// first byte and duration are still recorded; tokens, cost and savings are not.
    #[serde(default = "yes")]
    pub response_accounting: bool,
    /// ext_proc mode: read responses for accounting in a second ext_proc filter in observability
    /// mode, which Envoy never waits for, instead of on the routing stream, where each streamed
    /// chunk waits for the sidecar's answer. Costs a second gRPC stream per request.
    #[serde(default)]
    pub async_response_accounting: bool,
}

fn default_gateway_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_gateway_admin() -> String {
    "127.0.0.1:9901".into()
}
fn default_max_body_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_sidecar_timeout_ms() -> u64 {
    5_000
}

/// The sidecar circuit breaker: Envoy's active health check of the sidecar cluster. A hung
/// sidecar is marked unhealthy after `unhealthy_threshold` checks fail (each waits `timeout_ms`),
/// so at most about `unhealthy_threshold × (interval_ms + timeout_ms)` of traffic waits the full
/// `sidecar_timeout_ms`; one passing check brings it back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarHealthCheck {
    /// Off = no health check: every request to a hung sidecar waits `sidecar_timeout_ms`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Time between checks, in milliseconds.
    #[serde(default = "default_hc_interval_ms")]
    pub interval_ms: u64,
    /// How long one check waits for the answer, in milliseconds.
    #[serde(default = "default_hc_timeout_ms")]
    pub timeout_ms: u64,
    /// Failed checks in a row that mark the sidecar unhealthy.
    #[serde(default = "default_hc_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Passing checks in a row that mark it healthy again.
    #[serde(default = "default_hc_healthy_threshold")]
    pub healthy_threshold: u32,
}

fn default_hc_interval_ms() -> u64 {
    1_000
}
fn default_hc_timeout_ms() -> u64 {
    500
}
fn default_hc_unhealthy_threshold() -> u32 {
    3
}
fn default_hc_healthy_threshold() -> u32 {
    1
}

impl Default for SidecarHealthCheck {
    fn default() -> Self {
        SidecarHealthCheck {
            enabled: true,
            interval_ms: default_hc_interval_ms(),
            timeout_ms: default_hc_timeout_ms(),
            unhealthy_threshold: default_hc_unhealthy_threshold(),
            healthy_threshold: default_hc_healthy_threshold(),
        }
    }
}
fn default_ca_bundle() -> String {
    "/etc/ssl/certs/ca-certificates.crt".into()
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: default_gateway_listen(),
            admin: default_gateway_admin(),
            mode: AttachMode::default(),
            failure_mode: FailureMode::default(),
            max_body_bytes: default_max_body_bytes(),
            sidecar_timeout_ms: default_sidecar_timeout_ms(),
            sidecar_health_check: SidecarHealthCheck::default(),
            sidecar_address: None,
            ca_bundle: default_ca_bundle(),
            wasm_path: None,
            response_accounting: true,
            async_response_accounting: false,
        }
    }
}

/// Wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderFormat {
    /// OpenAI-compatible `/v1/chat/completions` (OpenAI, vLLM, Ollama, llama.cpp, ...).
    #[default]
    Openai,
}

/// An upstream LLM provider.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name; the Envoy cluster is `provider_<name>`.
    pub name: String,
    /// Wire format.
    #[serde(default)]
    pub format: ProviderFormat,
    /// Base URL as OpenAI SDKs take it, e.g. `https://api.openai.com/v1`; its path replaces the
    /// client's `/v1` prefix.
    pub base_url: String,
    /// Credential Envoy injects on every upstream request (never logged or printed).
    #[serde(default)]
    pub credentials: Option<CredentialsConfig>,
    /// TCP connect timeout in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
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
    /// Header to set.
    #[serde(default = "default_credential_header")]
    pub header: String,
    /// Prefix put before the key in the header value.
    #[serde(default = "default_credential_prefix")]
    pub prefix: String,
}

fn default_credential_header() -> String {
    "authorization".into()
}
fn default_credential_prefix() -> String {
    "Bearer ".into()
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
}

fn yes() -> bool {
    true
}

impl ModelConfig {
    /// The model id the provider expects in the body.
    pub fn provider_model_id(&self) -> &str {
        self.model_id.as_deref().unwrap_or(&self.name)
    }
}

/// All signal rules, grouped by kind.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {
    /// Keyword and regex rules.
    #[serde(default)]
    pub keywords: Vec<KeywordRule>,
    /// Prompt-length ranges.
    #[serde(default)]
    pub context: Vec<ContextRule>,
    /// Languages (ISO-639-1 names).
    #[serde(default)]
    pub language: Vec<LanguageRule>,
    /// Semantic similarity to candidate phrases.
    #[serde(default)]
    pub embeddings: Vec<EmbeddingRule>,
    /// Subject domains: built-in MMLU-Pro categories or custom ones.
    #[serde(default)]
    pub domains: Vec<DomainRule>,
    /// Task complexity (easy / medium / hard); conditions name `<rule>:easy|medium|hard`.
    #[serde(default)]
    pub complexity: Vec<ComplexityRule>,
    /// Observed upstream latency: matches when a model of the group is over its target.
    #[serde(default)]
    pub latency: Vec<LatencyRule>,
    /// Personal data found in the prompt (matches when a type not allowed is present).
    #[serde(default)]
    pub pii: Vec<PiiRule>,
    /// Prompt-injection / jailbreak attempts.
    #[serde(default)]
    pub jailbreak: Vec<JailbreakRule>,
}

/// A PII rule: matches when the prompt holds personal data of a type not in `pii_types_allowed`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiiRule {
    /// Signal name referenced by decisions.
    pub name: String,
    /// vSR PII type names that do not make the rule match (e.g. `EMAIL_ADDRESS`).
    #[serde(default)]
    pub pii_types_allowed: Vec<String>,
    /// Minimum recognizer confidence (0..1, default 0.5).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Also scan earlier user turns.
    #[serde(default)]
    pub include_history: bool,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A jailbreak rule: the built-in prompt-injection classifier plus optional patterns.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JailbreakRule {
    /// Signal name referenced by decisions.
    pub name: String,
    /// Classifier probability needed to match (0..1, default 0.5).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Phrases whose embedding similarity also counts as an attempt.
    #[serde(default)]
    pub jailbreak_patterns: Vec<String>,
    /// Phrases that pull a borderline prompt back to benign.
    #[serde(default)]
    pub benign_patterns: Vec<String>,
    /// Also scan earlier user turns.
    #[serde(default)]
    pub include_history: bool,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A latency rule, e.g. "the primary provider is slow" to fall back to a secondary one.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyRule {
    /// Signal name referenced by decisions.
    pub name: String,
    /// Models watched; the rule matches when any of them is over a target.
    pub models: Vec<String>,
    /// Which TTFT percentile to compare (1–100, default 90).
    #[serde(default = "default_ttft_percentile")]
    pub ttft_percentile: u8,
    /// Time-to-first-token target in milliseconds.
    #[serde(default)]
    pub ttft_target_ms: Option<f64>,
    /// Median time-per-output-token target in milliseconds.
    #[serde(default)]
    pub tpot_target_ms: Option<f64>,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
}

/// Exemplar prompts for one end of the complexity scale.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exemplars {
    /// Example prompts.
    #[serde(default)]
    pub candidates: Vec<String>,
}

/// A complexity rule: a 0–1 score from similarity to hard/easy exemplars and request features
/// (length, conversation depth, system prompt, JSON mode, tools, code, reasoning cues).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComplexityRule {
    /// Rule name; decisions reference `<name>:easy`, `<name>:medium` or `<name>:hard`.
    pub name: String,
    /// Prompts that are hard.
    #[serde(default)]
    pub hard: Exemplars,
    /// Prompts that are easy.
    #[serde(default)]
    pub easy: Exemplars,
    /// Scores below this are easy (default 0.35).
    #[serde(default = "default_easy_below")]
    pub easy_below: f64,
    /// Scores at or above this are hard (default 0.6).
    #[serde(default = "default_hard_from")]
    pub hard_from: f64,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
}

fn default_easy_below() -> f64 {
    0.35
}
fn default_hard_from() -> f64 {
    0.6
}

/// A domain rule: a built-in category (`math`, `law`, `health`, ...), or a custom domain given by
/// a description and examples (matched by similarity), optionally also satisfied by built-in
/// categories listed in `mmlu_categories`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainRule {
    /// Signal name referenced by decisions; a built-in category name selects that category.
    pub name: String,
    /// What the domain is about (used as a prototype).
    #[serde(default)]
    pub description: Option<String>,
    /// Example prompts (prototypes).
    #[serde(default)]
    pub examples: Vec<String>,
    /// Built-in categories that also satisfy this rule.
    #[serde(default)]
    pub mmlu_categories: Vec<String>,
    /// Similarity a custom domain's prototypes need (default 0.35).
    #[serde(default)]
    pub threshold: Option<f32>,
}

/// How an embedding rule turns candidate similarities into a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Best candidate's similarity must reach the threshold.
    #[default]
    Max,
    /// Mean similarity over all candidates must reach the threshold.
    Mean,
    /// Any candidate reaching the threshold matches (score = the best one).
    Any,
}

/// An embedding-similarity rule.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRule {
    /// Signal name referenced by decisions.
    pub name: String,
    /// Example phrases; their embeddings are computed once per config load.
    pub candidates: Vec<String>,
    /// Cosine similarity needed to match (0..1).
    #[serde(default = "default_similarity")]
    pub threshold: f32,
    /// `max` (default), `mean` or `any`.
    #[serde(default, alias = "aggregation_method")]
    pub aggregation: Aggregation,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
}

fn default_similarity() -> f32 {
    0.6
}

/// The kinds of signal a decision can reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// Keyword / regex patterns.
    Keyword,
    /// Estimated prompt length.
    Context,
    /// Detected language.
    Language,
    /// Semantic similarity to candidate phrases.
    Embedding,
    /// Subject domain.
    Domain,
    /// Task complexity.
    Complexity,
    /// Observed upstream latency.
    Latency,
    /// Personal data in the prompt.
    Pii,
    /// Prompt-injection / jailbreak attempt.
    Jailbreak,
}

impl SignalKind {
    /// The name used in configs and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Keyword => "keyword",
            SignalKind::Context => "context",
            SignalKind::Language => "language",
            SignalKind::Embedding => "embedding",
            SignalKind::Domain => "domain",
            SignalKind::Complexity => "complexity",
            SignalKind::Latency => "latency",
            SignalKind::Pii => "pii",
            SignalKind::Jailbreak => "jailbreak",
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a keyword rule combines its keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeywordOperator {
    /// Any keyword matches.
    #[default]
    #[serde(alias = "or")]
    Or,
    /// Every keyword matches.
    #[serde(alias = "and")]
    And,
    /// No keyword matches.
    #[serde(alias = "nor")]
    Nor,
}

/// How keywords are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeywordMethod {
    /// Literal text, escaped and word-bounded.
    #[default]
    Literal,
    /// Each keyword is a raw regular expression.
    Regex,
}

/// A keyword rule.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeywordRule {
    /// Signal name referenced by decisions.
    pub name: String,
    /// AND / OR / NOR.
    #[serde(default)]
    pub operator: KeywordOperator,
    /// Keywords or regexes.
    pub keywords: Vec<String>,
    /// Match case exactly.
    #[serde(default)]
    pub case_sensitive: bool,
    /// `literal` (default) or `regex`.
    #[serde(default)]
    pub method: KeywordMethod,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A context-length rule; matches when the estimated prompt tokens fall in the range.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContextRule {
    /// Signal name referenced by decisions.
    pub name: String,
    /// Inclusive lower bound.
    #[serde(default)]
    pub min_tokens: Option<TokenCount>,
    /// Inclusive upper bound.
    #[serde(default)]
    pub max_tokens: Option<TokenCount>,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A language rule; `name` is the ISO-639-1 code to match.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LanguageRule {
    /// ISO-639-1 code (`en`, `fr`, `zh`, ...).
    pub name: String,
    /// Minimum detector confidence (default 0.3).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
}

/// Boolean operator of a rule-tree node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RuleOperator {
    /// All children match; confidence is their mean.
    #[serde(alias = "and")]
    And,
    /// Any child matches; confidence is the best child's.
    #[serde(alias = "or")]
    Or,
    /// The single child does not match; confidence 1.
    #[serde(alias = "not")]
    Not,
}

/// A rule-tree node: a leaf `{type, name}` or a group `{operator, conditions}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleNode {
    /// Leaf: signal kind.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<SignalKind>,
    /// Leaf: signal name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Group: operator (default OR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<RuleOperator>,
    /// Group: children.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RuleNode>,
}

impl RuleNode {
    /// Checks the node's shape and that every leaf names a configured signal.
    pub fn check(&self, at: &str, known: &dyn Fn(SignalKind, &str) -> bool) -> Result<(), ConfigError> {
        match (&self.kind, &self.name) {
            (Some(kind), Some(name)) => {
                if self.operator.is_some() || !self.conditions.is_empty() {
                    return Err(ConfigError::invalid(
                        at,
                        "a condition is either a leaf {type, name} or a group {operator, conditions}",
                    ));
                }
                if !known(*kind, name) {
                    return Err(ConfigError::invalid(
                        format!("{at}.name"),
                        format!("no {kind} signal named `{name}` in signals"),
                    ));
                }
                Ok(())
            }
            (Some(_), None) => Err(ConfigError::invalid(at, "a leaf condition needs `name`")),
            (None, Some(_)) => Err(ConfigError::invalid(at, "a leaf condition needs `type`")),
            (None, None) => {
                if self.operator == Some(RuleOperator::Not) && self.conditions.len() != 1 {
                    return Err(ConfigError::invalid(
                        format!("{at}.conditions"),
                        "NOT takes exactly one condition",
                    ));
                }
                for (i, c) in self.conditions.iter().enumerate() {
                    c.check(&format!("{at}.conditions[{i}]"), known)?;
                }
                Ok(())
            }
        }
    }
}

/// A reference from a decision to a model.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// Model name (see `models`).
    pub model: String,
    /// Turn reasoning on or off for this model (through its `reasoning_family`).
    #[serde(default)]
    pub use_reasoning: Option<bool>,
    /// Effort when reasoning is on (default `routing.default_reasoning_effort`).
    #[serde(default)]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// A LoRA adapter name sent upstream as the model id instead of the model's own.
    #[serde(default)]
    pub lora_name: Option<String>,
}

impl ModelRef {
    /// A plain reference to a model, with no reasoning or LoRA settings.
    pub fn new(model: impl Into<String>) -> Self {
        ModelRef {
            model: model.into(),
            use_reasoning: None,
            reasoning_effort: None,
            lora_name: None,
        }
    }
}

/// A routing decision: when `rules` match, route to one of `modelRefs`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionConfig {
    /// Unique name, returned in `x-llmsoup-decision`.
    pub name: String,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
    /// Higher wins under the `priority` strategy.
    #[serde(default)]
    pub priority: i64,
    /// When any matched decision has a tier > 0, the lowest tier wins first.
    #[serde(default)]
    pub tier: u32,
    /// Rule tree; omitted or empty = catch-all.
    #[serde(default)]
    pub rules: Option<RuleNode>,
    /// Candidate models, in preference order.
    #[serde(rename = "modelRefs", alias = "model_refs")]
    pub model_refs: Vec<ModelRef>,
    /// How to choose among `modelRefs` (default: the first available).
    #[serde(default)]
    pub algorithm: AlgorithmConfig,
    /// What else the decision does to the request (system prompt, headers, blocking, ...).
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// What happens when a signal this decision references cannot run (model missing,
    /// inference error): `block` treats the decision as matched wherever the failed signal could
    /// have made it match (so a `fast_response` refusal still answers), `skip` as not matched.
    /// Default: `block` when the decision has a `fast_response` plugin, else `skip`.
    #[serde(default)]
    pub on_signal_error: Option<OnSignalError>,
}

/// A decision's answer to a signal that cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnSignalError {
    /// Treat the decision as matched (fail closed: its blocking plugin answers).
    Block,
    /// Treat the decision as not matched (fail open: routing goes on without it).
    Skip,
}

impl OnSignalError {
    /// The metric label / config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnSignalError::Block => "block",
            OnSignalError::Skip => "skip",
        }
    }
}

impl DecisionConfig {
    /// Whether a plugin answers locally instead of routing (a `fast_response`).
    pub fn blocks(&self) -> bool {
        self.plugins.iter().any(|p| matches!(p, PluginConfig::FastResponse(_)))
    }

    /// `on_signal_error` as configured, else `block` for blocking decisions and `skip` otherwise.
    pub fn on_signal_error(&self) -> OnSignalError {
        self.on_signal_error.unwrap_or(if self.blocks() {
            OnSignalError::Block
        } else {
            OnSignalError::Skip
        })
    }
}

/// Model-selection algorithm names (vLLM Semantic Router's where they exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmKind {
    /// The first available model.
    #[default]
    Static,
    /// Cheapest model meeting `quality_floor`, or the best `quality_bias` trade-off.
    Cost,
    /// Lowest observed time to first token; models over the targets are skipped.
    LatencyAware,
}

/// Choosing among a decision's models. Models observed failing are skipped by every algorithm
/// (unless all are).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlgorithmConfig {
    /// `static`, `cost` or `latency_aware`.
    #[serde(default, rename = "type")]
    pub kind: AlgorithmKind,
    /// `cost`: the cheapest model whose `quality` is at least this.
    #[serde(default)]
    pub quality_floor: Option<f64>,
    /// `cost`: maximise `bias·quality − (1−bias)·price/max_price` (0 = cheapest, 1 = best).
    #[serde(default)]
    pub quality_bias: Option<f64>,
    /// `latency_aware`: which TTFT percentile to compare (1–100, default 90).
    #[serde(default = "default_ttft_percentile")]
    pub ttft_percentile: u8,
    /// `latency_aware`: skip models whose TTFT percentile is above this.
    #[serde(default)]
    pub ttft_target_ms: Option<f64>,
    /// `latency_aware`: skip models whose median time per output token is above this.
    #[serde(default)]
    pub tpot_target_ms: Option<f64>,
}

fn default_ttft_percentile() -> u8 {
    90
}

impl Default for AlgorithmConfig {
    fn default() -> Self {
        AlgorithmConfig {
            kind: AlgorithmKind::Static,
            quality_floor: None,
            quality_bias: None,
            ttft_percentile: default_ttft_percentile(),
            ttft_target_ms: None,
            tpot_target_ms: None,
        }
    }
}

/// How the winning decision is chosen among matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Highest priority, then confidence, then name.
    #[default]
    Priority,
    /// Highest confidence, then priority, then name.
    Confidence,
}

/// Routing gate and selection settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Request `model` values that trigger routing.
    #[serde(default = "default_auto_models")]
    pub auto_models: Vec<String>,
    /// Model used when no decision matches and on fail-open.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Decision selection strategy.
    #[serde(default)]
    pub strategy: Strategy,
    /// Signals also see earlier user turns, not only the last one.
    #[serde(default)]
    pub include_history: bool,
    /// How each model family toggles reasoning (see `models[].reasoning_family`).
    #[serde(default)]
    pub reasoning_families: ReasoningFamilies,
    /// Effort used when a modelRef turns reasoning on without naming one.
    #[serde(default)]
    pub default_reasoning_effort: Option<ReasoningEffort>,
}

fn default_auto_models() -> Vec<String> {
    vec!["auto".into(), "MoM".into()]
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            auto_models: default_auto_models(),
            default_model: None,
            strategy: Strategy::default(),
            include_history: false,
            reasoning_families: ReasoningFamilies::new(),
            default_reasoning_effort: None,
        }
    }
}

/// Client authentication.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted client tokens, stored as SHA-256; empty = no authentication.
    #[serde(default)]
    pub tokens: Vec<TokenHash>,
}

/// One accepted client token.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenHash {
    /// Who holds it (for logs).
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
}
