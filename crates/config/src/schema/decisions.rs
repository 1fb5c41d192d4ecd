//! Decisions (rule trees, model references, selection algorithms) and routing: `decisions:`, `routing:`.

use super::*;

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
    /// The `modelRefs` are also the fallback chain: the selected model first, then the others in
    /// listed order (instead of the selected model's `models[].fallbacks`).
    #[serde(default)]
    pub fallback: bool,
    /// What else the decision does to the request (system prompt, headers, blocking, ...).
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// What happens when a signal this decision references cannot run (model missing,
    /// inference error): `block` treats the decision as matched wherever the failed signal could
    /// have made it match (so a `fast_response` refusal still answers), `skip` as not matched.
    /// Default: `block` when the decision has a `fast_response` plugin, else `skip`.
    #[serde(default)]
    pub on_signal_error: Option<OnSignalError>,
    /// Live calibration: the share of routed requests (0–1) whose score should clear this
    /// decision's one score condition (a `difficulty` rule, or a complexity `<rule>:hard`
    /// level). Its threshold then follows the (1 − share) quantile of recent scores (overrides
    /// `routing.target_strong_share`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_share: Option<f64>,
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
    /// The cheapest model whose success on this request, as the learned router predicts it from
    /// the model's `strength`, reaches `target`; none reaching it: the strongest.
    SuccessTarget,
}

/// Choosing among a decision's models. Models observed failing are skipped by every algorithm
/// (unless all are).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlgorithmConfig {
    /// `static`, `cost`, `latency_aware` or `success_target`.
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
    /// `success_target`: the predicted probability of a correct answer (0–1) the chosen model
    /// must reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
}

pub(crate) fn default_ttft_percentile() -> u8 {
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
            target: None,
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
    /// How Envoy fails a request over along its fallback chain.
    #[serde(default)]
    pub fallback: FallbackConfig,
    /// Live calibration for every decision with exactly one score condition (a `difficulty`
    /// rule, or a complexity `<rule>:hard` level, not under NOT): the share of routed requests
    /// (0–1) that should clear it, i.e. go to the decision's (strong) models. The threshold
    /// follows the (1 − share) quantile of the scores the sidecar recently saw; until
    /// `calibration.warmup` scores are in, the configured threshold applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_strong_share: Option<f64>,
    /// The sliding window live calibration takes its quantile over.
    #[serde(default)]
    pub calibration: CalibrationConfig,
    /// How `POST /v1/feedback` scores update per-decision model quality.
    #[serde(default)]
    pub feedback: FeedbackConfig,
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
            fallback: FallbackConfig::default(),
            target_strong_share: None,
            calibration: CalibrationConfig::default(),
            feedback: FeedbackConfig::default(),
        }
    }
}
