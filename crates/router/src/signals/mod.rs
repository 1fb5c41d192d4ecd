//! Signals: independent evaluators that look at a request and report which of their rules
//! matched, with a confidence. The decision engine only sees [`Match`]es; how a signal is
//! computed stays here, one file per kind.

pub mod complexity;
mod context;
pub mod difficulty;
pub mod domain;
mod embedding;
pub mod jailbreak;
mod keyword;
mod language;
mod latency;
pub mod pii;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use thiserror::Error;

use crate::calibration::LiveThresholds;
use crate::config::{Config, SignalKind};
use crate::models::Embedder;
use crate::request::RequestView;
use crate::selection::Backends;

pub use complexity::ComplexitySignal;
pub use context::ContextSignal;
pub use difficulty::{DifficultyHead, DifficultySignal};
pub use domain::{DomainHead, DomainSignal};
pub use embedding::EmbeddingSignal;
pub use jailbreak::{JailbreakHead, JailbreakSignal};
pub use keyword::KeywordSignal;
pub use language::LanguageSignal;
pub use latency::LatencySignal;
pub use pii::PiiSignal;

/// One matched rule of one signal (the shared evaluator's match over the configured kinds).
pub type Match = llmsoup_rules::Match<SignalKind>;

/// Why a signal could not be evaluated; the request continues as "no match".
#[derive(Debug, Error)]
pub enum SignalError {
    /// The evaluator failed, with why.
    #[error("{0}")]
    Failed(String),
}

/// A pluggable evaluator for one kind of signal.
pub trait Signal: Send + Sync {
    /// The kind this evaluator serves.
    fn kind(&self) -> SignalKind;
    /// Evaluates every rule it holds against the request; returns the matches.
    fn evaluate<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Result<Vec<Match>, SignalError>>;

    /// Scores behind the verdict (labels, similarities), for `llmsoup route` and `classify`.
    fn explain<'a>(&'a self, _req: &'a RequestView) -> BoxFuture<'a, Option<serde_json::Value>> {
        futures::future::ready(None).boxed()
    }
}

/// What one signal reported for one request, for headers, logs and `llmsoup route`.
#[derive(Debug, Clone)]
pub struct SignalReport {
    /// Signal kind.
    pub kind: SignalKind,
    /// Time spent evaluating it.
    pub elapsed: Duration,
    /// Error text when it failed (its rules then count as not matched).
    pub error: Option<String>,
}

/// Remembers which causes were already logged, so a persistent failure (a missing model) logs
/// once per cause instead of once per request. Bounded: past `CAP` distinct causes (error texts
/// that vary), further ones are not logged (metrics still count every occurrence).
#[derive(Debug, Default)]
pub struct LogOnce {
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl LogOnce {
    const CAP: usize = 256;

    /// True the first time `cause` is seen.
    pub fn first(&self, cause: String) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= Self::CAP || seen.contains(&cause) {
            return false;
        }
        seen.insert(cause)
    }
}

/// The signals a configuration needs, built once per config load.
pub struct SignalSet {
    signals: Vec<Box<dyn Signal>>,
    logged: LogOnce,
    /// The shared embedder, when a model signal or a semantic cache needs it.
    embedder: Option<Arc<Embedder>>,
}

impl SignalSet {
    /// Builds evaluators for the rules that some decision references (and only those); the
    /// latency signal reads `backends`.
    pub fn build(
        config: &Config,
        referenced: &BTreeSet<(SignalKind, String)>,
        backends: &Arc<Backends>,
        live: &LiveThresholds,
    ) -> Result<Self, String> {
        let mut signals: Vec<Box<dyn Signal>> = Vec::new();
        let wanted = |kind: SignalKind, name: &str| referenced.contains(&(kind, name.to_string()));
        // The rules of one kind that some decision references (only those are evaluated).
        fn pick<R: Clone>(rules: &[R], keep: impl Fn(&R) -> bool) -> Vec<R> {
            rules.iter().filter(|r| keep(r)).cloned().collect()
        }
        let s = &config.signals;
        let keywords = pick(&s.keywords, |r| wanted(SignalKind::Keyword, &r.name));
        let context = pick(&s.context, |r| wanted(SignalKind::Context, &r.name));
        let language = pick(&s.language, |r| wanted(SignalKind::Language, &r.name));
        let latency = pick(&s.latency, |r| wanted(SignalKind::Latency, &r.name));
        let pii = pick(&s.pii, |r| wanted(SignalKind::Pii, &r.name));
        let jailbreak = pick(&s.jailbreak, |r| wanted(SignalKind::Jailbreak, &r.name));
        let difficulty = pick(&s.difficulty, |r| wanted(SignalKind::Difficulty, &r.name));
        let embeddings = pick(&s.embeddings, |r| wanted(SignalKind::Embedding, &r.name));
        let domains = pick(&s.domains, |r| wanted(SignalKind::Domain, &r.name));
        let complexity = pick(&s.complexity, |r| {
            ["easy", "medium", "hard"]
                .iter()
                .any(|l| wanted(SignalKind::Complexity, &format!("{}:{l}", r.name)))
        });
        if !keywords.is_empty() {
            signals.push(Box::new(KeywordSignal::new(&keywords)?));
        }
        if !context.is_empty() {
            signals.push(Box::new(ContextSignal::new(&context)));
        }
        if !language.is_empty() {
            signals.push(Box::new(LanguageSignal::new(&language)));
        }
        if !latency.is_empty() {
            signals.push(Box::new(LatencySignal::new(&latency, backends.clone())));
        }
        if !pii.is_empty() {
            signals.push(Box::new(PiiSignal::new(&pii)));
        }
        // Every model-based signal shares one embedder, so a request needs one forward pass.
        let embedder = (!embeddings.is_empty()
            || !domains.is_empty()
            || !jailbreak.is_empty()
            || !difficulty.is_empty()
            || ComplexitySignal::needs_embedder(&complexity)
            || semantic_cache(config)
            || success_target(config))
        .then(|| Arc::new(Embedder::new(config.embedding.clone())));
        if !complexity.is_empty() {
            let e = ComplexitySignal::needs_embedder(&complexity)
                .then(|| embedder.clone())
                .flatten();
            signals.push(Box::new(ComplexitySignal::new(e, &complexity).calibrated(live)));
        }
        if let Some(embedder) = &embedder {
            if !embeddings.is_empty() {
                signals.push(Box::new(EmbeddingSignal::new(
                    embedder.clone(),
                    &embeddings,
                    config.embedding.top_k,
                )));
            }
            if !domains.is_empty() {
                signals.push(Box::new(DomainSignal::new(
                    embedder.clone(),
                    &domains,
                    &config.classifier,
                    &config.embedding,
                )));
            }
            if !jailbreak.is_empty() {
                signals.push(Box::new(JailbreakSignal::new(embedder.clone(), &jailbreak)));
            }
            if !difficulty.is_empty() {
                signals.push(Box::new(
                    DifficultySignal::new(embedder.clone(), &difficulty).calibrated(live),
                ));
            }
        }
        Ok(SignalSet {
            signals,
            logged: LogOnce::default(),
            embedder,
        })
    }

    /// The shared embedder (the one model signals use), when any part of the config needs it.
    pub fn embedder(&self) -> Option<&Arc<Embedder>> {
        self.embedder.as_ref()
    }

    /// Every signal's explanation (`kind` → details), for debugging configs.
    pub async fn explain(&self, req: &RequestView) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for s in &self.signals {
            if let Some(v) = s.explain(req).await {
                out.insert(s.kind().as_str().to_string(), v);
            }
        }
        out
    }

    /// Kinds that will run.
    pub fn kinds(&self) -> impl Iterator<Item = SignalKind> + '_ {
        self.signals.iter().map(|s| s.kind())
    }

    /// Runs every signal concurrently; a failing signal is logged (once per cause) and its rules
    /// count as not matched (the decision engine sees which kinds failed in the reports).
    pub async fn evaluate(&self, req: &RequestView) -> (Vec<Match>, Vec<SignalReport>) {
        let runs = self.signals.iter().map(|s| async move {
            let start = Instant::now();
            let out = s.evaluate(req).await;
            (s.kind(), start.elapsed(), out)
        });
        let results = futures::future::join_all(runs).await;
        let mut matches = Vec::new();
        let mut reports = Vec::with_capacity(results.len());
        for (kind, elapsed, out) in results {
            let error = match out {
                Ok(m) => {
                    matches.extend(m);
                    None
                }
                Err(e) => {
                    let error = e.to_string();
                    if self.logged.first(format!("{kind}\0{error}")) {
                        tracing::error!(
                            signal = %kind,
                            error = %error,
                            "signal failed; its rules count as not matched and decisions that reference it follow their `on_signal_error` (logged once per cause)"
                        );
                    }
                    Some(error)
                }
            };
            reports.push(SignalReport { kind, elapsed, error });
        }
        (matches, reports)
    }
}

/// A model-based signal whose model cannot load, found by cheap checks when a config is loaded
/// (files present, `config.json` readable, built-in classifier heads fit the encoder), without
/// loading the model itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProblem {
    /// The signal kind that cannot run.
    pub signal: SignalKind,
    /// Its rules that decisions reference.
    pub rules: Vec<String>,
    /// What is wrong.
    pub message: String,
    /// Referencing decisions whose `on_signal_error` is `block`: for them this is an error.
    pub blocking: Vec<String>,
    /// Other referencing decisions (`skip`): a warning.
    pub skipping: Vec<String>,
}

impl ModelProblem {
    /// An error (a blocking decision depends on it) rather than a warning.
    pub fn is_error(&self) -> bool {
        !self.blocking.is_empty()
    }
}

impl std::fmt::Display for ModelProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} signal ({}) cannot run: {}",
            self.signal,
            self.rules.join(", "),
            self.message
        )?;
        if !self.blocking.is_empty() {
            write!(
                f,
                "; decisions that block (on_signal_error: block) will answer with their blocking plugin: {}",
                self.blocking.join(", ")
            )?;
        }
        if !self.skipping.is_empty() {
            write!(
                f,
                "; decisions that skip it (on_signal_error: skip) will not match: {}",
                self.skipping.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Checks a model directory the way the loader reads it; `Ok(Some(width))` with the encoder's
/// `hidden_size` when known, `Ok(None)` for a Hugging Face id (fetched on first use, not checked
/// here).
fn check_model_dir(model: &str, what: &str) -> Result<Option<usize>, String> {
    let dir = std::path::Path::new(model);
    if !dir.is_dir() {
        let hub_id = !model.starts_with(['.', '/', '~']) && model.split('/').count() == 2;
        if hub_id {
            return Ok(None);
        }
        return Err(format!("{what} directory `{model}` does not exist (run `make models`)"));
    }
    let missing: Vec<&str> = crate::models::MODEL_FILES
        .into_iter()
        .filter(|f| !std::fs::metadata(dir.join(f)).is_ok_and(|m| m.is_file() && m.len() > 0))
        .collect();
    if !missing.is_empty() {
        return Err(format!("{what} directory `{model}` lacks {}", missing.join(", ")));
    }
    let config: serde_json::Value = std::fs::read(dir.join("config.json"))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{what} `{model}/config.json`: {e}"))?;
    Ok(config
        .get("hidden_size")
        .and_then(serde_json::Value::as_u64)
        .map(|h| h as usize))
}

/// Model signals of `config` that decisions reference and that cannot load.
pub fn model_problems(config: &Config) -> Vec<ModelProblem> {
    fn leaves(rule: &crate::config::RuleNode, out: &mut BTreeSet<(SignalKind, String)>) {
        if let (Some(k), Some(n)) = (rule.kind, &rule.name) {
            out.insert((k, n.clone()));
        }
        rule.conditions.iter().for_each(|c| leaves(c, out));
    }
    let per_decision: Vec<(&crate::config::DecisionConfig, BTreeSet<(SignalKind, String)>)> = config
        .decisions
        .iter()
        .map(|d| {
            let mut l = BTreeSet::new();
            if let Some(r) = &d.rules {
                leaves(r, &mut l);
            }
            (d, l)
        })
        .collect();
    let referenced: BTreeSet<(SignalKind, String)> = per_decision.iter().flat_map(|(_, l)| l.clone()).collect();
    let rules_of = |kind: SignalKind, keep: &dyn Fn(&str) -> bool| -> Vec<String> {
        referenced
            .iter()
            .filter(|(k, n)| *k == kind && keep(n))
            .map(|(_, n)| n.clone())
            .collect()
    };
    let s = &config.signals;
    let needs_encoder = |n: &str| -> bool {
        let base = n.rsplit_once(':').map_or(n, |(b, _)| b);
        s.complexity
            .iter()
            .any(|r| r.name == base && ComplexitySignal::needs_embedder(std::slice::from_ref(r)))
    };
    let checkpoint = config.classifier.checkpoint.as_deref();
    // Domain rules use the encoder for the built-in head and for description/example prototypes;
    // with a checkpoint and no prototypes they need only the checkpoint.
    let domain_needs_encoder = |n: &str| {
        checkpoint.is_none()
            || s.domains
                .iter()
                .any(|r| r.name == n && (r.description.is_some() || !r.examples.is_empty()))
    };
    let encoder = check_model_dir(&config.embedding.model, "embedding.model");
    let mut found: Vec<(SignalKind, Vec<String>, String)> = Vec::new();
    let mut encoder_problem = |kind: SignalKind, rules: Vec<String>, extra: Option<String>| {
        if rules.is_empty() {
            return;
        }
        if let Err(e) = &encoder {
            found.push((kind, rules, e.clone()));
        } else if let Some(e) = extra {
            found.push((kind, rules, e));
        }
    };
    encoder_problem(SignalKind::Embedding, rules_of(SignalKind::Embedding, &|_| true), None);
    encoder_problem(
        SignalKind::Complexity,
        rules_of(SignalKind::Complexity, &needs_encoder),
        None,
    );
    let jailbreak_head = match (JailbreakHead::builtin(), &encoder) {
        (Err(e), _) => Some(e),
        (Ok(h), Ok(Some(width))) if h.input_dim() != *width => Some(format!(
            "the built-in jailbreak head expects {}-d embeddings, `{}` gives {width}",
            h.input_dim(),
            config.embedding.model
        )),
        _ => None,
    };
    encoder_problem(
        SignalKind::Jailbreak,
        rules_of(SignalKind::Jailbreak, &|_| true),
        jailbreak_head,
    );
    let difficulty_head = match (DifficultyHead::builtin(), &encoder) {
        (Err(e), _) => Some(e),
        (Ok(h), Ok(Some(width))) if h.input_dim() != *width => Some(format!(
            "the built-in difficulty head expects {}-d embeddings, `{}` gives {width}",
            h.input_dim(),
            config.embedding.model
        )),
        _ => None,
    };
    encoder_problem(
        SignalKind::Difficulty,
        rules_of(SignalKind::Difficulty, &|_| true),
        difficulty_head,
    );
    let domain_head = if checkpoint.is_none() {
        DomainHead::builtin().err()
    } else {
        None
    };
    encoder_problem(
        SignalKind::Domain,
        rules_of(SignalKind::Domain, &domain_needs_encoder),
        domain_head,
    );
    if let Some(dir) = checkpoint
        && let Err(e) = check_model_dir(dir, "classifier.checkpoint")
    {
        let rules = rules_of(SignalKind::Domain, &|_| true);
        if !rules.is_empty() && !found.iter().any(|(k, _, _)| *k == SignalKind::Domain) {
            found.push((SignalKind::Domain, rules, e));
        }
    }
    found
        .into_iter()
        .map(|(signal, rules, message)| {
            let (mut blocking, mut skipping) = (Vec::new(), Vec::new());
            for (d, l) in &per_decision {
                if l.iter().any(|(k, n)| *k == signal && rules.contains(n)) {
                    match d.on_signal_error() {
                        crate::config::OnSignalError::Block => blocking.push(d.name.clone()),
                        crate::config::OnSignalError::Skip => skipping.push(d.name.clone()),
                    }
                }
            }
            ModelProblem {
                signal,
                rules,
                message,
                blocking,
                skipping,
            }
        })
        .collect()
}

/// Whether a decision caches semantically (it embeds the last user turn with the shared embedder).
/// Whether a decision selects with `success_target` (which reads the learned router's prediction
/// on the shared embedding, with or without a difficulty rule).
pub(crate) fn success_target(config: &Config) -> bool {
    config
        .decisions
        .iter()
        .any(|d| d.algorithm.kind == crate::config::AlgorithmKind::SuccessTarget)
}

fn semantic_cache(config: &Config) -> bool {
    config
        .decisions
        .iter()
        .flat_map(|d| &d.plugins)
        .any(|p| matches!(p, crate::config::PluginConfig::Cache(c) if c.enabled && c.semantic))
}
