//! Embedding signal (vLLM Semantic Router `embedding_rules`): cosine similarity between the
//! request's embedding and each rule's candidate phrases, aggregated by `max`, `mean` or `any`.
//! Candidate embeddings are computed once per config load, on first use.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use tokio::sync::OnceCell;

use super::{Match, Signal, SignalError};
use crate::config::{Aggregation, EmbeddingRule, SignalKind};
use crate::models::{Embedder, Embedding, ModelError, cosine};
use crate::request::RequestView;

struct Rule {
    name: Arc<str>,
    candidates: Vec<String>,
    threshold: f32,
    aggregation: Aggregation,
}

/// Evaluates embedding rules.
pub struct EmbeddingSignal {
    embedder: Arc<Embedder>,
    rules: Vec<Rule>,
    top_k: usize,
    bank: OnceCell<Result<Vec<Vec<Embedding>>, ModelError>>,
}

/// A rule's score and whether it matches.
pub fn score(query: &[f32], candidates: &[Embedding], aggregation: Aggregation, threshold: f32) -> (f32, bool) {
    let sims = candidates.iter().map(|c| cosine(query, c));
    match aggregation {
        Aggregation::Max | Aggregation::Any => {
            let best = sims.fold(f32::MIN, f32::max);
            (best, best >= threshold)
        }
        Aggregation::Mean => {
            let mean = sims.sum::<f32>() / candidates.len().max(1) as f32;
            (mean, mean >= threshold)
        }
    }
}

impl EmbeddingSignal {
    /// Builds the evaluator; nothing is embedded until the first request.
    pub fn new(embedder: Arc<Embedder>, rules: &[EmbeddingRule], top_k: usize) -> Self {
        EmbeddingSignal {
            embedder,
            rules: rules
                .iter()
                .map(|r| Rule {
                    name: r.name.as_str().into(),
                    candidates: r.candidates.iter().filter(|c| !c.trim().is_empty()).cloned().collect(),
                    threshold: r.threshold,
                    aggregation: r.aggregation,
                })
                .collect(),
            top_k: top_k.max(1),
            bank: OnceCell::new(),
        }
    }

    async fn bank(&self) -> Result<&Vec<Vec<Embedding>>, ModelError> {
        self.bank
            .get_or_init(|| async {
                let mut bank = Vec::with_capacity(self.rules.len());
                for r in &self.rules {
                    bank.push(self.embedder.embed_all(&r.candidates).await?);
                }
                Ok(bank)
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    async fn run(&self, req: &RequestView) -> Result<Vec<Match>, SignalError> {
        let fail = |e: ModelError| SignalError::Failed(e.to_string());
        let query = req.embedding(&self.embedder).await.map_err(fail)?;
        let bank = self.bank().await.map_err(fail)?;
        let mut scored: Vec<(f32, &Rule)> = self
            .rules
            .iter()
            .zip(bank)
            .filter_map(|(rule, cands)| {
                let (s, hit) = score(&query, cands, rule.aggregation, rule.threshold);
                hit.then_some((s, rule))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(scored
            .into_iter()
            .take(self.top_k)
            .map(|(s, rule)| Match {
                kind: SignalKind::Embedding,
                name: rule.name.clone(),
                confidence: f64::from(s.clamp(0.0, 1.0)),
            })
            .collect())
    }

    /// Every rule's score, matched or not (for `llmsoup route` and `classify`).
    pub async fn scores(&self, req: &RequestView) -> Result<Vec<(Arc<str>, f32)>, ModelError> {
        let query = req.embedding(&self.embedder).await?;
        let bank = self.bank().await?;
        Ok(self
            .rules
            .iter()
            .zip(bank)
            .map(|(r, c)| (r.name.clone(), score(&query, c, r.aggregation, r.threshold).0))
            .collect())
    }
}

impl Signal for EmbeddingSignal {
    fn kind(&self) -> SignalKind {
        SignalKind::Embedding
    }

    fn evaluate<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Result<Vec<Match>, SignalError>> {
        self.run(req).boxed()
    }

    fn explain<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Option<serde_json::Value>> {
        async move {
            let scores = self.scores(req).await.ok()?;
            Some(serde_json::Value::Object(
                scores
                    .into_iter()
                    .map(|(n, s)| (n.to_string(), serde_json::json!(s)))
                    .collect(),
            ))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(v: &[f32]) -> Embedding {
        v.to_vec().into()
    }

    #[test]
    fn aggregations() {
        let q = [1.0, 0.0];
        let c = [e(&[1.0, 0.0]), e(&[0.0, 1.0])];
        assert_eq!(score(&q, &c, Aggregation::Max, 0.9), (1.0, true));
        assert_eq!(score(&q, &c, Aggregation::Any, 0.9), (1.0, true));
        assert_eq!(score(&q, &c, Aggregation::Mean, 0.9), (0.5, false));
        assert_eq!(score(&q, &c, Aggregation::Mean, 0.5), (0.5, true));
    }
}
