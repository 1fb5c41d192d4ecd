//! Latency signal: matches when a watched model's observed time to first token (a percentile) or
//! median time per output token is over its target — so a decision can send traffic to a
//! secondary provider while the primary is slow. Observations come from real responses
//! (the shared [`Backends`]); an unobserved model is not over target.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};

use super::{Match, Signal, SignalError};
use crate::config::{LatencyRule, SignalKind};
use crate::request::RequestView;
use crate::selection::Backends;

/// Evaluates latency rules.
pub struct LatencySignal {
    rules: Vec<(Arc<str>, LatencyRule)>,
    backends: Arc<Backends>,
}

impl LatencySignal {
    /// Builds the evaluator.
    pub fn new(rules: &[LatencyRule], backends: Arc<Backends>) -> Self {
        LatencySignal {
            rules: rules.iter().map(|r| (r.name.as_str().into(), r.clone())).collect(),
            backends,
        }
    }

    /// Rules with a model over target.
    pub fn matches(&self) -> Vec<Match> {
        self.rules
            .iter()
            .filter(|(_, r)| {
                r.models.iter().any(|m| {
                    let (ttft, tpot) = self.backends.latency(m, r.ttft_percentile);
                    let over = |v: Option<f64>, t: Option<f64>| matches!((v, t), (Some(v), Some(t)) if v > t);
                    over(ttft, r.ttft_target_ms) || over(tpot, r.tpot_target_ms)
                })
            })
            .map(|(name, _)| Match {
                kind: SignalKind::Latency,
                name: name.clone(),
                confidence: 1.0,
            })
            .collect()
    }
}

impl Signal for LatencySignal {
    fn kind(&self) -> SignalKind {
        SignalKind::Latency
    }

    fn evaluate<'a>(&'a self, _req: &'a RequestView) -> BoxFuture<'a, Result<Vec<Match>, SignalError>> {
        futures::future::ready(Ok(self.matches())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_when_a_watched_model_is_over_target() {
        let rule = LatencyRule {
            name: "primary_slow".into(),
            models: vec!["lat-primary".into()],
            ttft_percentile: 50,
            ttft_target_ms: Some(100.0),
            tpot_target_ms: None,
            description: None,
        };
        let backends = Arc::new(Backends::default());
        let s = LatencySignal::new(&[rule], backends.clone());
        assert!(s.matches().is_empty(), "unobserved is not slow");
        backends.record("lat-primary", true, Some(40.0), None);
        assert!(s.matches().is_empty());
        backends.record("lat-primary", true, Some(400.0), None);
        backends.record("lat-primary", true, Some(400.0), None);
        assert_eq!(&*s.matches()[0].name, "primary_slow");
    }
}
