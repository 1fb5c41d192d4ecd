//! Signal rules, one struct per kind: `signals:`.

use super::*;

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
    /// The learned router: predicted difficulty (0–1) from the shared embedding.
    #[serde(default)]
    pub difficulty: Vec<DifficultyRule>,
}

/// A difficulty rule (the learned router): matches when the predicted difficulty — how likely the
/// cheap reference model is to fail the prompt while the strong one answers it, 0–1 — is at
/// least `threshold`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DifficultyRule {
    /// Signal name referenced by decisions.
    pub name: String,
    /// Difficulty needed to match (0..1, default 0.5).
    #[serde(default = "default_difficulty_threshold")]
    pub threshold: f64,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
}

fn default_difficulty_threshold() -> f64 {
    0.5
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
    /// Predicted difficulty (the learned router).
    Difficulty,
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
            SignalKind::Difficulty => "difficulty",
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
