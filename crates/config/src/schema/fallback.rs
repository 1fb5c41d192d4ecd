//! Fallback chains and what a model can take: `models[].fallbacks`, `models[].capabilities`,
//! `routing.fallback`.

use super::*;

/// What a model can take. A fallback that cannot take a request is skipped (never tried): a
/// context window smaller than the prompt, no tools when the request offers tools, no vision
/// when it sends images. Unset means no limit: declare what a model lacks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Context window in tokens (`8K`, `128000`); prompts estimated larger skip this model as a
    /// fallback.
    #[serde(default)]
    pub context_window: Option<TokenCount>,
    /// Whether the model accepts `tools`/`functions`.
    #[serde(default = "yes")]
    pub tools: bool,
    /// Whether the model accepts image parts.
    #[serde(default = "yes")]
    pub vision: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            context_window: None,
            tools: true,
            vision: true,
        }
    }
}

/// How Envoy fails a request over to the next model of its chain (`routing.fallback`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Attempts per client request, the primary included (2–5): the chain is cut to this many
    /// models.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Fallbacks whose `quality` is below this are never tried (they are reported as skipped in
    /// the decision log and by `llmsoup route`); models without a `quality` are kept.
    #[serde(default)]
    pub quality_floor: Option<f64>,
    /// Envoy's back-off between attempts, in milliseconds (the next attempt goes to another
    /// model, so it only needs to be short).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// An attempt that receives nothing for this many milliseconds fails over to the next model
    /// (Envoy's per-attempt idle timeout): a provider that accepts the request and never
    /// answers. Before the response starts this is a fallback like a 503; once a stream has
    /// started it ends that stream. Unset (the default): attempts wait for the route's overall
    /// timeout. Set it above the slowest legitimate time to the first byte of a non-streamed
    /// answer (whole answers arrive at once), e.g. 60000.
    #[serde(default)]
    pub attempt_timeout_ms: Option<u64>,
    /// The longest pause, in seconds, a provider's `retry-after` (on a 429 or 503 answer to a
    /// chain attempt) can impose: the model is left out of later requests' chains and primary
    /// selection for `min(retry-after, max_skip_s)`, then used again. 0 ignores `retry-after`.
    #[serde(default = "default_max_skip_s")]
    pub max_skip_s: u64,
}

/// Most models a chain may hold (the primary and four fallbacks): Envoy gets one route per
/// subsequence of two or more of a chain's models, so this bounds the rendered routes.
pub const MAX_CHAIN: usize = 5;

fn default_max_attempts() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    10
}
fn default_max_skip_s() -> u64 {
    60
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            max_attempts: default_max_attempts(),
            quality_floor: None,
            backoff_ms: default_backoff_ms(),
            attempt_timeout_ms: None,
            max_skip_s: default_max_skip_s(),
        }
    }
}
