//! vSR signal rule bodies (identical in G1, G1' and G2; G0 adds `category:`) and their native
//! equivalents.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use super::common::{Cx, join, sanitize};
use crate::{
    Aggregation, ComplexityRule, ConfigError, ContextRule, DomainRule, EmbeddingRule, Exemplars, JailbreakRule,
    KeywordMethod, KeywordOperator, KeywordRule, LanguageRule, PiiRule, SignalKind, SignalsConfig, TokenCount,
};

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
    pub(super) fn add(&mut self, kind: SignalKind, vsr: &str, native: &str) {
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
        let builtin = |c: &str| crate::taxonomy::CATEGORIES.contains(&c);
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
            if crate::PII_TYPES.contains(&t.as_str()) {
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
