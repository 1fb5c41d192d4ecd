//! Difficulty signal: the learned router. From the shared query embedding and a few cheap request
//! features it predicts how likely a model of strength `θ` is to answer correctly, with an item
//! response model (2PL IRT):
//!
//! ```text
//! P(correct | x, θ) = σ(a(x) · (θ − b(x)))      b(x) = w_b·x + c_b,  a(x) = softplus(w_a·x + c_a)
//! ```
//!
//! `b(x)` is the prompt's difficulty and `a(x)` how sharply it separates weak from strong models,
//! both linear heads on `x` = [MiniLM embedding, standardised features]; `θ` is a strength per
//! model on the same scale. `make train-router` fits the heads and the strengths of 30 models on
//! per-question outcomes (`tools/examples/train_router.rs`, weights in
//! `assets/difficulty_head.json`). The signal's score, `difficulty` in 0..1, is
//! `1 − P(correct | x, θ_ref)` for the reference strength `θ_ref` (the mean trained model): higher
//! means a middling model is more likely to fail, so the strong model is worth its price. A rule
//! matches when `difficulty ≥ threshold`. No second transformer pass: it reads the embedding the
//! other model signals share.

pub use crate::prediction::Prediction;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use futures::future::{BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};

use super::complexity::Features;
use super::{Match, Signal, SignalError};
use crate::calibration::{LiveThresholds, Threshold};
use crate::config::{DifficultyRule, ScoreLeaf, SignalKind};
use crate::models::Embedder;
use crate::request::RequestView;

/// Names of the request features, in the order the heads read them.
pub const FEATURE_NAMES: [&str; 7] = [
    "log_chars",
    "code",
    "reasoning_cues",
    "digit_share",
    "log_numbers",
    "symbol_share",
    "log_lines",
];

/// The cheap request features the heads read besides the embedding (unstandardised).
pub fn features(req: &RequestView) -> [f32; FEATURE_NAMES.len()] {
    let text = req.text.as_str();
    let chars = text.chars().count().max(1) as f32;
    let digits = text.chars().filter(char::is_ascii_digit).count() as f32;
    let symbols = text.chars().filter(|c| "=+*/^<>()[]{}\\$%|_".contains(*c)).count() as f32;
    let numbers = text
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|t| t.chars().any(|c| c.is_ascii_digit()))
        .count() as f32;
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count() as f32;
    let f = Features::of(req);
    [
        (1.0 + chars).ln(),
        f.code as f32,
        f.reasoning as f32,
        digits / chars,
        (1.0 + numbers).ln(),
        symbols / chars,
        (1.0 + lines).ln(),
    ]
}

/// A linear head: `weight · x + bias`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearHead {
    /// One weight per input (embedding dimensions, then features).
    pub weight: Vec<f32>,
    /// The intercept.
    pub bias: f32,
}

impl LinearHead {
    fn apply(&self, embedding: &[f32], features: &[f32]) -> f32 {
        let dot: f32 = self
            .weight
            .iter()
            .zip(embedding.iter().chain(features))
            .map(|(w, x)| w * x)
            .sum();
        dot + self.bias
    }
}

/// The trained router: heads, feature standardisation and the strengths it learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DifficultyHead {
    /// The encoder whose embeddings the heads read.
    pub encoder: String,
    /// Embedding width.
    pub dim: usize,
    /// Feature names ([`FEATURE_NAMES`]).
    pub features: Vec<String>,
    /// Feature means (standardisation).
    pub feature_mean: Vec<f32>,
    /// Feature standard deviations (standardisation).
    pub feature_scale: Vec<f32>,
    /// `b(x)`: the prompt's difficulty on the strength scale.
    pub difficulty: LinearHead,
    /// `softplus(·)` of this is `a(x)`, the discrimination.
    pub discrimination: LinearHead,
    /// `θ_ref`: `difficulty` = 1 − P(correct) for a model this strong.
    pub reference_strength: f32,
    /// Strengths `θ` of the models it was trained on (to set `models[].strength`).
    pub strengths: BTreeMap<String, f32>,
    /// How it was trained (data, split, metrics), for people.
    #[serde(default)]
    pub trained: serde_json::Value,
}

static BUILTIN: &str = include_str!("../../assets/difficulty_head.json");

fn softplus(z: f32) -> f32 {
    if z > 20.0 { z } else { z.exp().ln_1p() }
}

impl DifficultyHead {
    /// Parses and checks a head (`assets/difficulty_head.json` shape).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let head: DifficultyHead = serde_json::from_str(text).map_err(|e| format!("difficulty head: {e}"))?;
        let width = head.dim + FEATURE_NAMES.len();
        if head.features != FEATURE_NAMES
            || head.feature_mean.len() != FEATURE_NAMES.len()
            || head.feature_scale.len() != FEATURE_NAMES.len()
        {
            return Err(format!("difficulty head: features must be {FEATURE_NAMES:?}"));
        }
        if head.difficulty.weight.len() != width || head.discrimination.weight.len() != width {
            return Err(format!("difficulty head: heads need {width} weights"));
        }
        Ok(head)
    }

    /// The head shipped in the binary.
    pub fn builtin() -> Result<&'static DifficultyHead, String> {
        static HEAD: OnceLock<Result<DifficultyHead, String>> = OnceLock::new();
        HEAD.get_or_init(|| DifficultyHead::from_json(BUILTIN))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Embedding width the head expects.
    pub fn input_dim(&self) -> usize {
        self.dim
    }

    /// Standardises raw features as in training.
    pub fn standardise(&self, raw: &[f32]) -> Vec<f32> {
        raw.iter()
            .zip(self.feature_mean.iter().zip(&self.feature_scale))
            .map(|(x, (m, s))| (x - m) / s)
            .collect()
    }

    /// The prediction for an embedding and raw features.
    pub fn predict(&self, embedding: &[f32], raw_features: &[f32]) -> Prediction {
        let f = self.standardise(raw_features);
        Prediction {
            b: self.difficulty.apply(embedding, &f),
            a: softplus(self.discrimination.apply(embedding, &f)),
            reference: self.reference_strength,
        }
    }
}

struct Rule {
    name: Arc<str>,
    threshold: Threshold,
}

/// Evaluates difficulty rules.
pub struct DifficultySignal {
    embedder: Arc<Embedder>,
    rules: Vec<Rule>,
}

impl DifficultySignal {
    /// Builds the evaluator on the shared embedder.
    pub fn new(embedder: Arc<Embedder>, rules: &[DifficultyRule]) -> Self {
        DifficultySignal {
            embedder,
            rules: rules
                .iter()
                .map(|r| Rule {
                    name: r.name.as_str().into(),
                    threshold: Threshold::Fixed(r.threshold),
                })
                .collect(),
        }
    }

    /// Rules a calibrated decision uses get their threshold from the live calibration.
    pub fn calibrated(mut self, live: &LiveThresholds) -> Self {
        for r in &mut self.rules {
            if let Threshold::Fixed(t) = r.threshold {
                r.threshold = Threshold::of(t, &ScoreLeaf::Difficulty(r.name.to_string()), live);
            }
        }
        self
    }

    /// The router's prediction for the request (computed once, kept on the view).
    pub async fn predict(&self, req: &RequestView) -> Result<Prediction, SignalError> {
        if let Some(p) = req.difficulty.get() {
            return Ok(*p);
        }
        let head = DifficultyHead::builtin().map_err(SignalError::Failed)?;
        let query = req
            .embedding(&self.embedder)
            .await
            .map_err(|e| SignalError::Failed(e.to_string()))?;
        if query.len() != head.dim {
            return Err(SignalError::Failed(format!(
                "the difficulty head expects {}-d embeddings, the encoder gives {}",
                head.dim,
                query.len()
            )));
        }
        let p = head.predict(&query, &features(req));
        let _ = req.difficulty.set(p);
        Ok(p)
    }

    async fn run(&self, req: &RequestView) -> Result<Vec<Match>, SignalError> {
        let d = self.predict(req).await?.difficulty();
        Ok(self
            .rules
            .iter()
            .filter(|r| d >= r.threshold.observe(d))
            .map(|r| Match {
                kind: SignalKind::Difficulty,
                name: r.name.clone(),
                confidence: d.clamp(0.0, 1.0),
            })
            .collect())
    }
}

impl Signal for DifficultySignal {
    fn kind(&self) -> SignalKind {
        SignalKind::Difficulty
    }

    fn evaluate<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Result<Vec<Match>, SignalError>> {
        self.run(req).boxed()
    }

    fn explain<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Option<serde_json::Value>> {
        async move {
            let p = self.predict(req).await.ok()?;
            Some(serde_json::json!({
                "difficulty": p.difficulty(),
                "b": p.b,
                "discrimination": p.a,
                "reference_strength": p.reference,
            }))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_head_loads_and_fits_minilm() {
        let head = DifficultyHead::builtin().unwrap();
        assert_eq!(head.input_dim(), 384);
        assert!(head.strengths.len() >= 2);
        // Stronger models are predicted to succeed more often on the same prompt.
        let (weakest, strongest) = head
            .strengths
            .values()
            .fold((f32::MAX, f32::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
        let e = vec![0.0; head.dim];
        let p = head.predict(&e, &features(&RequestView::from_text("What is 2 + 2?")));
        assert!(p.a > 0.0);
        assert!(p.success(f64::from(strongest)) > p.success(f64::from(weakest)));
        assert!((0.0..=1.0).contains(&p.difficulty()));
    }

    #[test]
    fn features_see_numbers_and_symbols() {
        let plain = features(&RequestView::from_text("tell me a story about a cat"));
        let maths = features(&RequestView::from_text(
            "Compute ∫_0^1 x^2 dx and solve 3x + 4 = 19 for x; then (12.5 * 4) / 2 = ?",
        ));
        assert_eq!(plain[3], 0.0);
        assert!(maths[3] > 0.05 && maths[4] > plain[4] && maths[5] > plain[5]);
    }

    #[test]
    fn bad_heads_are_refused() {
        let mut head = DifficultyHead::builtin().unwrap().clone();
        head.difficulty.weight.pop();
        let text = serde_json::to_string(&head).unwrap();
        assert!(DifficultyHead::from_json(&text).unwrap_err().contains("weights"));
        assert!(DifficultyHead::from_json("{}").is_err());
    }
}
