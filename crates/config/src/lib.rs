//! llmsoup's native configuration: schema, loading, `${ENV}` substitution and validation.
//!
//! The file is parsed in two passes: YAML text → `serde_yaml::Value` (so `${ENV}` substitution
//! happens on string scalars only, never inside keys or comments), then typed decoding through
//! `serde_path_to_error` so every error names the key path. Line numbers come from a second
//! look at the original text (see [`locate`]).
//!
//! This crate depends on no other llmsoup crate but the contract (for the reserved header
//! prefix): everything else reads the configuration, the configuration reads nothing.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod chains;
pub mod edit;
mod env;
pub mod headers;
mod locate;
mod plugins;
mod schema;
mod size;
pub mod strengths;
pub mod taxonomy;
pub mod vsr;

pub use plugins::*;
pub use schema::*;
pub use size::TokenCount;
pub use vsr::{Shape, Warning};

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use thiserror::Error;

/// A configuration problem, always tied to a key path when one is known.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML.
    #[error("invalid YAML{}: {message}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Syntax {
        /// The parser's message.
        message: String,
        /// Where, when known.
        line: Option<usize>,
    },
    /// A value is wrong.
    #[error("{path}: {message}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        /// The key path (`decisions[2].modelRefs`).
        path: String,
        /// What is wrong.
        message: String,
        /// Where, when known.
        line: Option<usize>,
    },
}

impl ConfigError {
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
            line: None,
        }
    }
}

/// vLLM Semantic Router's PII type names (the vocabulary of `pii_types_allowed`).
pub const PII_TYPES: &[&str] = &[
    "AGE",
    "CREDIT_CARD",
    "DATE_TIME",
    "DOMAIN_NAME",
    "EMAIL_ADDRESS",
    "GPE",
    "IBAN_CODE",
    "IP_ADDRESS",
    "NO_PII",
    "NRP",
    "ORGANIZATION",
    "PERSON",
    "PHONE_NUMBER",
    "STREET_ADDRESS",
    "US_DRIVER_LICENSE",
    "US_SSN",
    "ZIP_CODE",
];

/// Where configuration text came from, for error messages.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// A human name: a file path or `<embedded>`.
    pub name: &'a str,
    /// The raw YAML text.
    pub text: &'a str,
}

/// The default configuration `make run` uses, embedded so the binary works with no file.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/llmsoup.yaml");

/// A validated configuration, the format it was written in, and what was not carried over.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The native configuration.
    pub config: Config,
    /// The format of the source file.
    pub shape: Shape,
    /// Keys of a vSR file llmsoup ignores or applies differently (always empty for native files).
    pub warnings: Vec<Warning>,
}

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_file_detailed(path).map(|l| l.config)
}

/// Reads and validates a config file of any supported format, keeping the shape and warnings.
pub fn load_file_detailed(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    load_detailed(&text, &|name| std::env::var(name).ok())
}

/// Parses and validates configuration text, substituting `${ENV}` from the process environment.
pub fn load_str(text: &str) -> Result<Config, ConfigError> {
    load_str_with_env(text, &|name| std::env::var(name).ok())
}

/// Parses and validates configuration text with an explicit environment lookup (for tests).
pub fn load_str_with_env(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    load_detailed(text, lookup).map(|l| l.config)
}

/// Parses and validates configuration text in any supported format (native, or one of vLLM
/// Semantic Router's, detected automatically), with an explicit environment lookup.
pub fn load_detailed(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
        message: e.to_string(),
        line: e.location().map(|l| l.line()),
    })?;
    let shape = vsr::detect(&value);
    if shape.is_vsr() {
        let env_refs = vsr::take_credential_env_refs(&mut value);
        let env_warnings = vsr::unset_variables(&value, text, lookup);
        let keep = |name: &str| vsr::keep_unset(lookup, name);
        env::substitute(&mut value, "", &keep).map_err(|(path, message)| ConfigError::Invalid {
            line: locate::line_of(text, &path),
            path,
            message,
        })?;
        let (config, warnings) = vsr::convert(shape, value, text, env_refs, env_warnings)?;
        // Paths in these errors are native ones: they cannot point into the vSR text.
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { path, message, .. } => ConfigError::Invalid {
                path: format!("{path} (in the converted llmsoup config)"),
                message,
                line: None,
            },
            other => other,
        })?;
        return Ok(Loaded {
            config,
            shape,
            warnings,
        });
    }
    env::substitute(&mut value, "", lookup).map_err(|(path, message)| ConfigError::Invalid {
        line: locate::line_of(text, &path),
        path,
        message,
    })?;
    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        ConfigError::Invalid {
            line: locate::line_of(text, &path),
            path,
            message,
        }
    })?;
    config.validate().map_err(|e| match e {
        ConfigError::Invalid {
            path,
            message,
            line: None,
        } => ConfigError::Invalid {
            line: locate::line_of(text, &path),
            path,
            message,
        },
        other => other,
    })?;
    Ok(Loaded {
        config,
        shape,
        warnings: Vec::new(),
    })
}

/// The native YAML equivalent of a loaded config (`llmsoup config migrate`), headed by the
/// warnings as comments. `$` is escaped as `$$` so the output loads back to the same values.
pub fn to_native_yaml(loaded: &Loaded) -> Result<String, ConfigError> {
    // Also drops `null`s: every optional key defaults to absent, except `admin_listen`, where
    // null means "off" (the round-trip test checks the output loads back to the same config).
    fn escape(v: &mut serde_yaml::Value) {
        match v {
            serde_yaml::Value::String(s) if s.contains('$') => *s = s.replace('$', "$$"),
            serde_yaml::Value::Sequence(items) => items.iter_mut().for_each(escape),
            serde_yaml::Value::Mapping(m) => {
                m.retain(|k, v| !v.is_null() || k.as_str() == Some("admin_listen"));
                m.iter_mut().for_each(|(_, v)| escape(v));
            }
            serde_yaml::Value::Tagged(t) => escape(&mut t.value),
            _ => {}
        }
    }
    let mut value = serde_yaml::to_value(&loaded.config).map_err(|e| ConfigError::invalid("", e.to_string()))?;
    escape(&mut value);
    let body = serde_yaml::to_string(&value).map_err(|e| ConfigError::invalid("", e.to_string()))?;
    let mut out = format!(
        "# llmsoup native configuration, migrated from a {} file.\n",
        loaded.shape.describe()
    );
    if loaded.warnings.is_empty() {
        out.push_str("# Nothing was left out.\n");
    } else {
        out.push_str("# Not carried over, or applied differently (key paths are in the source file):\n");
        for w in &loaded.warnings {
            out.push_str(&format!("#   - {}\n", w.to_string().replace('\n', " ")));
        }
    }
    out.push('\n');
    out.push_str(&body);
    Ok(out)
}

/// The 1-based line of a key path (`signals.difficulty[0].threshold`) in block-style YAML text,
/// if it can be found (flow-style values resolve to their nearest block-style ancestor's line).
pub fn key_line(text: &str, path: &str) -> Option<usize> {
    locate::line_of(text, path)
}

/// The JSON Schema of the native configuration, as published by `llmsoup config schema`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).expect("schema serialises")
}

impl Config {
    /// Cross-field checks serde cannot express; errors name the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.response_cache.validate()?;
        // A Unix socket path is checked here, so `config check` names it with its line; a TCP
        // address is parsed where it is used (Envoy's cluster may name a host the sidecar never
        // binds).
        self.server.validate()?;
        self.gateway.sidecar(&self.server)?;
        let hc = &self.gateway.sidecar_health_check;
        for (key, value) in [
            ("interval_ms", hc.interval_ms),
            ("timeout_ms", hc.timeout_ms),
            ("unhealthy_threshold", u64::from(hc.unhealthy_threshold)),
            ("healthy_threshold", u64::from(hc.healthy_threshold)),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(
                    format!("gateway.sidecar_health_check.{key}"),
                    "must be at least 1",
                ));
            }
        }
        let mut providers = BTreeSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let at = format!("providers[{i}]");
            if !providers.insert(p.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!("duplicate provider name `{}`", p.name),
                ));
            }
            check_name(&p.name, &format!("{at}.name"))?;
            schema::validate_health(p, &at)?;
            p.endpoint()
                .map_err(|m| ConfigError::invalid(format!("{at}.base_url"), m))?;
            if let Some(c) = &p.credentials
                && c.env.is_some() == c.file.is_some()
            {
                return Err(ConfigError::invalid(
                    format!("{at}.credentials"),
                    "set exactly one of `env` or `file`",
                ));
            }
        }
        let mut models = BTreeSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let at = format!("models[{i}]");
            if !models.insert(m.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!("duplicate model name `{}`", m.name),
                ));
            }
            if m.name.trim().is_empty() || m.name.chars().any(|c| c.is_control()) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    "model names must be non-empty printable text",
                ));
            }
            if !providers.contains(m.provider.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{at}.provider"),
                    format!("unknown provider `{}`", m.provider),
                ));
            }
            if let Some(s) = m.strength
                && !(-20.0..=20.0).contains(&s)
            {
                return Err(ConfigError::invalid(
                    format!("{at}.strength"),
                    "a strength is a logit-scale ability between -20 and 20 (the learned models span -2.2 to 1.5)",
                ));
            }
            if self.routing.auto_models.iter().any(|a| a == &m.name) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!("`{}` is also an auto model name in routing.auto_models", m.name),
                ));
            }
        }
        if self.models.is_empty() {
            return Err(ConfigError::invalid("models", "at least one model is required"));
        }
        match &self.routing.default_model {
            Some(d) if !models.contains(d.as_str()) => {
                return Err(ConfigError::invalid(
                    "routing.default_model",
                    format!("unknown model `{d}`"),
                ));
            }
            Some(d) if !self.model(d).is_some_and(|m| m.enabled) => {
                return Err(ConfigError::invalid(
                    "routing.default_model",
                    format!("model `{d}` is disabled"),
                ));
            }
            _ => {}
        }
        if self.routing.auto_models.is_empty() {
            return Err(ConfigError::invalid(
                "routing.auto_models",
                "at least one auto model name is required",
            ));
        }

        let mut signal_names: HashMap<SignalKind, BTreeSet<String>> = HashMap::new();
        let mut add = |kind: SignalKind, name: &str, at: String| -> Result<(), ConfigError> {
            check_name(name, &at)?;
            if !signal_names.entry(kind).or_default().insert(name.to_string()) {
                return Err(ConfigError::invalid(
                    at,
                    format!("duplicate {kind} signal name `{name}`"),
                ));
            }
            Ok(())
        };
        for (i, k) in self.signals.keywords.iter().enumerate() {
            add(SignalKind::Keyword, &k.name, format!("signals.keywords[{i}].name"))?;
            if k.keywords.is_empty() {
                return Err(ConfigError::invalid(
                    format!("signals.keywords[{i}].keywords"),
                    "at least one keyword is required",
                ));
            }
            if k.method == KeywordMethod::Regex {
                for (j, p) in k.keywords.iter().enumerate() {
                    if let Err(e) = regex::RegexBuilder::new(p).case_insensitive(!k.case_sensitive).build() {
                        return Err(ConfigError::invalid(
                            format!("signals.keywords[{i}].keywords[{j}]"),
                            format!("bad pattern `{p}`: {e}"),
                        ));
                    }
                }
            }
        }
        for (i, c) in self.signals.context.iter().enumerate() {
            add(SignalKind::Context, &c.name, format!("signals.context[{i}].name"))?;
            if let (Some(lo), Some(hi)) = (c.min_tokens, c.max_tokens)
                && lo.0 > hi.0
            {
                return Err(ConfigError::invalid(
                    format!("signals.context[{i}]"),
                    "min_tokens is larger than max_tokens",
                ));
            }
        }
        for (i, l) in self.signals.language.iter().enumerate() {
            add(SignalKind::Language, &l.name, format!("signals.language[{i}].name"))?;
            if isolang::Language::from_639_1(&l.name).is_none() {
                return Err(ConfigError::invalid(
                    format!("signals.language[{i}].name"),
                    format!("`{}` is not an ISO-639-1 language code", l.name),
                ));
            }
        }

        for (i, r) in self.signals.embeddings.iter().enumerate() {
            add(SignalKind::Embedding, &r.name, format!("signals.embeddings[{i}].name"))?;
            if r.candidates.iter().all(|c| c.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    format!("signals.embeddings[{i}].candidates"),
                    "at least one non-empty candidate phrase is required",
                ));
            }
            if !(0.0..=1.0).contains(&r.threshold) {
                return Err(ConfigError::invalid(
                    format!("signals.embeddings[{i}].threshold"),
                    "a cosine similarity threshold is between 0 and 1",
                ));
            }
        }
        for (i, r) in self.signals.domains.iter().enumerate() {
            let at = format!("signals.domains[{i}]");
            add(SignalKind::Domain, &r.name, format!("{at}.name"))?;
            // A checkpoint's labels are only known when it loads (lazily): names are not checked.
            let checkpoint = self.classifier.checkpoint.is_some();
            let builtin = checkpoint || crate::taxonomy::CATEGORIES.contains(&r.name.as_str());
            let custom = r.description.is_some() || !r.examples.is_empty() || !r.mmlu_categories.is_empty();
            if !builtin && !custom {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!(
                        "`{}` is not a built-in category ({}); give a custom domain a description, examples or mmlu_categories",
                        r.name,
                        crate::taxonomy::CATEGORIES.join(", ")
                    ),
                ));
            }
            for (j, c) in r.mmlu_categories.iter().enumerate() {
                if !checkpoint && !crate::taxonomy::CATEGORIES.contains(&c.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("{at}.mmlu_categories[{j}]"),
                        format!("`{c}` is not a built-in category"),
                    ));
                }
            }
        }
        for (i, r) in self.signals.complexity.iter().enumerate() {
            let at = format!("signals.complexity[{i}]");
            check_name(&r.name, &format!("{at}.name"))?;
            for level in ["easy", "medium", "hard"] {
                add(
                    SignalKind::Complexity,
                    &format!("{}:{level}", r.name),
                    format!("{at}.name"),
                )?;
            }
            if !(0.0 < r.easy_below && r.easy_below <= r.hard_from && r.hard_from <= 1.0) {
                return Err(ConfigError::invalid(at, "need 0 < easy_below <= hard_from <= 1"));
            }
        }
        for (i, r) in self.signals.latency.iter().enumerate() {
            let at = format!("signals.latency[{i}]");
            add(SignalKind::Latency, &r.name, format!("{at}.name"))?;
            if r.ttft_target_ms.is_none() && r.tpot_target_ms.is_none() {
                return Err(ConfigError::invalid(at, "set ttft_target_ms and/or tpot_target_ms"));
            }
            if !(1..=100).contains(&r.ttft_percentile) {
                return Err(ConfigError::invalid(format!("{at}.ttft_percentile"), "must be 1..100"));
            }
            for (j, m) in r.models.iter().enumerate() {
                if !models.contains(m.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("{at}.models[{j}]"),
                        format!("unknown model `{m}`"),
                    ));
                }
            }
        }
        let probability = |v: Option<f32>, at: String| match v {
            Some(t) if !(0.0..=1.0).contains(&t) => Err(ConfigError::invalid(at, "must be between 0 and 1")),
            _ => Ok(()),
        };
        for (i, r) in self.signals.pii.iter().enumerate() {
            let at = format!("signals.pii[{i}]");
            add(SignalKind::Pii, &r.name, format!("{at}.name"))?;
            probability(r.threshold, format!("{at}.threshold"))?;
            for (j, t) in r.pii_types_allowed.iter().enumerate() {
                if !PII_TYPES.contains(&t.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("{at}.pii_types_allowed[{j}]"),
                        format!("unknown PII type `{t}` (known: {})", PII_TYPES.join(", ")),
                    ));
                }
            }
        }
        for (i, r) in self.signals.jailbreak.iter().enumerate() {
            let at = format!("signals.jailbreak[{i}]");
            add(SignalKind::Jailbreak, &r.name, format!("{at}.name"))?;
            probability(r.threshold, format!("{at}.threshold"))?;
        }
        for (i, r) in self.signals.difficulty.iter().enumerate() {
            let at = format!("signals.difficulty[{i}]");
            add(SignalKind::Difficulty, &r.name, format!("{at}.name"))?;
            probability(Some(r.threshold as f32), format!("{at}.threshold"))?;
        }
        for (i, m) in self.models.iter().enumerate() {
            if let Some(f) = &m.reasoning_family
                && !self.routing.reasoning_families.contains_key(f)
            {
                return Err(ConfigError::invalid(
                    format!("models[{i}].reasoning_family"),
                    format!("no reasoning family `{f}` in routing.reasoning_families"),
                ));
            }
        }
        if let Some(h) = &self.compat.selected_model_header
            && let Some(problem) = crate::headers::name_problem(h)
        {
            return Err(ConfigError::invalid(
                "compat.selected_model_header",
                format!("{problem}; expected a plain HTTP header name such as `x-selected-model`"),
            ));
        }
        if !(0.0..=1.0).contains(&self.classifier.threshold) {
            return Err(ConfigError::invalid(
                "classifier.threshold",
                "a probability is between 0 and 1",
            ));
        }
        let e = &self.embedding;
        for (key, v) in [
            ("max_tokens", e.max_tokens),
            ("batch_size", e.batch_size),
            ("workers", e.workers),
            ("queue", e.queue),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(format!("embedding.{key}"), "must be at least 1"));
            }
        }

        let mut decisions = BTreeSet::new();
        for (i, d) in self.decisions.iter().enumerate() {
            let at = format!("decisions[{i}]");
            if !decisions.insert(d.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{at}.name"),
                    format!("duplicate decision name `{}`", d.name),
                ));
            }
            check_name(&d.name, &format!("{at}.name"))?;
            if let Some(rules) = &d.rules {
                rules.check(&format!("{at}.rules"), &|kind, name| {
                    signal_names.get(&kind).is_some_and(|names| names.contains(name))
                })?;
            }
            if d.model_refs.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.modelRefs"),
                    "at least one model reference is required",
                ));
            }
            let a = &d.algorithm;
            if let Some(b) = a.quality_bias
                && !(0.0..=1.0).contains(&b)
            {
                return Err(ConfigError::invalid(
                    format!("{at}.algorithm.quality_bias"),
                    "must be between 0 and 1",
                ));
            }
            match (a.kind, a.target) {
                (AlgorithmKind::SuccessTarget, None) => {
                    return Err(ConfigError::invalid(
                        format!("{at}.algorithm.target"),
                        "success_target needs `target`: the predicted success (0–1) the chosen model must reach",
                    ));
                }
                (AlgorithmKind::SuccessTarget, Some(t)) if !(t > 0.0 && t <= 1.0) => {
                    return Err(ConfigError::invalid(
                        format!("{at}.algorithm.target"),
                        "must be above 0 and at most 1",
                    ));
                }
                (AlgorithmKind::SuccessTarget, _) => {
                    for (j, r) in d.model_refs.iter().enumerate() {
                        let known = self.models.iter().find(|m| m.name == r.model).map(strengths::of);
                        if known == Some(None) {
                            return Err(ConfigError::invalid(
                                format!("{at}.modelRefs[{j}].model"),
                                format!(
                                    "success_target needs every model's strength: set `strength` on model `{}` (its model id is not one the built-in strengths were fitted on)",
                                    r.model
                                ),
                            ));
                        }
                    }
                }
                (_, Some(_)) => {
                    return Err(ConfigError::invalid(
                        format!("{at}.algorithm.target"),
                        "only the success_target algorithm takes `target`",
                    ));
                }
                (_, None) => {}
            }
            if !(1..=100).contains(&a.ttft_percentile) {
                return Err(ConfigError::invalid(
                    format!("{at}.algorithm.ttft_percentile"),
                    "must be 1..100",
                ));
            }
            for (j, r) in d.model_refs.iter().enumerate() {
                if !models.contains(r.model.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("{at}.modelRefs[{j}].model"),
                        format!("unknown model `{}`", r.model),
                    ));
                }
                if let Some(l) = &r.lora_name
                    && (l.trim().is_empty() || l.chars().any(char::is_control))
                {
                    return Err(ConfigError::invalid(
                        format!("{at}.modelRefs[{j}].lora_name"),
                        "a LoRA name must be non-empty printable text",
                    ));
                }
            }
            self.check_plugins(&d.plugins, &at)?;
        }
        let mut names = BTreeSet::new();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if t.sha256.len() != 64 || hex::decode(&t.sha256).is_err() {
                return Err(ConfigError::invalid(
                    format!("auth.tokens[{i}].sha256"),
                    "expected 64 hex characters (SHA-256 of the token; see `llmsoup hash-token`)",
                ));
            }
            // The name is the tenant: a request header (`x-llmsoup-tenant`), a metric label and a
            // budget key, so it must be printable ASCII and name one token only.
            for (key, value) in [("name", Some(t.name.as_str())), ("group", t.group.as_deref())] {
                if let Some(v) = value
                    && (v.trim().is_empty() || !v.bytes().all(|b| (0x20..0x7f).contains(&b)))
                {
                    return Err(ConfigError::invalid(
                        format!("auth.tokens[{i}].{key}"),
                        "must be non-empty printable ASCII",
                    ));
                }
            }
            if !names.insert(t.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("auth.tokens[{i}].name"),
                    format!("duplicate token name `{}`", t.name),
                ));
            }
        }
        self.budgets.validate(self)?;
        self.validate_learning()?;
        if let Some(t) = &self.server.grpc_token
            && (!(16..=64).contains(&t.len())
                || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)))
        {
            // It travels as a bearer credential in gRPC metadata, which Envoy's header parser
            // would read `%` in as a format command; inside the wasm filter's serialized gRPC
            // descriptor it must stay short enough to be UTF-8; a short secret is a guessable one.
            return Err(ConfigError::invalid(
                "server.grpc_token",
                "expected 16 to 64 characters from A-Z a-z 0-9 - . _ ~ + / = (e.g. `openssl rand -hex 24`)",
            ));
        }
        self.validate_fallbacks()
    }

    /// Checks one decision's plugins; errors name `decisions[i].plugins[j]...`.
    fn check_plugins(&self, plugins: &[PluginConfig], at: &str) -> Result<(), ConfigError> {
        use crate::headers::{name_problem, value_problem};
        let mut seen = BTreeSet::new();
        for (j, p) in plugins.iter().enumerate() {
            let at = format!("{at}.plugins[{j}]");
            if !seen.insert(p.kind()) {
                return Err(ConfigError::invalid(
                    format!("{at}.type"),
                    format!("duplicate `{}` plugin in one decision", p.kind()),
                ));
            }
            let conf = format!("{at}.configuration");
            match p {
                PluginConfig::SystemPrompt(s) if s.enabled && s.system_prompt.trim().is_empty() => {
                    return Err(ConfigError::invalid(
                        format!("{conf}.system_prompt"),
                        "an enabled system_prompt plugin needs a non-empty prompt",
                    ));
                }
                PluginConfig::HeaderMutation(h) => {
                    // Envoy and the wasm filter order removals and sets differently; one header
                    // in both would be ambiguous.
                    for (k, name) in h.delete.iter().enumerate() {
                        if h.add.iter().chain(&h.update).any(|v| v.name.eq_ignore_ascii_case(name)) {
                            return Err(ConfigError::invalid(
                                format!("{conf}.delete[{k}]"),
                                format!("`{name}` is both deleted and added/updated"),
                            ));
                        }
                    }
                    let named =
                        h.add
                            .iter()
                            .enumerate()
                            .map(|(k, v)| (format!("{conf}.add[{k}]"), v.name.as_str(), Some(v.value.as_str())))
                            .chain(
                                h.update.iter().enumerate().map(|(k, v)| {
                                    (format!("{conf}.update[{k}]"), v.name.as_str(), Some(v.value.as_str()))
                                }),
                            )
                            .chain(
                                h.delete
                                    .iter()
                                    .enumerate()
                                    .map(|(k, n)| (format!("{conf}.delete[{k}]"), n.as_str(), None)),
                            );
                    for (key, name, value) in named {
                        let route_header = self
                            .compat
                            .selected_model_header
                            .as_deref()
                            .is_some_and(|r| r.eq_ignore_ascii_case(name));
                        let name_key = if value.is_some() {
                            format!("{key}.name")
                        } else {
                            key.clone()
                        };
                        if route_header {
                            return Err(ConfigError::invalid(
                                name_key,
                                format!("`{name}` is compat.selected_model_header, which Envoy routes on"),
                            ));
                        }
                        if let Some(problem) = name_problem(name) {
                            return Err(ConfigError::invalid(name_key, format!("`{name}`: {problem}")));
                        }
                        if let Some(problem) = value.and_then(value_problem) {
                            return Err(ConfigError::invalid(format!("{key}.value"), problem));
                        }
                    }
                }
                PluginConfig::FastResponse(f) if !matches!(f.status, 200..=299 | 400..=599) => {
                    return Err(ConfigError::invalid(
                        format!("{conf}.status"),
                        "a fast response status is 2xx (an answer) or 4xx/5xx (a refusal)",
                    ));
                }
                PluginConfig::Cache(c) => {
                    if !(c.similarity_threshold > 0.0 && c.similarity_threshold <= 1.0) {
                        return Err(ConfigError::invalid(
                            format!("{conf}.similarity_threshold"),
                            "must be in (0, 1]",
                        ));
                    }
                    if c.ttl_seconds == Some(0) {
                        return Err(ConfigError::invalid(
                            format!("{conf}.ttl_seconds"),
                            "must be at least 1",
                        ));
                    }
                    if c.max_temperature.is_some_and(|t| t.is_nan() || t < 0.0) {
                        return Err(ConfigError::invalid(
                            format!("{conf}.max_temperature"),
                            "must be 0 or more (or null for no limit)",
                        ));
                    }
                    if c.enabled && !self.gateway.response_accounting {
                        return Err(ConfigError::invalid(
                            format!("{at}.type"),
                            "the response cache keeps answers read on the response path: it needs `gateway.response_accounting: true`",
                        ));
                    }
                }
                PluginConfig::RequestParams(r) => {
                    for (key, v) in [("max_tokens_limit", r.max_tokens_limit), ("max_n", r.max_n)] {
                        if v == Some(0) {
                            return Err(ConfigError::invalid(format!("{conf}.{key}"), "must be at least 1"));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Looks a configured model up by name.
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Looks a configured provider up by name.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The model used when no decision matches and on fail-open: `routing.default_model`,
    /// else the first enabled model.
    pub fn default_model(&self) -> &ModelConfig {
        self.routing
            .default_model
            .as_deref()
            .and_then(|d| self.model(d))
            .or_else(|| self.models.iter().find(|m| m.enabled))
            .unwrap_or(&self.models[0])
    }
}

fn check_name(name: &str, at: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            at,
            format!("`{name}` must be non-empty and use only letters, digits, `-`, `_`, `.`, `/`, `:`"),
        ))
    }
}

#[cfg(test)]
mod tests;
