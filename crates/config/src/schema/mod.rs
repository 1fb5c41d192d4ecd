//! The native configuration schema (published as JSON Schema by `llmsoup config schema`), one
//! module per section of the file; the top-level `Config`, `compat`, `decision_log` and `auth`
//! are here.

mod budgets;
mod cache;
mod decisions;
mod embedding;
mod fallback;
mod health;
mod learning;
mod providers;
mod server;
mod signals;

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use budgets::*;
pub use cache::*;
pub use decisions::*;
pub use embedding::*;
pub use fallback::*;
pub(crate) use health::validate as validate_health;
pub use health::{CircuitBreakers, OutlierDetection};
pub use learning::*;
pub use providers::*;
pub use server::*;
pub use signals::*;

use crate::{ConfigError, PluginConfig, ReasoningEffort, ReasoningFamilies, TokenCount};

/// `#[serde(default = "yes")]`.
fn yes() -> bool {
    true
}

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
    /// Token budgets and rate limits per client token, team and model.
    #[serde(default)]
    pub budgets: BudgetsConfig,
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
    /// Where decisions with a `cache` plugin keep answers (memory or Redis), bounds and
    /// in-flight deduplication.
    #[serde(default)]
    pub response_cache: ResponseCacheConfig,
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
    /// Who holds it: the tenant in logs, `/stats`, metrics and `budgets.tokens`.
    pub name: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// The team the token belongs to, for `budgets.groups` (shared by every token of the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}
