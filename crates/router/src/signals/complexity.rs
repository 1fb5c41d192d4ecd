//! Complexity signal: a 0–1 "how hard is this request" score, from (i) similarity to hard and easy
//! exemplar prompts on the shared embedding and (ii) request features — prompt length,
//! conversation depth, system prompt, JSON mode, tools, code, reasoning cues. Rules report
//! `<name>:easy`, `<name>:medium` or `<name>:hard`; the score goes to `x-llmsoup-complexity`.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use regex::Regex;
use tokio::sync::OnceCell;

use super::{Match, Signal, SignalError};
use crate::calibration::{LiveThresholds, Threshold};
use crate::config::{ComplexityRule, ScoreLeaf, SignalKind};
use crate::models::{Embedder, Embedding, ModelError, cosine};
use crate::request::RequestView;

/// Phrases that ask for multi-step reasoning.
const REASONING_CUES: &[&str] = &[
    "step by step",
    "prove",
    "proof",
    "derive",
    "trade-off",
    "tradeoff",
    "trade off",
    "analyze",
    "analyse",
    "explain why",
    "compare",
    "optimize",
    "optimise",
    "design a",
    "architecture",
    "edge cases",
    "complexity of",
    "rigorous",
];

/// How request features weigh in the feature score.
const W_LENGTH: f64 = 0.2;
const W_DEPTH: f64 = 0.1;
const W_SYSTEM: f64 = 0.05;
const W_JSON: f64 = 0.05;
const W_TOOLS: f64 = 0.1;
const W_CODE: f64 = 0.2;
const W_REASONING: f64 = 0.3;
/// Weight of the exemplar similarity when exemplars are configured.
const W_SEMANTIC: f64 = 0.6;

/// Request features, each in 0..1.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Features {
    /// Prompt length: 0 at ≤ 64 tokens, 1 at ≥ 4K (log scale).
    pub length: f64,
    /// Conversation depth: 0 for one message, 1 at ≥ 11.
    pub depth: f64,
    /// System prompt size: 1 at ≥ 2,000 characters.
    pub system: f64,
    /// JSON output requested.
    pub json: f64,
    /// Tools offered.
    pub tools: f64,
    /// Code in the prompt.
    pub code: f64,
    /// Reasoning cues: 1 at ≥ 2 cues.
    pub reasoning: f64,
}

fn code_pattern() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?m)```|^\s*(def|class|fn|func|function|import|#include|public|private|let|const|var)\s+\w|[;{}]\s*$|=>|->")
            .expect("valid regex")
    })
}

impl Features {
    /// Extracts the features of a request.
    pub fn of(req: &RequestView) -> Features {
        let tokens = req.prompt_tokens.max(1) as f64;
        let lower = req.text.to_lowercase();
        let cues = REASONING_CUES.iter().filter(|c| lower.contains(*c)).count();
        Features {
            length: ((tokens / 64.0).ln() / 64f64.ln()).clamp(0.0, 1.0),
            depth: ((req.messages.max(1) - 1) as f64 / 10.0).min(1.0),
            system: (req.system_chars as f64 / 2000.0).min(1.0),
            json: f64::from(u8::from(req.json_mode)),
            tools: f64::from(u8::from(req.tools)),
            code: f64::from(u8::from(code_pattern().is_match(&req.text))),
            reasoning: (cues as f64 / 2.0).min(1.0),
        }
    }

    /// The weighted feature score in 0..1.
    pub fn score(&self) -> f64 {
        let sum = W_LENGTH * self.length
            + W_DEPTH * self.depth
            + W_SYSTEM * self.system
            + W_JSON * self.json
            + W_TOOLS * self.tools
            + W_CODE * self.code
            + W_REASONING * self.reasoning;
        sum / (W_LENGTH + W_DEPTH + W_SYSTEM + W_JSON + W_TOOLS + W_CODE + W_REASONING)
    }
}

/// Maps the gap between the best hard and best easy exemplar similarity to 0..1.
pub fn semantic_score(max_hard: f32, max_easy: f32) -> f64 {
    (0.5 + f64::from(max_hard - max_easy) * 2.5).clamp(0.0, 1.0)
}

/// The score from the exemplar similarity (when the rule has exemplars) and the feature score.
pub fn blend(semantic: Option<f64>, features: f64) -> f64 {
    match semantic {
        Some(s) => W_SEMANTIC * s + (1.0 - W_SEMANTIC) * features,
        None => features,
    }
}

/// Per rule: embeddings of its hard and of its easy exemplars.
type ExemplarBank = Vec<(Vec<Embedding>, Vec<Embedding>)>;

struct Rule {
    name: String,
    hard: Vec<String>,
    easy: Vec<String>,
    easy_below: f64,
    hard_from: Threshold,
    labels: [Arc<str>; 3],
}

/// Evaluates complexity rules.
pub struct ComplexitySignal {
    embedder: Option<Arc<Embedder>>,
    rules: Vec<Rule>,
    bank: OnceCell<Result<ExemplarBank, ModelError>>,
}

impl ComplexitySignal {
    /// Builds the evaluator; `embedder` is needed only when some rule has exemplars.
    pub fn new(embedder: Option<Arc<Embedder>>, rules: &[ComplexityRule]) -> Self {
        ComplexitySignal {
            embedder,
            rules: rules
                .iter()
                .map(|r| Rule {
                    name: r.name.clone(),
                    hard: r.hard.candidates.clone(),
                    easy: r.easy.candidates.clone(),
                    easy_below: r.easy_below,
                    hard_from: Threshold::Fixed(r.hard_from),
                    labels: ["easy", "medium", "hard"].map(|l| Arc::from(format!("{}:{l}", r.name))),
                })
                .collect(),
            bank: OnceCell::new(),
        }
    }

    /// Rules a calibrated decision uses (`<rule>:hard`) get `hard_from` from the live
    /// calibration.
    pub fn calibrated(mut self, live: &LiveThresholds) -> Self {
        for r in &mut self.rules {
            if let Threshold::Fixed(t) = r.hard_from {
                r.hard_from = Threshold::of(t, &ScoreLeaf::ComplexityHard(r.name.clone()), live);
            }
        }
        self
    }

    /// Whether any rule uses exemplars (and so the embedding model).
    pub fn needs_embedder(rules: &[ComplexityRule]) -> bool {
        rules
            .iter()
            .any(|r| !r.hard.candidates.is_empty() || !r.easy.candidates.is_empty())
    }

    async fn bank(&self, embedder: &Embedder) -> Result<&ExemplarBank, ModelError> {
        self.bank
            .get_or_init(|| async {
                let mut out = Vec::with_capacity(self.rules.len());
                for r in &self.rules {
                    out.push((embedder.embed_all(&r.hard).await?, embedder.embed_all(&r.easy).await?));
                }
                Ok(out)
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Each rule's score (0–1) for the request.
    pub async fn scores(&self, req: &RequestView) -> Result<Vec<f64>, ModelError> {
        let features = Features::of(req).score();
        let semantic: Vec<Option<f64>> = match &self.embedder {
            Some(embedder) => {
                let query = req.embedding(embedder).await?;
                let bank = self.bank(embedder).await?;
                bank.iter()
                    .map(|(hard, easy)| {
                        if hard.is_empty() && easy.is_empty() {
                            return None;
                        }
                        let best = |v: &Vec<Embedding>| v.iter().map(|c| cosine(&query, c)).fold(0.0f32, f32::max);
                        Some(semantic_score(best(hard), best(easy)))
                    })
                    .collect()
            }
            None => vec![None; self.rules.len()],
        };
        Ok(semantic.into_iter().map(|s| blend(s, features)).collect())
    }

    async fn run(&self, req: &RequestView) -> Result<Vec<Match>, SignalError> {
        let scores = self.scores(req).await.map_err(|e| SignalError::Failed(e.to_string()))?;
        if let Some(first) = scores.first() {
            let _ = req.complexity.set(*first);
        }
        Ok(self
            .rules
            .iter()
            .zip(scores)
            .map(|(r, s)| {
                let (i, confidence) = if r.hard_from.clears(s, req.tiebreak()) {
                    (2, s)
                } else if s < r.easy_below {
                    (0, 1.0 - s)
                } else {
                    (1, 1.0)
                };
                Match {
                    kind: SignalKind::Complexity,
                    name: r.labels[i].clone(),
                    confidence,
                }
            })
            .collect())
    }
}

impl Signal for ComplexitySignal {
    fn kind(&self) -> SignalKind {
        SignalKind::Complexity
    }

    fn evaluate<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Result<Vec<Match>, SignalError>> {
        self.run(req).boxed()
    }

    fn explain<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Option<serde_json::Value>> {
        async move {
            let scores = self.scores(req).await.ok()?;
            let rules: serde_json::Map<String, serde_json::Value> = self
                .rules
                .iter()
                .zip(scores)
                .map(|(r, s)| (r.name.clone(), serde_json::json!(s)))
                .collect();
            Some(serde_json::json!({"features": Features::of(req), "scores": rules}))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_request;

    fn view(body: serde_json::Value) -> RequestView {
        parse_request(body.to_string().as_bytes(), false).unwrap().view
    }

    #[test]
    fn features_rise_with_hard_requests() {
        let easy = view(serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi there"}]}));
        let f = Features::of(&easy);
        assert_eq!(f.score(), 0.0);
        let hard = view(serde_json::json!({
            "model": "auto",
            "response_format": {"type": "json_object"},
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [
                {"role": "system", "content": "You are a senior engineer. ".repeat(80)},
                {"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": format!("Prove step by step that this is correct and analyze the trade-offs:\n```\nfn main() {{ let x = 1; }}\n```\n{}", "context ".repeat(2000))},
            ]
        }));
        let f = Features::of(&hard);
        assert_eq!((f.json, f.tools, f.code, f.reasoning), (1.0, 1.0, 1.0, 1.0));
        assert!(f.length > 0.9 && f.system > 0.9 && f.depth > 0.2, "{f:?}");
        assert!(f.score() > 0.85, "{}", f.score());
    }

    #[test]
    fn semantic_gap_mapping() {
        assert_eq!(semantic_score(0.5, 0.5), 0.5);
        assert_eq!(semantic_score(0.9, 0.1), 1.0);
        assert_eq!(semantic_score(0.1, 0.5), 0.0);
    }

    #[tokio::test]
    async fn features_only_rules_label_requests() {
        let rule = ComplexityRule {
            name: "task".into(),
            hard: Default::default(),
            easy: Default::default(),
            easy_below: 0.2,
            hard_from: 0.5,
            description: None,
        };
        let s = ComplexitySignal::new(None, &[rule]);
        let m = s.run(&RequestView::from_text("hello")).await.unwrap();
        assert_eq!(&*m[0].name, "task:easy");
        let req = RequestView::from_text("Prove step by step and analyze the trade-offs of this:\n```\nfn f() {}\n```");
        let m = s.run(&req).await.unwrap();
        assert_eq!(&*m[0].name, "task:hard");
        assert!(req.complexity.get().is_some_and(|c| *c >= 0.5));
    }
}
