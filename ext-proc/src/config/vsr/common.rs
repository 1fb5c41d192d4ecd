//! Mapping helpers shared by every vSR shape: typed decoding with warnings, signal rule bodies,
//! rule trees, decisions, plugins, providers and models.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::Warning;
use crate::config::{
    Aggregation, AlgorithmConfig, AlgorithmKind, ComplexityRule, ConfigError, ContextRule, CredentialsConfig,
    DecisionConfig, DomainRule, EmbeddingRule, Exemplars, FastResponsePlugin, HeaderMutationPlugin, JailbreakRule,
    KeywordMethod, KeywordOperator, KeywordRule, LanguageRule, ModelConfig, ModelRef, PiiRule, PluginConfig, Pricing,
    ProviderConfig, ProviderFormat, ReasoningEffort, RequestParamsPlugin, RuleNode, RuleOperator, SignalKind,
    SignalsConfig, SystemPromptPlugin, TokenCount, locate,
};

/// Conversion context: the source text (for line numbers), credential env references and the
/// warnings collected so far.
pub(super) struct Cx<'a> {
    text: &'a str,
    env_refs: HashMap<String, String>,
    pub(super) warnings: Vec<Warning>,
}

impl<'a> Cx<'a> {
    pub(super) fn new(text: &'a str, env_refs: HashMap<String, String>) -> Self {
        Cx {
            text,
            env_refs,
            warnings: Vec::new(),
        }
    }

    /// Records a warning about the key at `path`.
    pub(super) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let line = line_near(self.text, &path);
        let message = message.into();
        if self.warnings.iter().any(|w| w.path == path && w.message == message) {
            return;
        }
        self.warnings.push(Warning { path, line, message });
    }

    /// An error about the key at `path`, with its line.
    pub(super) fn error(&self, path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let path = path.into();
        ConfigError::Invalid {
            line: line_near(self.text, &path),
            path,
            message: message.into(),
        }
    }

    /// The environment variable a credential at `path` was written as (`api_key: ${VAR}`).
    pub(super) fn env_ref(&self, path: &str) -> Option<String> {
        self.env_refs.get(path).cloned()
    }

    /// Decodes `value` (found at `path`) into `T`: type errors name the full key path and line,
    /// keys `T` does not know become warnings (with a reason when llmsoup knows the vSR feature).
    pub(super) fn typed<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Result<T, ConfigError> {
        let mut ignored = Vec::new();
        let result: Result<T, _> = {
            let mut record = |p: serde_ignored::Path| ignored.push(render(&p));
            let de = serde_ignored::Deserializer::new(value, &mut record);
            serde_path_to_error::deserialize(de)
        };
        for inner in ignored {
            let at = join(path, &inner);
            let reason = reason(&at);
            self.warn(at, reason);
        }
        result.map_err(|e| {
            let inner = e.path().to_string();
            let inner = if inner == "." { String::new() } else { inner };
            self.error(join(path, &inner), e.into_inner().to_string())
        })
    }

    /// Removes the keys of `map` that name features llmsoup does not have, with one warning each.
    pub(super) fn strip_unsupported(&mut self, map: &mut Mapping, path: &str, keys: &[&str]) {
        for key in keys {
            if map.remove(*key).is_some() {
                let at = join(path, key);
                let reason = reason(&at);
                self.warn(at, reason);
            }
        }
    }

    /// Warns once per child key of an unsupported section (`global.integrations.looper`).
    pub(super) fn warn_children(&mut self, path: &str, value: &Value) {
        match value.as_mapping() {
            Some(m) if !m.is_empty() => {
                for k in m.keys() {
                    let at = join(path, &key_text(k));
                    let reason = reason(&at);
                    self.warn(at, reason);
                }
            }
            _ => {
                let reason = reason(path);
                self.warn(path, reason);
            }
        }
    }
}

/// The line of `path`, or of its nearest ancestor that [`locate`] can find (flow-style YAML such
/// as `{type: fact_check, name: x}` only resolves to the line it sits on).
fn line_near(text: &str, path: &str) -> Option<usize> {
    let mut p = path;
    loop {
        if let Some(l) = locate::line_of(text, p) {
            return Some(l);
        }
        let cut = p.rfind(['.', '['])?;
        p = &p[..cut];
    }
}

fn key_text(k: &Value) -> String {
    k.as_str().map(str::to_owned).unwrap_or_else(|| format!("{k:?}"))
}

/// Joins a parent key path and a child path (`a` + `b[0]` = `a.b[0]`, `a` + `[0]` = `a[0]`).
pub(super) fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_string(),
        (_, true) => parent.to_string(),
        _ if child.starts_with('[') => format!("{parent}{child}"),
        _ => format!("{parent}.{child}"),
    }
}

/// serde_ignored's path, written the way serde_path_to_error and [`locate`] write paths.
fn render(p: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render(parent)),
        Path::Map { parent, key } => join(&render(parent), key),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => render(parent),
    }
}

/// Why a vSR key is ignored; specific where llmsoup has its own way of doing the same thing.
pub(super) fn reason(path: &str) -> String {
    let bare: String = {
        // Drop list indices so prefixes match (`routing.signals.fact_check[0]` → `...fact_check`).
        let mut out = String::with_capacity(path.len());
        let mut depth = 0;
        for c in path.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out
    };
    let last = bare.rsplit('.').next().unwrap_or(&bare);
    let under = |prefix: &str| {
        bare == prefix || bare.starts_with(&format!("{prefix}.")) || bare.contains(&format!(".{prefix}"))
    };
    let text = if under("bert_model")
        || under("embedding_models")
        || under("model_catalog.embeddings")
        || last.ends_with("_model_path")
    {
        "llmsoup embeds with its own MiniLM sentence encoder (`embedding.model`); vSR embedding model settings are ignored"
    } else if under("classifier")
        || under("prompt_guard")
        || under("model_catalog.system")
        || under("model_catalog.modules")
    {
        "llmsoup uses its built-in classifiers (domain, PII, jailbreak); vSR classifier model settings are ignored"
    } else if under("semantic_cache") || under("stores.response_cache") {
        "llmsoup has no global response cache; a decision's `response_cache` plugin is kept but not applied yet"
    } else if under("listeners") {
        "llmsoup renders its own Envoy listener (`gateway.listen`); ignored"
    } else if under("reliability") {
        "retries, health checks and outlier detection are set by `llmsoup envoy-config`; ignored"
    } else if last == "weight" {
        "llmsoup sends each model to one provider; weights are ignored"
    } else if under("streamed_body") || last.starts_with("streamed_body") || last == "max_streamed_body_bytes" {
        "llmsoup buffers request bodies in Envoy (`gateway.max_body_bytes`); ignored"
    } else if under("observability") {
        "llmsoup exports Prometheus metrics on `server.admin_listen`; vSR observability settings are ignored"
    } else {
        "not supported by llmsoup, ignored"
    };
    text.to_string()
}

/// Normalises a name to what native signal, decision and provider names allow.
pub(super) fn sanitize(name: &str) -> String {
    let out: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() { "unnamed".into() } else { out }
}

// ---------------------------------------------------------------------------------------------
// Signal rule bodies (identical in G1, G1' and G2; G0 adds `category:`).

/// Keyword rule (`keyword_rules[]`, `signals.keywords[]`).
#[derive(Debug, Deserialize)]
pub(super) struct VKeyword {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    pub(super) category: Option<String>,
    #[serde(default)]
    operator: Option<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    case_sensitive: bool,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    fuzzy_match: Option<bool>,
    #[serde(default)]
    fuzzy_threshold: Option<Value>,
    #[serde(default)]
    bm25_threshold: Option<f64>,
    #[serde(default)]
    ngram_threshold: Option<f64>,
    #[serde(default)]
    ngram_arity: Option<u32>,
    #[serde(default)]
    description: Option<String>,
}

/// Embedding rule; G0 wrote `category` and `keywords` instead of `name` and `candidates`.
#[derive(Debug, Deserialize)]
pub(super) struct VEmbedding {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    pub(super) category: Option<String>,
    #[serde(default)]
    threshold: Option<f32>,
    #[serde(default)]
    candidates: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    aggregation_method: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    dimension: Option<u32>,
    #[serde(default)]
    quality_priority: Option<f64>,
    #[serde(default)]
    latency_priority: Option<f64>,
    #[serde(default)]
    query_modality: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// One `model_scores` entry of a G0 category.
#[derive(Debug, Deserialize)]
pub(super) struct VModelScore {
    pub(super) model: String,
    #[serde(default)]
    pub(super) score: f64,
    #[serde(default)]
    pub(super) use_reasoning: Option<bool>,
    #[serde(default)]
    pub(super) reasoning_effort: Option<String>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    pub(super) reasoning_description: Option<String>,
}

/// Domain (`categories[]`, `signals.domains[]`), with the G0 routing knobs.
#[derive(Debug, Deserialize)]
pub(super) struct VCategory {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    mmlu_categories: Vec<String>,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default)]
    threshold: Option<f32>,
    #[serde(default)]
    pub(super) model_scores: Vec<VModelScore>,
    #[serde(default)]
    pub(super) use_reasoning: Option<bool>,
    #[serde(default)]
    pub(super) reasoning_effort: Option<String>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    pub(super) reasoning_description: Option<String>,
    #[serde(default)]
    pub(super) system_prompt: Option<String>,
    #[serde(default)]
    pub(super) system_prompt_enabled: Option<bool>,
    #[serde(default)]
    pub(super) system_prompt_mode: Option<String>,
    #[serde(default)]
    pub(super) semantic_cache_enabled: Option<bool>,
    #[serde(default)]
    pub(super) semantic_cache_similarity_threshold: Option<f64>,
    #[serde(default)]
    pub(super) jailbreak_enabled: Option<bool>,
    #[serde(default)]
    pub(super) jailbreak_threshold: Option<f32>,
    #[serde(default)]
    pub(super) pii_enabled: Option<bool>,
    #[serde(default)]
    pub(super) pii_threshold: Option<f32>,
}

/// Language rule: `name` is an ISO-639-1 code.
#[derive(Debug, Deserialize)]
pub(super) struct VLanguage {
    name: String,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    description: Option<String>,
}

/// Context-length rule (`min_tokens: 8K`).
#[derive(Debug, Deserialize)]
pub(super) struct VContext {
    name: String,
    #[serde(default)]
    min_tokens: Option<TokenCount>,
    #[serde(default)]
    max_tokens: Option<TokenCount>,
    #[serde(default)]
    description: Option<String>,
}

/// `hard:` / `easy:` exemplar sets of a complexity rule.
#[derive(Debug, Default, Deserialize)]
pub(super) struct VExemplars {
    #[serde(default)]
    candidates: Vec<String>,
    #[serde(default)]
    image_candidates: Option<Value>,
}

/// Complexity rule; conditions name `<rule>:easy|medium|hard`.
#[derive(Debug, Deserialize)]
pub(super) struct VComplexity {
    name: String,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    hard: VExemplars,
    #[serde(default)]
    easy: VExemplars,
    #[serde(default)]
    composer: Option<Value>,
    #[serde(default)]
    description: Option<String>,
}

/// Jailbreak rule.
#[derive(Debug, Deserialize)]
pub(super) struct VJailbreak {
    name: String,
    #[serde(default)]
    threshold: Option<f32>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    include_history: bool,
    #[serde(default)]
    jailbreak_patterns: Vec<String>,
    #[serde(default)]
    benign_patterns: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

/// PII rule.
#[derive(Debug, Deserialize)]
pub(super) struct VPii {
    name: String,
    #[serde(default)]
    threshold: Option<f32>,
    #[serde(default)]
    pii_types_allowed: Vec<String>,
    #[serde(default)]
    include_history: bool,
    #[serde(default)]
    description: Option<String>,
}

/// The `signals:` block of G1' and G2 (`routing.signals`); G1 flat keys land here too.
#[derive(Debug, Default, Deserialize)]
pub(super) struct VSignals {
    #[serde(default)]
    pub(super) keywords: Vec<VKeyword>,
    #[serde(default)]
    pub(super) embeddings: Vec<VEmbedding>,
    #[serde(default)]
    pub(super) domains: Vec<VCategory>,
    #[serde(default)]
    pub(super) language: Vec<VLanguage>,
    #[serde(default)]
    pub(super) context: Vec<VContext>,
    #[serde(default)]
    pub(super) complexity: Vec<VComplexity>,
    #[serde(default)]
    pub(super) jailbreak: Vec<VJailbreak>,
    #[serde(default)]
    pub(super) pii: Vec<VPii>,
}

/// vSR signal families llmsoup does not have: (key in a `signals:` block, G1 flat key,
/// condition type decisions use).
pub(super) const UNSUPPORTED_FAMILIES: &[(&str, &str, &str)] = &[
    ("fact_check", "fact_check_rules", "fact_check"),
    ("user_feedbacks", "user_feedback_rules", "user_feedback"),
    ("reasks", "reask_rules", "reask"),
    ("preferences", "preference_rules", "preference"),
    ("structure", "structure_rules", "structure"),
    ("modality", "modality_rules", "modality"),
    ("role_bindings", "role_bindings", "authz"),
    ("kb", "kb", "kb"),
    ("conversation", "conversation", "conversation"),
    ("events", "events", "event"),
    ("metadata", "metadata", "metadata"),
    ("classifiers", "classifiers", "classifier"),
    ("latency", "latency_rules", "latency"),
];

/// Removes the unsupported signal families from a signals mapping (or the G1 top level), with a
/// warning each. `flat` selects the G1 key names.
pub(super) fn strip_unsupported_families(cx: &mut Cx, map: &mut Mapping, path: &str, flat: bool) {
    for (block_key, flat_key, condition) in UNSUPPORTED_FAMILIES {
        let key = if flat { flat_key } else { block_key };
        if map.remove(*key).is_some() {
            let message = if *condition == "latency" {
                "vSR latency rules carry percentiles but no targets; llmsoup's latency signal needs `ttft_target_ms`/`tpot_target_ms` (use algorithm `latency_aware` or a native `signals.latency` rule); decisions on them treat the condition as never matching".to_string()
            } else {
                format!(
                    "{condition} signals are not supported by llmsoup; decision conditions of type `{condition}` never match"
                )
            };
            cx.warn(join(path, key), message);
        }
    }
}

/// Signal names as decisions wrote them → native names, per kind (names are sanitised and
/// G0 rules get names derived from their category).
#[derive(Debug, Default)]
pub(super) struct Known {
    names: HashMap<(SignalKind, String), String>,
}

impl Known {
    fn add(&mut self, kind: SignalKind, vsr: &str, native: &str) {
        self.names.insert((kind, vsr.to_string()), native.to_string());
    }

    pub(super) fn get(&self, kind: SignalKind, vsr: &str) -> Option<&str> {
        self.names.get(&(kind, vsr.to_string())).map(String::as_str)
    }
}

/// Converts the supported signal families; `path_of(family, i)` gives each rule's source path.
pub(super) fn convert_signals(
    cx: &mut Cx,
    v: VSignals,
    path_of: &dyn Fn(&str, usize) -> String,
) -> Result<(SignalsConfig, Known), ConfigError> {
    let mut out = SignalsConfig::default();
    let mut known = Known::default();
    let mut taken: BTreeSet<(SignalKind, String)> = BTreeSet::new();
    let unique = |taken: &mut BTreeSet<(SignalKind, String)>, kind: SignalKind, base: String| {
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert((kind, name.clone())) {
            name = format!("{base}_{n}");
            n += 1;
        }
        name
    };

    for (i, k) in v.keywords.into_iter().enumerate() {
        let at = path_of("keywords", i);
        let vsr_name = match (&k.name, &k.category) {
            (Some(n), _) => n.clone(),
            (None, Some(c)) => format!("{c}_keywords"),
            (None, None) => return Err(cx.error(format!("{at}.name"), "missing field `name`")),
        };
        let name = unique(&mut taken, SignalKind::Keyword, sanitize(&vsr_name));
        let operator = match k.operator.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("OR") => KeywordOperator::Or,
            Some("AND") => KeywordOperator::And,
            Some("NOR") => KeywordOperator::Nor,
            Some(other) => {
                return Err(cx.error(
                    format!("{at}.operator"),
                    format!("unknown keyword operator `{other}` (expected AND, OR or NOR)"),
                ));
            }
        };
        // vSR's `regex` method is its default: every keyword is QuoteMeta-escaped and
        // word-bounded (keyword_classifier_regex.go), i.e. llmsoup's `literal`.
        let method = match k.method.as_deref() {
            None | Some("") | Some("regex") => KeywordMethod::Literal,
            Some(m @ ("bm25" | "ngram" | "fuzzy")) => {
                cx.warn(
                    format!("{at}.method"),
                    format!("keyword method `{m}` is not supported by llmsoup; keywords are matched as literal words"),
                );
                KeywordMethod::Literal
            }
            Some(other) => {
                return Err(cx.error(
                    format!("{at}.method"),
                    format!("unknown keyword method `{other}` (expected regex, bm25 or ngram)"),
                ));
            }
        };
        for (key, set) in [
            ("fuzzy_match", k.fuzzy_match == Some(true)),
            ("fuzzy_threshold", k.fuzzy_threshold.is_some()),
            ("bm25_threshold", k.bm25_threshold.is_some()),
            ("ngram_threshold", k.ngram_threshold.is_some()),
            ("ngram_arity", k.ngram_arity.is_some()),
        ] {
            if set {
                cx.warn(
                    format!("{at}.{key}"),
                    "fuzzy, BM25 and n-gram keyword matching are not supported by llmsoup; ignored (literal match)",
                );
            }
        }
        if k.keywords.is_empty() {
            return Err(cx.error(format!("{at}.keywords"), "at least one keyword is required"));
        }
        known.add(SignalKind::Keyword, &vsr_name, &name);
        out.keywords.push(KeywordRule {
            name,
            operator,
            keywords: k.keywords,
            case_sensitive: k.case_sensitive,
            method,
            description: k.description,
        });
    }

    for (i, e) in v.embeddings.into_iter().enumerate() {
        let at = path_of("embeddings", i);
        let vsr_name = match (&e.name, &e.category) {
            (Some(n), _) => n.clone(),
            (None, Some(c)) => format!("{c}_embeddings"),
            (None, None) => return Err(cx.error(format!("{at}.name"), "missing field `name`")),
        };
        let name = unique(&mut taken, SignalKind::Embedding, sanitize(&vsr_name));
        let aggregation = match e.aggregation_method.as_deref() {
            None | Some("max") => Aggregation::Max,
            Some("mean") => Aggregation::Mean,
            Some("any") => Aggregation::Any,
            Some(other) => {
                // vSR falls back to its default scoring for names it does not know.
                cx.warn(
                    format!("{at}.aggregation_method"),
                    format!("unknown aggregation `{other}` (mean, max or any); using max"),
                );
                Aggregation::Max
            }
        };
        for (key, set) in [
            ("model", e.model.is_some()),
            ("dimension", e.dimension.is_some()),
            ("quality_priority", e.quality_priority.is_some()),
            ("latency_priority", e.latency_priority.is_some()),
        ] {
            if set {
                cx.warn(
                    format!("{at}.{key}"),
                    "llmsoup embeds with its own MiniLM sentence encoder (`embedding.model`); ignored",
                );
            }
        }
        if e.query_modality.as_deref().is_some_and(|m| m != "text") {
            cx.warn(
                format!("{at}.query_modality"),
                "llmsoup embeds text only; image/audio queries never match",
            );
        }
        let candidates: Vec<String> = e.candidates.into_iter().chain(e.keywords).collect();
        if candidates.iter().all(|c| c.trim().is_empty()) {
            return Err(cx.error(
                format!("{at}.candidates"),
                "at least one non-empty candidate phrase is required",
            ));
        }
        let threshold = e.threshold.unwrap_or(0.6);
        if !(0.0..=1.0).contains(&threshold) {
            return Err(cx.error(
                format!("{at}.threshold"),
                "a cosine similarity threshold is between 0 and 1",
            ));
        }
        known.add(SignalKind::Embedding, &vsr_name, &name);
        out.embeddings.push(EmbeddingRule {
            name,
            candidates,
            threshold,
            aggregation,
            description: e.description,
        });
    }

    for (i, d) in v.domains.into_iter().enumerate() {
        let at = path_of("domains", i);
        let builtin = |c: &str| crate::signals::domain::CATEGORIES.contains(&c);
        let name = unique(&mut taken, SignalKind::Domain, sanitize(&d.name));
        let mut mmlu = Vec::new();
        for (j, c) in d.mmlu_categories.iter().enumerate() {
            let c = c.trim().to_ascii_lowercase().replace('_', " ");
            if builtin(&c) {
                mmlu.push(c);
            } else {
                cx.warn(
                    format!("{at}.mmlu_categories[{j}]"),
                    format!("`{c}` is not one of llmsoup's built-in categories; ignored"),
                );
            }
        }
        // A built-in category whose name is not a valid signal name (`computer science`)
        // keeps matching through mmlu_categories under its sanitised name.
        if name != d.name && builtin(&d.name) && !mmlu.contains(&d.name) {
            mmlu.push(d.name.clone());
        }
        let custom = d.description.is_some() || !d.examples.is_empty() || !mmlu.is_empty();
        if !builtin(&name) && !custom {
            cx.warn(
                format!("{at}.name"),
                "not a built-in category and no description, examples or mmlu_categories: it can never match; dropped",
            );
            continue;
        }
        // vSR matches domains by classifier label only (the name or one of mmlu_categories);
        // llmsoup would also match a description by similarity, so it is kept only for a label
        // llmsoup's classifier cannot produce (vSR needed a custom-trained classifier for it).
        let by_label = builtin(&name) || !mmlu.is_empty();
        let description = if by_label {
            None
        } else {
            cx.warn(
                format!("{at}.name"),
                "not a built-in category: matched by similarity to its description and examples",
            );
            d.description
        };
        known.add(SignalKind::Domain, &d.name, &name);
        out.domains.push(DomainRule {
            name,
            description,
            examples: d.examples,
            mmlu_categories: mmlu,
            threshold: d.threshold,
        });
    }

    for (i, l) in v.language.into_iter().enumerate() {
        let at = path_of("language", i);
        let code = l.name.trim().to_ascii_lowercase();
        let code = code.split(['-', '_']).next().unwrap_or_default().to_string();
        if isolang::Language::from_639_1(&code).is_none() {
            cx.warn(
                format!("{at}.name"),
                format!("`{}` is not an ISO-639-1 language code; rule dropped", l.name),
            );
            continue;
        }
        if !taken.insert((SignalKind::Language, code.clone())) {
            known.add(SignalKind::Language, &l.name, &code);
            continue;
        }
        known.add(SignalKind::Language, &l.name, &code);
        out.language.push(LanguageRule {
            name: code,
            threshold: l.threshold,
            description: l.description,
        });
    }

    for (i, c) in v.context.into_iter().enumerate() {
        let at = path_of("context", i);
        if let (Some(lo), Some(hi)) = (c.min_tokens, c.max_tokens)
            && lo > hi
        {
            return Err(cx.error(at, "min_tokens is larger than max_tokens"));
        }
        let name = unique(&mut taken, SignalKind::Context, sanitize(&c.name));
        known.add(SignalKind::Context, &c.name, &name);
        out.context.push(ContextRule {
            name,
            min_tokens: c.min_tokens,
            max_tokens: c.max_tokens,
            description: c.description,
        });
    }

    for (i, c) in v.complexity.into_iter().enumerate() {
        let at = path_of("complexity", i);
        if c.threshold.is_some() {
            cx.warn(
                format!("{at}.threshold"),
                "llmsoup scores complexity 0..1 and splits it with `easy_below`/`hard_from` (defaults 0.35/0.6); the vSR margin threshold is not mapped",
            );
        }
        for (key, set) in [
            ("hard.image_candidates", c.hard.image_candidates.is_some()),
            ("easy.image_candidates", c.easy.image_candidates.is_some()),
            ("composer", c.composer.is_some()),
        ] {
            if set {
                cx.warn(format!("{at}.{key}"), "not supported by llmsoup, ignored");
            }
        }
        let name = sanitize(&c.name);
        if !taken.insert((SignalKind::Complexity, name.clone())) {
            return Err(cx.error(format!("{at}.name"), format!("duplicate complexity rule `{}`", c.name)));
        }
        for level in ["easy", "medium", "hard"] {
            known.add(
                SignalKind::Complexity,
                &format!("{}:{level}", c.name),
                &format!("{name}:{level}"),
            );
        }
        out.complexity.push(ComplexityRule {
            name,
            hard: Exemplars {
                candidates: c.hard.candidates,
            },
            easy: Exemplars {
                candidates: c.easy.candidates,
            },
            easy_below: 0.35,
            hard_from: 0.6,
            description: c.description,
        });
    }

    let probability = |cx: &Cx, v: Option<f32>, at: String| match v {
        Some(t) if !(0.0..=1.0).contains(&t) => Err(cx.error(at, "must be between 0 and 1")),
        _ => Ok(()),
    };
    for (i, j) in v.jailbreak.into_iter().enumerate() {
        let at = path_of("jailbreak", i);
        probability(cx, j.threshold, format!("{at}.threshold"))?;
        if let Some(m) = j.method.as_deref()
            && m == "contrastive"
        {
            cx.warn(
                format!("{at}.method"),
                "llmsoup always runs its prompt-injection classifier; the patterns are added as similarity prototypes",
            );
        }
        let name = unique(&mut taken, SignalKind::Jailbreak, sanitize(&j.name));
        known.add(SignalKind::Jailbreak, &j.name, &name);
        out.jailbreak.push(JailbreakRule {
            name,
            threshold: j.threshold,
            jailbreak_patterns: j.jailbreak_patterns,
            benign_patterns: j.benign_patterns,
            include_history: j.include_history,
            description: j.description,
        });
    }

    for (i, p) in v.pii.into_iter().enumerate() {
        let at = path_of("pii", i);
        probability(cx, p.threshold, format!("{at}.threshold"))?;
        let mut allowed = Vec::new();
        for (j, t) in p.pii_types_allowed.into_iter().enumerate() {
            if crate::config::PII_TYPES.contains(&t.as_str()) {
                allowed.push(t);
            } else {
                cx.warn(
                    format!("{at}.pii_types_allowed[{j}]"),
                    format!("unknown PII type `{t}`; ignored"),
                );
            }
        }
        let name = unique(&mut taken, SignalKind::Pii, sanitize(&p.name));
        known.add(SignalKind::Pii, &p.name, &name);
        out.pii.push(PiiRule {
            name,
            pii_types_allowed: allowed,
            threshold: p.threshold,
            include_history: p.include_history,
            description: p.description,
        });
    }
    Ok((out, known))
}

// ---------------------------------------------------------------------------------------------
// Decisions.

/// A rule-tree node as vSR writes it.
#[derive(Debug, Deserialize)]
pub(super) struct VRule {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    operator: Option<String>,
    #[serde(default)]
    conditions: Vec<VRule>,
    #[serde(default)]
    label: Option<Value>,
    #[serde(default)]
    predicate: Option<Value>,
    #[serde(default)]
    on_error: Option<String>,
}

/// A modelRef.
#[derive(Debug, Deserialize)]
pub(super) struct VModelRef {
    model: String,
    #[serde(default)]
    lora_name: Option<String>,
    #[serde(default)]
    use_reasoning: Option<bool>,
    #[serde(default)]
    reasoning_effort: Option<String>,
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    reasoning_description: Option<String>,
    #[serde(default)]
    weight: Option<f64>,
}

/// `algorithm.latency_aware`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct VLatencyAware {
    #[serde(default)]
    ttft_percentile: Option<u8>,
    #[serde(default)]
    tpot_percentile: Option<u8>,
}

/// A decision's model-selection algorithm.
#[derive(Debug, Deserialize)]
pub(super) struct VAlgorithm {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    latency_aware: Option<VLatencyAware>,
    #[serde(default)]
    on_error: Option<String>,
}

/// A decision plugin.
#[derive(Debug, Deserialize)]
pub(super) struct VPlugin {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    configuration: Value,
}

/// A decision.
#[derive(Debug, Deserialize)]
pub(super) struct VDecision {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    tier: u32,
    #[serde(default)]
    rules: Option<VRule>,
    #[serde(default, rename = "modelRefs", alias = "model_refs")]
    model_refs: Vec<VModelRef>,
    #[serde(default)]
    algorithm: Option<VAlgorithm>,
    #[serde(default)]
    plugins: Vec<VPlugin>,
}

impl VDecision {
    /// Model names the decision references.
    pub(super) fn model_names(&self) -> impl Iterator<Item = String> + '_ {
        self.model_refs.iter().map(|r| r.model.clone())
    }
}

/// A rule tree after unsupported conditions are folded away.
///
/// A condition on a signal family llmsoup lacks (or on a rule that does not exist) is treated as
/// a signal that never fires, and the tree is simplified with that constant: it drops out of an
/// OR, makes an AND impossible, and makes its NOT always true. This routes exactly as vSR would
/// whenever that signal does not match; confidences of ANDs that lose an always-true child are
/// the mean of the remaining children.
pub(super) enum RuleTree {
    Node(RuleNode),
    Never,
    Always,
}

fn leaf_kind(kind: &str) -> Option<SignalKind> {
    Some(match kind {
        "keyword" => SignalKind::Keyword,
        "embedding" => SignalKind::Embedding,
        "domain" => SignalKind::Domain,
        "language" => SignalKind::Language,
        "context" => SignalKind::Context,
        "complexity" => SignalKind::Complexity,
        "jailbreak" => SignalKind::Jailbreak,
        "pii" => SignalKind::Pii,
        _ => return None,
    })
}

/// Where a decision finds its signals, and how to add built-in domains it references.
pub(super) struct Scope<'a> {
    pub(super) known: &'a mut Known,
    pub(super) signals: &'a mut SignalsConfig,
}

fn convert_rule(cx: &mut Cx, r: VRule, at: &str, scope: &mut Scope) -> Result<RuleTree, ConfigError> {
    if let Some(kind) = r.kind.as_deref()
        && leaf_kind(kind).is_none()
        && r.operator.is_none()
        && r.conditions.is_empty()
    {
        cx.warn(
            format!("{at}.type"),
            format!("`{kind}` signals are not supported by llmsoup; this condition never matches"),
        );
        return Ok(RuleTree::Never);
    }
    for (key, set) in [
        ("label", r.label.is_some()),
        ("predicate", r.predicate.is_some()),
        ("on_error", r.on_error.is_some()),
    ] {
        if set {
            cx.warn(format!("{at}.{key}"), "not supported by llmsoup, ignored");
        }
    }
    match (r.kind, r.name) {
        (Some(kind), Some(name)) => {
            if r.operator.is_some() || !r.conditions.is_empty() {
                return Err(cx.error(
                    at,
                    "a condition is either a leaf {type, name} or a group {operator, conditions}",
                ));
            }
            let Some(k) = leaf_kind(&kind) else {
                cx.warn(
                    format!("{at}.type"),
                    format!("`{kind}` signals are not supported by llmsoup; this condition never matches"),
                );
                return Ok(RuleTree::Never);
            };
            if let Some(native) = scope.known.get(k, &name) {
                return Ok(RuleTree::Node(leaf(k, native)));
            }
            // vSR v0.3 generates domains referenced by decisions when they are built-in labels.
            let label = name.trim().to_ascii_lowercase().replace('_', " ");
            if k == SignalKind::Domain && crate::signals::domain::CATEGORIES.contains(&label.as_str()) {
                let native = sanitize(&name);
                scope.known.add(k, &name, &native);
                if !scope.signals.domains.iter().any(|d| d.name == native) {
                    scope.signals.domains.push(DomainRule {
                        name: native.clone(),
                        description: None,
                        examples: Vec::new(),
                        mmlu_categories: if native == label { Vec::new() } else { vec![label] },
                        threshold: None,
                    });
                }
                return Ok(RuleTree::Node(leaf(k, &native)));
            }
            cx.warn(
                format!("{at}.name"),
                format!("no {kind} signal named `{name}` is configured; this condition never matches"),
            );
            Ok(RuleTree::Never)
        }
        (Some(_), None) => Err(cx.error(at, "a leaf condition needs `name`")),
        (None, Some(_)) => Err(cx.error(at, "a leaf condition needs `type`")),
        (None, None) => {
            let op = match r.operator.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("OR") => RuleOperator::Or,
                Some("AND") => RuleOperator::And,
                Some("NOT") => RuleOperator::Not,
                Some(other) => {
                    return Err(cx.error(
                        format!("{at}.operator"),
                        format!("unknown operator `{other}` (expected AND, OR or NOT)"),
                    ));
                }
            };
            if op == RuleOperator::Not && r.conditions.len() != 1 {
                return Err(cx.error(format!("{at}.conditions"), "NOT takes exactly one condition"));
            }
            let empty = r.conditions.is_empty();
            let mut children = Vec::new();
            for (i, c) in r.conditions.into_iter().enumerate() {
                children.push(convert_rule(cx, c, &format!("{at}.conditions[{i}]"), scope)?);
            }
            Ok(match op {
                _ if empty => RuleTree::Node(group(op, Vec::new())),
                RuleOperator::And => {
                    if children.iter().any(|c| matches!(c, RuleTree::Never)) {
                        RuleTree::Never
                    } else {
                        let nodes = nodes(children);
                        if nodes.is_empty() {
                            RuleTree::Always
                        } else {
                            RuleTree::Node(group(op, nodes))
                        }
                    }
                }
                RuleOperator::Or => {
                    if children.iter().any(|c| matches!(c, RuleTree::Always)) {
                        RuleTree::Always
                    } else {
                        let nodes = nodes(children);
                        if nodes.is_empty() {
                            RuleTree::Never
                        } else {
                            RuleTree::Node(group(op, nodes))
                        }
                    }
                }
                RuleOperator::Not => match children.pop() {
                    Some(RuleTree::Never) => RuleTree::Always,
                    Some(RuleTree::Always) | None => RuleTree::Never,
                    Some(RuleTree::Node(n)) => RuleTree::Node(group(op, vec![n])),
                },
            })
        }
    }
}

fn nodes(children: Vec<RuleTree>) -> Vec<RuleNode> {
    children
        .into_iter()
        .filter_map(|c| match c {
            RuleTree::Node(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// A leaf condition.
pub(super) fn leaf(kind: SignalKind, name: &str) -> RuleNode {
    RuleNode {
        kind: Some(kind),
        name: Some(name.to_string()),
        operator: None,
        conditions: Vec::new(),
    }
}

/// A group condition.
pub(super) fn group(op: RuleOperator, conditions: Vec<RuleNode>) -> RuleNode {
    RuleNode {
        kind: None,
        name: None,
        operator: Some(op),
        conditions,
    }
}

/// Parses `low|medium|high`; anything else is warned about and dropped.
pub(super) fn effort(cx: &mut Cx, value: Option<&str>, at: &str) -> Option<ReasoningEffort> {
    match value?.trim().to_ascii_lowercase().as_str() {
        "low" => Some(ReasoningEffort::Low),
        "medium" => Some(ReasoningEffort::Medium),
        "high" => Some(ReasoningEffort::High),
        other => {
            cx.warn(
                at,
                format!("reasoning effort `{other}` is not one of low, medium, high; ignored"),
            );
            None
        }
    }
}

/// Converts the decisions; `models` are the native model names refs may point at.
pub(super) fn convert_decisions(
    cx: &mut Cx,
    decisions: Vec<VDecision>,
    path: &str,
    models: &BTreeSet<String>,
    scope: &mut Scope,
) -> Result<Vec<DecisionConfig>, ConfigError> {
    let mut out: Vec<DecisionConfig> = Vec::new();
    for (i, d) in decisions.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let name = sanitize(&d.name);
        if out.iter().any(|o| o.name == name) {
            return Err(cx.error(format!("{at}.name"), format!("duplicate decision name `{}`", d.name)));
        }
        let rules = match d.rules {
            None => None,
            Some(r) => match convert_rule(cx, r, &format!("{at}.rules"), scope)? {
                RuleTree::Node(n) => Some(n),
                RuleTree::Always => None,
                RuleTree::Never => {
                    cx.warn(
                        format!("{at}.rules"),
                        format!(
                            "decision `{}` can never match without its unsupported conditions; dropped",
                            d.name
                        ),
                    );
                    continue;
                }
            },
        };
        let mut refs = Vec::new();
        for (j, r) in d.model_refs.into_iter().enumerate() {
            let rat = format!("{at}.modelRefs[{j}]");
            if !models.contains(&r.model) {
                cx.warn(
                    format!("{rat}.model"),
                    format!(
                        "model `{}` has no provider binding in this file; reference dropped",
                        r.model
                    ),
                );
                continue;
            }
            if r.weight.is_some() {
                cx.warn(
                    format!("{rat}.weight"),
                    "llmsoup picks models in order (or by the decision's algorithm); weights are ignored",
                );
            }
            refs.push(ModelRef {
                model: r.model,
                use_reasoning: r.use_reasoning,
                reasoning_effort: effort(cx, r.reasoning_effort.as_deref(), &format!("{rat}.reasoning_effort")),
                lora_name: r.lora_name,
            });
        }
        let algorithm = convert_algorithm(cx, d.algorithm, &format!("{at}.algorithm"));
        let plugins = convert_plugins(cx, d.plugins, &format!("{at}.plugins"))?;
        // A vSR decision that only answers (`fast_response`, e.g. blocking) needs no model;
        // native decisions do, so [`assemble`] gives it the default model, never called.
        let answers = plugins.iter().any(|p| matches!(p, PluginConfig::FastResponse(_)));
        if refs.is_empty() && !answers {
            cx.warn(
                format!("{at}.modelRefs"),
                format!("decision `{}` has no usable model; dropped", d.name),
            );
            continue;
        }
        out.push(DecisionConfig {
            name,
            description: d.description,
            priority: d.priority,
            tier: d.tier,
            rules,
            model_refs: refs,
            algorithm,
            plugins,
        });
    }
    Ok(out)
}

fn convert_algorithm(cx: &mut Cx, a: Option<VAlgorithm>, at: &str) -> AlgorithmConfig {
    let mut out = AlgorithmConfig::default();
    let Some(a) = a else { return out };
    if a.on_error.is_some() {
        cx.warn(
            format!("{at}.on_error"),
            "llmsoup skips failing models and falls back to the next; ignored",
        );
    }
    match a.kind.as_str() {
        "static" => {}
        "latency_aware" => {
            out.kind = AlgorithmKind::LatencyAware;
            let la = a.latency_aware.unwrap_or_default();
            if let Some(p) = la.ttft_percentile {
                if (1..=100).contains(&p) {
                    out.ttft_percentile = p;
                } else {
                    cx.warn(
                        format!("{at}.latency_aware.ttft_percentile"),
                        "must be 1..100; using 90",
                    );
                }
            }
            if la.tpot_percentile.is_some() {
                cx.warn(
                    format!("{at}.latency_aware.tpot_percentile"),
                    "llmsoup compares the median time per output token; ignored",
                );
            }
        }
        other => cx.warn(
            format!("{at}.type"),
            format!("algorithm `{other}` is not supported by llmsoup; using `static` (the first model)"),
        ),
    }
    out
}

/// Keys each native plugin takes; others are warned about and removed before decoding.
const PLUGIN_KEYS: &[(&str, &[&str])] = &[
    ("system_prompt", &["enabled", "system_prompt", "mode"]),
    ("header_mutation", &["add", "update", "delete"]),
    ("fast_response", &["message", "status"]),
    (
        "request_params",
        &["blocked_params", "max_tokens_limit", "max_n", "strip_unknown"],
    ),
];

/// Converts decision plugins.
pub(super) fn convert_plugins(
    cx: &mut Cx,
    plugins: Vec<VPlugin>,
    path: &str,
) -> Result<Vec<PluginConfig>, ConfigError> {
    let mut out = Vec::new();
    for (i, p) in plugins.into_iter().enumerate() {
        let at = format!("{path}[{i}]");
        let cat = format!("{at}.configuration");
        let mut conf = match p.configuration {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m,
            _ => return Err(cx.error(cat, "expected a mapping")),
        };
        let kind = p.kind.replace('-', "_");
        if let Some((_, keys)) = PLUGIN_KEYS.iter().find(|(k, _)| *k == kind) {
            let enabled = conf.get("enabled").and_then(Value::as_bool) != Some(false);
            if !enabled && kind != "system_prompt" {
                continue;
            }
            let extra: Vec<String> = conf
                .keys()
                .map(key_text)
                .filter(|k| !keys.contains(&k.as_str()))
                .collect();
            for k in extra {
                conf.remove(k.as_str());
                cx.warn(join(&cat, &k), "not supported by llmsoup, ignored");
            }
            if kind == "system_prompt" && !enabled && !conf.contains_key("system_prompt") {
                continue;
            }
            let v = Value::Mapping(conf);
            out.push(match kind.as_str() {
                "system_prompt" => PluginConfig::SystemPrompt(cx.typed::<SystemPromptPlugin>(v, &cat)?),
                "header_mutation" => PluginConfig::HeaderMutation(cx.typed::<HeaderMutationPlugin>(v, &cat)?),
                "fast_response" => PluginConfig::FastResponse(cx.typed::<FastResponsePlugin>(v, &cat)?),
                _ => PluginConfig::RequestParams(cx.typed::<RequestParamsPlugin>(v, &cat)?),
            });
            continue;
        }
        match kind.as_str() {
            "semantic_cache" | "response_cache" => {
                cx.warn(
                    format!("{at}.type"),
                    "the response cache plugin is kept in the config but not applied yet",
                );
                let json = serde_json::to_value(Value::Mapping(conf)).map_err(|e| cx.error(cat, e.to_string()))?;
                out.push(PluginConfig::ResponseCache(json));
            }
            "pii" | "jailbreak" => cx.warn(
                at,
                format!(
                    "the v0.1 `{kind}` decision plugin (a no-op since vSR v0.2) is not supported; use a `{kind}` signal and a decision with a `fast_response` plugin"
                ),
            ),
            other => cx.warn(
                format!("{at}.type"),
                format!("plugin `{other}` is not supported by llmsoup, ignored"),
            ),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Providers and models.

/// vSR `pricing`.
#[derive(Debug, Deserialize)]
pub(super) struct VPricing {
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    prompt_per_1m: Option<f64>,
    #[serde(default)]
    completion_per_1m: Option<f64>,
    #[serde(default)]
    cached_input_per_1m: Option<f64>,
    #[serde(default)]
    cache_write_per_1m: Option<f64>,
}

/// Native pricing (same per-1M units; llmsoup assumes USD).
pub(super) fn pricing(cx: &mut Cx, p: Option<VPricing>, at: &str) -> Option<Pricing> {
    let p = p?;
    if let Some(c) = p.currency.as_deref()
        && !c.eq_ignore_ascii_case("usd")
    {
        cx.warn(
            format!("{at}.currency"),
            format!("llmsoup reports costs in USD; `{c}` prices are used as they are"),
        );
    }
    if p.cache_write_per_1m.is_some() {
        cx.warn(format!("{at}.cache_write_per_1m"), "not supported by llmsoup, ignored");
    }
    Some(Pricing {
        prompt_per_1m: p.prompt_per_1m.unwrap_or(0.0),
        completion_per_1m: p.completion_per_1m.unwrap_or(0.0),
        cached_prompt_per_1m: p.cached_input_per_1m,
    })
}

/// Native providers built up from vSR endpoints, one per distinct base URL and credential.
#[derive(Debug, Default)]
pub(super) struct Providers {
    pub(super) list: Vec<ProviderConfig>,
}

/// How Envoy authenticates to a provider, as vSR wrote it.
#[derive(Debug, Default, Clone)]
pub(super) struct Auth {
    /// Source path of the key field (for the inline-secret warning and `${VAR}` detection).
    pub(super) key_path: Option<String>,
    /// Whether a key was written inline.
    pub(super) inline: bool,
    /// `api_key_env`.
    pub(super) env: Option<String>,
    pub(super) header: Option<String>,
    pub(super) prefix: Option<String>,
}

impl Providers {
    /// Adds (or reuses) a provider for `base_url` and returns its name; `at` is the source path
    /// errors and warnings point at.
    pub(super) fn add(
        &mut self,
        cx: &mut Cx,
        hint: &str,
        base_url: String,
        auth: &Auth,
        at: &str,
    ) -> Result<String, ConfigError> {
        let env = auth
            .env
            .clone()
            .or_else(|| auth.key_path.as_deref().and_then(|p| cx.env_ref(p)));
        if env.is_none()
            && auth.inline
            && let Some(p) = &auth.key_path
        {
            cx.warn(
                p.clone(),
                "inline API keys are not copied into llmsoup's config: Envoy reads provider keys from its environment or a file (set `api_key: ${VAR}` or `api_key_env`)",
            );
        }
        let credentials = env.map(|env| CredentialsConfig {
            env: Some(env),
            file: None,
            header: auth.header.clone().unwrap_or_else(|| "authorization".into()),
            prefix: auth.prefix.clone().unwrap_or_else(|| "Bearer ".into()),
        });
        let candidate = ProviderConfig {
            name: String::new(),
            format: ProviderFormat::Openai,
            base_url,
            credentials,
            connect_timeout_ms: 5_000,
        };
        if let Err(m) = candidate.endpoint() {
            return Err(cx.error(at, m));
        }
        let same = |p: &ProviderConfig| {
            p.base_url == candidate.base_url
                && match (&p.credentials, &candidate.credentials) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.env == b.env && a.header == b.header && a.prefix == b.prefix,
                    _ => false,
                }
        };
        if let Some(p) = self.list.iter().find(|p| same(p)) {
            return Ok(p.name.clone());
        }
        let base = sanitize(hint);
        let mut name = base.clone();
        let mut n = 2;
        while self.list.iter().any(|p| p.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.list.push(ProviderConfig {
            name: name.clone(),
            ..candidate
        });
        Ok(name)
    }
}

/// `scheme://host:port/v1` from vSR's address / port / protocol.
pub(super) fn url_from_address(address: &str, port: Option<u16>, protocol: Option<&str>) -> String {
    let scheme = protocol.unwrap_or("http");
    let host = if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    match port {
        Some(p) => format!("{scheme}://{host}:{p}/v1"),
        None => format!("{scheme}://{host}/v1"),
    }
}

/// `scheme://host:port[/path]` from vSR's `endpoint: host:port[/path]`; a bare host:port gets
/// `/v1`, since vSR appends the OpenAI `/v1/chat/completions` path to it.
pub(super) fn url_from_endpoint(endpoint: &str, protocol: Option<&str>) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    let with_scheme = if e.contains("://") {
        e.to_string()
    } else {
        format!("{}://{e}", protocol.unwrap_or("http"))
    };
    let after_scheme = with_scheme.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.contains('/') {
        with_scheme
    } else {
        format!("{with_scheme}/v1")
    }
}

/// vSR's provider types llmsoup talks to as OpenAI-compatible without a warning.
pub(super) fn warn_provider_type(cx: &mut Cx, kind: Option<&str>, at: &str) {
    if let Some(t) = kind
        && !matches!(t, "openai" | "vllm" | "chat" | "openai-compatible" | "ollama" | "")
    {
        cx.warn(
            at,
            format!("provider type `{t}`: llmsoup speaks the OpenAI chat-completions protocol only; make sure the base_url serves it"),
        );
    }
}

/// Warns for an `api_format` other than OpenAI.
pub(super) fn warn_api_format(cx: &mut Cx, format: Option<&str>, at: &str) {
    if let Some(f) = format
        && f != "openai"
    {
        cx.warn(
            at,
            format!("api_format `{f}` is not supported: llmsoup sends OpenAI chat-completions requests to this model"),
        );
    }
}

/// A native model.
pub(super) struct ModelSpec {
    pub(super) name: String,
    pub(super) provider: String,
    pub(super) model_id: Option<String>,
    pub(super) pricing: Option<Pricing>,
    pub(super) quality: Option<f64>,
    pub(super) description: Option<String>,
    pub(super) reasoning_family: Option<String>,
}

/// Builds a native model; a reasoning family that is not configured is warned about and dropped.
pub(super) fn model(
    cx: &mut Cx,
    spec: ModelSpec,
    families: &BTreeMap<String, crate::config::ReasoningFamily>,
    at: &str,
) -> ModelConfig {
    let reasoning_family = match spec.reasoning_family {
        Some(f) if !families.contains_key(&f) => {
            cx.warn(
                format!("{at}.reasoning_family"),
                format!("no reasoning family `{f}` is configured; ignored"),
            );
            None
        }
        other => other,
    };
    let quality = match spec.quality {
        Some(q) if !(0.0..=1.0).contains(&q) => {
            cx.warn(
                format!("{at}.quality_score"),
                "a quality score is between 0 and 1; ignored",
            );
            None
        }
        other => other,
    };
    ModelConfig {
        name: spec.name,
        provider: spec.provider,
        model_id: spec.model_id,
        pricing: spec.pricing,
        quality,
        tier: None,
        enabled: true,
        description: spec.description,
        reasoning_family,
    }
}

/// Routing-level settings shared by all shapes.
pub(super) struct RoutingSpec {
    pub(super) auto_model_names: Vec<String>,
    pub(super) default_model: Option<(String, String)>,
    pub(super) strategy: Option<String>,
    pub(super) strategy_at: String,
    pub(super) reasoning_families: BTreeMap<String, crate::config::ReasoningFamily>,
    pub(super) default_reasoning_effort: Option<(String, String)>,
}

/// Assembles the native config from converted parts.
pub(super) fn assemble(
    cx: &mut Cx,
    providers: Providers,
    models: Vec<ModelConfig>,
    signals: SignalsConfig,
    decisions: Vec<DecisionConfig>,
    r: RoutingSpec,
    listen: Option<String>,
) -> Result<crate::config::Config, ConfigError> {
    use crate::config::{Config, RoutingConfig, Strategy};
    let mut routing = RoutingConfig {
        auto_models: Vec::new(),
        ..RoutingConfig::default()
    };
    for n in r.auto_model_names {
        if !routing.auto_models.contains(&n) {
            routing.auto_models.push(n);
        }
    }
    if let Some((d, at)) = r.default_model {
        if models.iter().any(|m| m.name == d) {
            routing.default_model = Some(d);
        } else {
            cx.warn(
                at,
                format!("default model `{d}` has no provider binding in this file; the first model is the default"),
            );
        }
    }
    routing.strategy = match r.strategy.as_deref() {
        None | Some("priority") => Strategy::Priority,
        Some("confidence") => Strategy::Confidence,
        Some(other) => {
            return Err(cx.error(
                r.strategy_at,
                format!("unknown strategy `{other}` (expected priority or confidence)"),
            ));
        }
    };
    routing.reasoning_families = r.reasoning_families;
    if let Some((e, at)) = r.default_reasoning_effort {
        routing.default_reasoning_effort = effort(cx, Some(&e), &at);
    }
    if models.is_empty() {
        return Err(cx.error(
            "",
            "no model is bound to an endpoint: llmsoup needs at least one routable model",
        ));
    }
    let fallback = routing.default_model.clone().unwrap_or_else(|| models[0].name.clone());
    let mut decisions = decisions;
    for d in decisions.iter_mut().filter(|d| d.model_refs.is_empty()) {
        d.model_refs.push(ModelRef::new(fallback.clone()));
    }
    let mut config = Config {
        server: Default::default(),
        gateway: Default::default(),
        providers: providers.list,
        models,
        signals,
        decisions,
        routing,
        auth: Default::default(),
        embedding: Default::default(),
        classifier: Default::default(),
        decision_log: None,
        compat: crate::config::CompatConfig {
            vsr_headers: true,
            selected_model_header: Some("x-selected-model".into()),
        },
    };
    if let Some(l) = listen {
        config.gateway.listen = l;
    }
    Ok(config)
}

/// `listeners[0]` → `gateway.listen`; the other listeners are warned about.
#[derive(Debug, Deserialize)]
pub(super) struct VListener {
    // Metadata: accepted, no effect on routing.
    #[allow(dead_code)]
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    timeout: Option<String>,
}

/// The Envoy listen address from vSR `listeners`.
pub(super) fn listen(cx: &mut Cx, listeners: Vec<VListener>, path: &str) -> Option<String> {
    let mut it = listeners.into_iter().enumerate();
    let (_, first) = it.next()?;
    for (i, _) in it {
        cx.warn(
            format!("{path}[{i}]"),
            "llmsoup renders one Envoy listener (`gateway.listen`); only the first is used",
        );
    }
    if first.timeout.is_some() {
        cx.warn(
            format!("{path}[0].timeout"),
            "upstream timeouts are set by `llmsoup envoy-config`; ignored",
        );
    }
    let port = first.port?;
    let address = first.address.unwrap_or_else(|| "0.0.0.0".into());
    Some(if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    })
}
