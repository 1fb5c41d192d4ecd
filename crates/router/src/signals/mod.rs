//! Signals: independent evaluators that look at a request and report which of their rules
//! matched, with a confidence. The decision engine only sees [`Match`]es; how a signal is
//! computed stays here, one file per kind.

pub mod complexity;
mod context;
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

use crate::config::{Config, SignalKind};
use crate::models::Embedder;
use crate::request::RequestView;
use crate::selection::Backends;

pub use complexity::ComplexitySignal;
pub use context::ContextSignal;
pub use domain::DomainSignal;
pub use embedding::EmbeddingSignal;
pub use jailbreak::JailbreakSignal;
pub use keyword::KeywordSignal;
pub use language::LanguageSignal;
pub use latency::LatencySignal;
pub use pii::PiiSignal;

/// One matched rule of one signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Signal kind.
    pub kind: SignalKind,
    /// Rule name.
    pub name: Arc<str>,
    /// Confidence in 0..=1.
    pub confidence: f64,
}

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

/// The signals a configuration needs, built once per config load.
pub struct SignalSet {
    signals: Vec<Box<dyn Signal>>,
}

impl SignalSet {
    /// Builds evaluators for the rules that some decision references (and only those); the
    /// latency signal reads `backends`.
    pub fn build(
        config: &Config,
        referenced: &BTreeSet<(SignalKind, String)>,
        backends: &Arc<Backends>,
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
            || ComplexitySignal::needs_embedder(&complexity))
        .then(|| Arc::new(Embedder::new(config.embedding.clone())));
        if !complexity.is_empty() {
            let e = ComplexitySignal::needs_embedder(&complexity)
                .then(|| embedder.clone())
                .flatten();
            signals.push(Box::new(ComplexitySignal::new(e, &complexity)));
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
        }
        Ok(SignalSet { signals })
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

    /// Runs every signal concurrently; a failing signal is logged and counts as no match.
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
                    tracing::warn!(signal = %kind, error = %e, "signal failed; treated as no match");
                    Some(e.to_string())
                }
            };
            reports.push(SignalReport { kind, elapsed, error });
        }
        (matches, reports)
    }
}
