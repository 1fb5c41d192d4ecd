//! Difficulty signal: the learned router. From the shared query embedding and a few cheap request
//! features it predicts how likely a cheap and a strong reference model are to answer the prompt
//! correctly, with one logistic head each:
//!
//! ```text
//! P_weak(x) = σ(w_weak·x + c_weak)      P_strong(x) = σ(w_strong·x + c_strong)
//! difficulty(x) = P_strong(x) · (1 − P_weak(x))
//! ```
//!
//! `x` = [MiniLM embedding of the prompt, standardised features clipped to ±`feature_clip`
//! standard deviations: a prompt unlike the training set — no lettered options, one line, a
//! whole document — moves a feature by at most that much, never by the dozens of deviations that
//! would swamp the embedding]. `difficulty` (0..1) is the
//! probability that the cheap model fails the prompt while the strong one answers it: what sending
//! it to the strong model buys. `make train-router` fits the heads on per-question outcomes
//! (`tools/examples/train_router.rs`, weights in `assets/difficulty_head.json`; the reference pair
//! is Mixtral-8x7B-Instruct / GPT-4o, RouteLLM's kind of pair). A rule matches when `difficulty ≥
//! threshold`. No second transformer pass: it reads the embedding the other model signals share.

pub use crate::prediction::Prediction;
use std::sync::{Arc, OnceLock};

use futures::future::{BoxFuture, FutureExt};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{Match, Signal, SignalError};
use crate::calibration::{LiveThresholds, Threshold};
use crate::config::{DifficultyRule, ScoreLeaf, SignalKind};
use crate::models::Embedder;
use crate::request::RequestView;

/// Names of the request features, in the order the heads read them.
pub const FEATURE_NAMES: [&str; 8] = [
    "log_chars",
    "digit_share",
    "log_numbers",
    "symbol_share",
    "log_lines",
    "log_options",
    "numeric_options",
    "calculation_cue",
];

/// The text of a lettered answer option line (`A. …`, `(B) …`, `C) …`), if the line is one.
fn option_text(line: &str) -> Option<&str> {
    let rest = line.trim_start();
    let rest = rest.strip_prefix('(').unwrap_or(rest);
    let mut chars = rest.chars();
    let (letter, mark) = (chars.next()?, chars.next()?);
    (('A'..='J').contains(&letter) && (mark == '.' || mark == ')')).then_some(chars.as_str())
}

/// Asks for a computed quantity ("calculate", "how much", "what is the value of", …).
fn calculation_cue(text: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)\b(calculate|compute|find|determine|evaluate|estimate|how (much|many|long|far|fast)|what is the (value|magnitude|minimum|maximum))\b",
        )
        .expect("valid pattern")
    })
    .is_match(text)
}

/// The cheap request features the heads read besides the embedding (unstandardised): length,
/// how numeric and formula-like the text is, and for multiple-choice prompts how many lettered
/// options it has and how many of them are numbers (a computation rather than a recall).
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
    let options: Vec<&str> = text.lines().filter_map(option_text).collect();
    let numeric_options = if options.is_empty() {
        0.0
    } else {
        options.iter().filter(|o| o.chars().any(|c| c.is_ascii_digit())).count() as f32 / options.len() as f32
    };
    [
        chars.ln_1p(),
        digits / chars,
        numbers.ln_1p(),
        symbols / chars,
        lines.ln_1p(),
        (options.len() as f32).ln_1p(),
        numeric_options,
        f32::from(u8::from(calculation_cue(text))),
    ]
}

/// A logistic head: `σ(weight · x + bias)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearHead {
    /// One weight per input (embedding dimensions, then features).
    pub weight: Vec<f32>,
    /// The intercept.
    pub bias: f32,
}

impl LinearHead {
    fn probability(&self, x: &[f32]) -> f32 {
        let z: f32 = self.weight.iter().zip(x).map(|(w, x)| w * x).sum::<f32>() + self.bias;
        1.0 / (1.0 + (-z).exp())
    }
}

/// The pair the heads predict: the models whose outcomes they were trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferencePair {
    /// The cheap model (Mixtral-8x7B-Instruct).
    pub weak: String,
    /// The strong model (GPT-4o).
    pub strong: String,
}

/// Standardises raw features as the heads were trained to read them: `(x − mean) / scale`,
/// clipped to `±clip` (the training program and the sidecar share this function).
pub fn standardise(raw: &[f32], mean: &[f32], scale: &[f32], clip: f32) -> impl Iterator<Item = f32> {
    raw.iter()
        .zip(mean.iter().zip(scale))
        .map(move |(x, (m, s))| ((x - m) / s).clamp(-clip, clip))
}

/// The trained router: the two heads and the feature standardisation.
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
    /// Standardised features are clipped to `±feature_clip`.
    pub feature_clip: f32,
    /// The models the heads predict.
    pub reference: ReferencePair,
    /// P(the weak model answers correctly).
    pub weak: LinearHead,
    /// P(the strong model answers correctly).
    pub strong: LinearHead,
    /// How it was trained (data, split, metrics), for people.
    #[serde(default)]
    pub trained: serde_json::Value,
}

static BUILTIN: &str = include_str!("../../assets/difficulty_head.json");

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
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !positive(head.feature_clip) || !head.feature_scale.iter().all(|s| positive(*s)) {
            return Err("difficulty head: feature_clip and feature_scale must be positive".into());
        }
        if head.weak.weight.len() != width || head.strong.weight.len() != width {
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

    /// The prediction for an embedding and raw features.
    pub fn predict(&self, embedding: &[f32], raw_features: &[f32]) -> Prediction {
        let mut x = Vec::with_capacity(embedding.len() + raw_features.len());
        x.extend_from_slice(embedding);
        x.extend(standardise(
            raw_features,
            &self.feature_mean,
            &self.feature_scale,
            self.feature_clip,
        ));
        Prediction {
            weak: self.weak.probability(&x),
            strong: self.strong.probability(&x),
        }
    }
}

/// The router's prediction for the request on the shared embedding (computed once, kept on the
/// view): what difficulty rules and `success_target` selection read.
pub async fn predict(embedder: &Embedder, req: &RequestView) -> Result<Prediction, SignalError> {
    if let Some(p) = req.difficulty.get() {
        return Ok(*p);
    }
    let head = DifficultyHead::builtin().map_err(SignalError::Failed)?;
    let query = req
        .embedding(embedder)
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
        predict(&self.embedder, req).await
    }

    async fn run(&self, req: &RequestView) -> Result<Vec<Match>, SignalError> {
        let d = self.predict(req).await?.difficulty();
        Ok(self
            .rules
            .iter()
            .filter(|r| r.threshold.clears(d, req.tiebreak()))
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
                "weak_success": p.weak,
                "strong_success": p.strong,
            }))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::testing::{model_dir, settings};

    /// The committed head on the real encoder: a multi-step quantitative problem with numeric
    /// options (the kind the cheap model fails and the strong one solves) scores well above
    /// questions any model answers, and the cheap model is predicted to do better on the easy ones.
    #[tokio::test]
    async fn the_committed_head_ranks_a_hard_problem_above_easy_questions() {
        let Some(dir) = model_dir() else { return };
        let s = DifficultySignal::new(Arc::new(Embedder::new(settings(&dir))), &[]);
        let predict = |text: &'static str| {
            let s = &s;
            async move { s.predict(&RequestView::from_text(text)).await.unwrap() }
        };
        let hard = predict(
            "A 2.50 mol sample of an ideal gas at 298 K expands reversibly and isothermally from \
             10.0 L to 35.0 L, then is heated at constant volume to 350 K. Calculate the total \
             entropy change of the gas, in J/K, taking C_v,m = 12.47 J/(K mol).\n\
             A. 26.0\nB. 30.9\nC. 31.1\nD. 35.7\nE. 21.4\nF. 28.3\nG. 33.2\nH. 24.8\nI. 38.6\nJ. 29.5",
        )
        .await;
        for easy in [
            "What is the capital of France?",
            "Which planet is closest to the Sun?\nA. Venus\nB. Mercury\nC. Mars\nD. Jupiter",
            "Translate 'good morning' into Spanish.",
        ] {
            let p = predict(easy).await;
            assert!(
                hard.difficulty() > p.difficulty() + 0.05,
                "hard {hard:?} ({:.3}) vs easy {p:?} ({:.3}): {easy}",
                hard.difficulty(),
                p.difficulty()
            );
            assert!(p.weak > hard.weak, "weak success: easy {p:?} vs hard {hard:?}: {easy}");
        }
    }

    #[test]
    fn standardised_features_are_clipped() {
        let z: Vec<f32> = standardise(&[10.0, -10.0, 1.5], &[1.0, 1.0, 1.0], &[0.5, 0.5, 0.5], 3.0).collect();
        assert_eq!(z, [3.0, -3.0, 1.0]);
        // A prompt unlike the training set (one line, no lettered options) stays in range.
        let head = DifficultyHead::builtin().unwrap();
        let raw = features(&RequestView::from_text("hi"));
        for z in standardise(&raw, &head.feature_mean, &head.feature_scale, head.feature_clip) {
            assert!(z.abs() <= head.feature_clip, "{z}");
        }
    }

    #[test]
    fn builtin_head_loads_and_fits_minilm() {
        let head = DifficultyHead::builtin().unwrap();
        assert_eq!(head.input_dim(), 384);
        let e = vec![0.0; head.dim];
        let p = head.predict(&e, &features(&RequestView::from_text("What is 2 + 2?")));
        assert!((0.0..=1.0).contains(&p.weak) && (0.0..=1.0).contains(&p.strong));
        assert!((0.0..=1.0).contains(&p.difficulty()));
    }

    #[test]
    fn features_see_numbers_symbols_and_options() {
        let plain = features(&RequestView::from_text("tell me a story about a cat"));
        let maths = features(&RequestView::from_text(
            "Compute ∫_0^1 x^2 dx and solve 3x + 4 = 19 for x; then (12.5 * 4) / 2 = ?",
        ));
        assert_eq!(plain[1], 0.0);
        assert!(maths[1] > 0.05 && maths[2] > plain[2] && maths[3] > plain[3]);
        assert_eq!((plain[7], maths[7]), (0.0, 1.0));
        let mcq = features(&RequestView::from_text(
            "Find the speed of the car.\nA. 12 m/s\nB. 15 m/s\n(C) not enough data\nD) 20 m/s",
        ));
        assert!((mcq[5] - 5f32.ln()).abs() < 1e-6, "{mcq:?}");
        assert!((mcq[6] - 0.75).abs() < 1e-6, "{mcq:?}");
        assert_eq!((plain[5], plain[6]), (0.0, 0.0));
    }

    #[test]
    fn bad_heads_are_refused() {
        let mut head = DifficultyHead::builtin().unwrap().clone();
        head.weak.weight.pop();
        let text = serde_json::to_string(&head).unwrap();
        assert!(DifficultyHead::from_json(&text).unwrap_err().contains("weights"));
        assert!(DifficultyHead::from_json("{}").is_err());
    }
}
