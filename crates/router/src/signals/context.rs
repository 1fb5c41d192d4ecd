//! Context signal: the estimated prompt token count falls in a configured range.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};

use super::{Match, Signal, SignalError};
use crate::config::{ContextRule, SignalKind};
use crate::request::RequestView;

/// Evaluates context-length rules.
pub struct ContextSignal {
    rules: Vec<(Arc<str>, u64, u64)>,
}

impl ContextSignal {
    /// Builds the evaluator.
    pub fn new(rules: &[ContextRule]) -> Self {
        ContextSignal {
            rules: rules
                .iter()
                .map(|r| {
                    (
                        r.name.as_str().into(),
                        r.min_tokens.map_or(0, |t| t.0),
                        r.max_tokens.map_or(u64::MAX, |t| t.0),
                    )
                })
                .collect(),
        }
    }

    /// Rules whose range holds `tokens`.
    pub fn matches(&self, tokens: u64) -> Vec<Match> {
        self.rules
            .iter()
            .filter(|(_, lo, hi)| (*lo..=*hi).contains(&tokens))
            .map(|(name, _, _)| Match {
                kind: SignalKind::Context,
                name: name.clone(),
                confidence: 1.0,
            })
            .collect()
    }
}

impl Signal for ContextSignal {
    fn kind(&self) -> SignalKind {
        SignalKind::Context
    }

    fn evaluate<'a>(&'a self, req: &'a RequestView) -> BoxFuture<'a, Result<Vec<Match>, SignalError>> {
        futures::future::ready(Ok(self.matches(req.prompt_tokens))).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenCount;

    #[test]
    fn ranges_are_inclusive_and_open_ended() {
        let s = ContextSignal::new(&[
            ContextRule {
                name: "short".into(),
                min_tokens: None,
                max_tokens: Some(TokenCount(1000)),
                description: None,
            },
            ContextRule {
                name: "long".into(),
                min_tokens: Some(TokenCount(1000)),
                max_tokens: None,
                description: None,
            },
        ]);
        let n = |t| s.matches(t).into_iter().map(|m| m.name.to_string()).collect::<Vec<_>>();
        assert_eq!(n(10), ["short"]);
        assert_eq!(n(1000), ["short", "long"]);
        assert_eq!(n(50_000), ["long"]);
    }
}
