//! Domain signal: which subject a request is about.
//!
//! (a) A built-in classifier for the 14 MMLU-Pro categories: a linear softmax head on the shared
//! MiniLM embedding, trained by `make train-domain` (weights in `assets/`); below its threshold
//! the label is `other`. (b) Custom domains from a description and example prompts, matched by
//! prototype similarity. (c) A BERT sequence-classification checkpoint from a directory
//! (`classifier.checkpoint`), instead of the built-in head. A rule also matches when the
//! classifier's label is in its `mmlu_categories`.

use std::sync::{Arc, OnceLock};

use futures::future::{BoxFuture, FutureExt};
use tokio::sync::OnceCell;

use super::{Match, Signal, SignalError};
use crate::config::{ClassifierConfig, DomainRule, EmbeddingConfig, SignalKind};
use crate::models::candle_core;
use crate::models::{Embedder, Embedding, ModelError, TextClassifier, cosine};
use crate::request::RequestView;

pub use llmsoup_config::taxonomy::{CATEGORIES, category_of_mmlu_subject};

/// Default probability the built-in label needs; below it the label is `other`.
pub const DEFAULT_BUILTIN_THRESHOLD: f32 = 0.3;
/// Default similarity a custom domain's prototypes need.
pub const DEFAULT_CUSTOM_THRESHOLD: f32 = 0.35;

/// The built-in linear head (14 × dim weights and 14 biases).
pub struct DomainHead {
    weight: Vec<Vec<f32>>,
    bias: Vec<f32>,
}

static BUILTIN_HEAD: &[u8] = include_bytes!("../../assets/domain_head.safetensors");

impl DomainHead {
    /// Parses safetensors bytes with `weight` [14, dim] and `bias` [14].
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, String> {
        let t = candle_core::safetensors::load_buffer(bytes, &candle_core::Device::Cpu).map_err(|e| e.to_string())?;
        let get = |k: &str| t.get(k).ok_or_else(|| format!("domain head has no `{k}`"));
        let weight = get("weight")?.to_vec2::<f32>().map_err(|e| e.to_string())?;
        let bias = get("bias")?.to_vec1::<f32>().map_err(|e| e.to_string())?;
        if weight.len() != CATEGORIES.len() || bias.len() != CATEGORIES.len() {
            return Err(format!(
                "domain head has {} classes, expected {}",
                weight.len(),
                CATEGORIES.len()
            ));
        }
        Ok(DomainHead { weight, bias })
    }

    /// The built-in head shipped in the binary.
    pub fn builtin() -> Result<&'static DomainHead, String> {
        static HEAD: OnceLock<Result<DomainHead, String>> = OnceLock::new();
        HEAD.get_or_init(|| DomainHead::from_safetensors(BUILTIN_HEAD))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Class probabilities for an embedding.
    pub fn probabilities(&self, e: &[f32]) -> Vec<f32> {
        let logits: Vec<f32> = self
            .weight
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| cosine(w, e) + b)
            .collect();
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.into_iter().map(|x| x / sum).collect()
    }

    /// The label (`other` below `threshold`) and its probability.
    pub fn classify(&self, e: &[f32], threshold: f32) -> (Arc<str>, f32) {
        let (i, best) = self
            .probabilities(e)
            .into_iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((CATEGORIES.len() - 1, 0.0));
        // `other` is the last category.
        let i = if best < threshold { CATEGORIES.len() - 1 } else { i };
        (builtin_labels()[i].clone(), best)
    }
}

/// The built-in categories as shared strings, so a verdict allocates nothing.
fn builtin_labels() -> &'static [Arc<str>] {
    static LABELS: OnceLock<Vec<Arc<str>>> = OnceLock::new();
    LABELS.get_or_init(|| CATEGORIES.iter().map(|c| Arc::from(*c)).collect())
}

/// The label below the classifier threshold.
fn other() -> Arc<str> {
    builtin_labels()[CATEGORIES.len() - 1].clone()
}

struct Rule {
    name: Arc<str>,
    /// Built-in labels that satisfy this rule (its own name when it is a category).
    labels: Vec<String>,
    /// Description and examples, for prototype similarity.
    prototypes: Vec<String>,
    threshold: Option<f32>,
}

/// Evaluates domain rules.
pub struct DomainSignal {
    embedder: Arc<Embedder>,
    rules: Vec<Rule>,
    builtin_threshold: f32,
    needs_builtin: bool,
    /// A sequence-classification checkpoint replacing the built-in head.
    checkpoint: Option<TextClassifier>,
    bank: OnceCell<Result<Vec<Vec<Embedding>>, ModelError>>,
}

/// What the domain classifier concluded for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainVerdict {
    /// Classifier label and probability (when some rule needs it).
    pub builtin: Option<(Arc<str>, f32)>,
    /// Best custom domain and its similarity.
    pub custom: Option<(Arc<str>, f32)>,
}

impl DomainSignal {
    /// Builds the evaluator; the classifier settings pick the built-in head or a checkpoint.
    pub fn new(
        embedder: Arc<Embedder>,
        rules: &[DomainRule],
        classifier: &ClassifierConfig,
        embedding: &EmbeddingConfig,
    ) -> Self {
        let checkpoint = classifier
            .checkpoint
            .as_ref()
            .map(|dir| TextClassifier::new(dir.clone(), embedding.clone()));
        let rules: Vec<Rule> = rules
            .iter()
            .map(|r| {
                let mut labels: Vec<String> = r.mmlu_categories.iter().map(|l| l.to_lowercase()).collect();
                // A checkpoint's labels are only known once it loads: any rule name may be one.
                if checkpoint.is_some() || CATEGORIES.contains(&r.name.as_str()) {
                    labels.push(r.name.to_lowercase());
                }
                let prototypes = r
                    .description
                    .iter()
                    .chain(&r.examples)
                    .filter(|t| !t.trim().is_empty())
                    .cloned()
                    .collect();
                Rule {
                    name: r.name.as_str().into(),
                    labels,
                    prototypes,
                    threshold: r.threshold,
                }
            })
            .collect();
        let needs_builtin = rules.iter().any(|r| !r.labels.is_empty());
        DomainSignal {
            embedder,
            rules,
            builtin_threshold: classifier.threshold,
            needs_builtin,
            checkpoint,
            bank: OnceCell::new(),
        }
    }

    async fn bank(&self) -> Result<&Vec<Vec<Embedding>>, ModelError> {
        self.bank
            .get_or_init(|| async {
                let mut bank = Vec::with_capacity(self.rules.len());
                for r in &self.rules {
                    bank.push(if r.prototypes.is_empty() {
                        Vec::new()
                    } else {
                        self.embedder.embed_all(&r.prototypes).await?
                    });
                }
                Ok(bank)
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Classifies the request.
    pub async fn verdict(&self, req: &RequestView) -> Result<DomainVerdict, SignalError> {
        let fail = |e: ModelError| SignalError::Failed(e.to_string());
        let builtin = match &self.checkpoint {
            _ if !self.needs_builtin => None,
            Some(classifier) => {
                let (label, p) = classifier.classify(&req.text).await.map_err(fail)?;
                Some(if p < self.builtin_threshold {
                    (other(), p)
                } else {
                    (label, p)
                })
            }
            None => {
                let head = DomainHead::builtin().map_err(SignalError::Failed)?;
                let query = req.embedding(&self.embedder).await.map_err(fail)?;
                Some(head.classify(&query, self.builtin_threshold))
            }
        };
        if self.rules.iter().all(|r| r.prototypes.is_empty()) {
            return Ok(DomainVerdict { builtin, custom: None });
        }
        let query = req.embedding(&self.embedder).await.map_err(fail)?;
        let bank = self.bank().await.map_err(fail)?;
        let custom = self
            .rules
            .iter()
            .zip(bank)
            .filter(|(_, protos)| !protos.is_empty())
            .map(|(r, protos)| {
                let best = protos.iter().map(|p| cosine(&query, p)).fold(f32::MIN, f32::max);
                (r, best)
            })
            .filter(|(r, s)| *s >= r.threshold.unwrap_or(DEFAULT_CUSTOM_THRESHOLD))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(r, s)| (r.name.clone(), s));
        Ok(DomainVerdict { builtin, custom })
    }

    async fn run(&self, req: &RequestView) -> Result<Vec<Match>, SignalError> {
        let v = self.verdict(req).await?;
        let mut out = Vec::new();
        for r in &self.rules {
            let by_prototype = v.custom.as_ref().filter(|(n, _)| *n == r.name).map(|(_, s)| *s);
            let by_label = v
                .builtin
                .as_ref()
                .filter(|(l, _)| r.labels.iter().any(|x| x.as_str() == &**l))
                .map(|(_, p)| *p);
            if let Some(conf) = by_prototype.into_iter().chain(by_label).reduce(f32::max) {
                out.push(Match {
                    kind: SignalKind::Domain,
                    name: r.name.clone(),
                    confidence: f64::from(conf.clamp(0.0, 1.0)),
                });
            }
        }
        Ok(out)
    }
}

impl Signal for DomainSignal {
    fn kind(&self) -> SignalKind {
        SignalKind::Domain
    }

    fn evaluate<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Result<Vec<Match>, SignalError>> {
        self.run(req).boxed()
    }

    fn explain<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Option<serde_json::Value>> {
        async move {
            let v = self.verdict(req).await.ok()?;
            Some(serde_json::json!({
                "label": v.builtin.as_ref().map(|(l, _)| l.to_string()),
                "probability": v.builtin.as_ref().map(|(_, p)| *p),
                "classifier": if self.checkpoint.is_some() { "checkpoint" } else { "built-in" },
                "custom": v.custom.as_ref().map(|(n, _)| n.to_string()),
                "similarity": v.custom.as_ref().map(|(_, s)| *s),
            }))
        }
        .boxed()
    }
}
