//! A request the wasm filter routed itself with its `LocalPlan` (ARCHITECTURE.md, "Local routing
//! in the wasm filter"), turned back into the outcome and trace [`Engine::handle`] would have
//! produced, so the sidecar publishes it like any routed request (metrics, decision log, feed,
//! feedback ids). The record comes from the filter's batched usage report: it is checked against
//! the running config like the report itself (a stale plan after a reload, or a forged report,
//! publishes nothing).

use std::sync::Arc;
use std::time::Duration;

use llmsoup_contract::outcome::{Forward, Outcome, Summary, Translation};
use llmsoup_contract::v1;
use thiserror::Error;

use super::{Engine, Handling, RouteRecord, RoutingTrace, Trace};
use crate::config::SignalKind;
use crate::signals::Match;

/// Routing time a record may claim (the filter's clock; anything longer is corrupt).
const MAX_LATENCY_US: u64 = 60_000_000;
/// Matched signals a record may list (each a configured keyword rule, so bounded by the config
/// too; this bounds the parse before that check).
const MAX_SIGNALS: usize = 1_024;

/// Why a local route record is not published.
#[derive(Debug, Error, PartialEq)]
pub enum LocalRouteError {
    /// The decision is not in the running config.
    #[error("unknown decision `{0}`")]
    UnknownDecision(String),
    /// A matched signal is not a configured keyword rule.
    #[error("unknown signal `{0}`")]
    UnknownSignal(String),
    /// Confidence outside 0–1, or a routing time no filter takes.
    #[error("confidence or routing time out of range")]
    OutOfRange,
    /// A record without a routing step claims a decision or matches.
    #[error("a passed-through request with a decision or matches")]
    Inconsistent,
}

impl Engine {
    /// The outcome and trace of a request the filter routed locally to `model` (already checked
    /// against the config by the report's own validation), from its record. The outcome is the
    /// `Forward` the engine would have answered, without the mutations the filter already made.
    pub fn local_route(
        &self,
        request_id: &str,
        model: &str,
        r: &v1::LocalRoute,
    ) -> Result<(Outcome, Trace), LocalRouteError> {
        if !(0.0..=1.0).contains(&r.confidence) || r.latency_us > MAX_LATENCY_US {
            return Err(LocalRouteError::OutOfRange);
        }
        let decision = (!r.decision.is_empty()).then(|| r.decision.clone());
        if let Some(d) = &decision
            && !self.by_decision.contains_key(d)
        {
            return Err(LocalRouteError::UnknownDecision(d.clone()));
        }
        let mut matches = Vec::new();
        for s in r.signals.split(',').filter(|s| !s.is_empty()).take(MAX_SIGNALS) {
            let name = s
                .strip_prefix("keyword:")
                .filter(|n| self.config.signals.keywords.iter().any(|k| k.name == *n))
                .ok_or_else(|| LocalRouteError::UnknownSignal(s.to_string()))?;
            matches.push(Match {
                kind: SignalKind::Keyword,
                name: Arc::from(name),
                confidence: 1.0,
            });
        }
        if !r.routed && (decision.is_some() || !matches.is_empty()) {
            return Err(LocalRouteError::Inconsistent);
        }
        let elapsed = Duration::from_micros(r.latency_us);
        let summary = Summary {
            model: model.to_string(),
            signals: r.signals.clone(),
            decision: decision.clone(),
            confidence: r.routed.then_some(r.confidence),
            ..Summary::default()
        };
        // As `handle`: only a routed request has a routing step (and a decision-log entry).
        let routing = r.routed.then(|| RoutingTrace {
            record: self.config.decision_log.as_ref().map(|log| RouteRecord {
                request_id: request_id.to_string(),
                model: model.to_string(),
                decision,
                confidence: r.confidence,
                signals: r.signals.clone(),
                complexity: None,
                difficulty: None,
                success: None,
                prompt_tokens: r.prompt_tokens,
                latency_us: r.latency_us,
                // The record keeps what the running config asks for, whatever the filter sent.
                prompt: log.include_prompt.then(|| r.prompt.clone()).flatten(),
                prompt_sha256: (!log.include_prompt && !r.prompt_sha256.is_empty()).then(|| r.prompt_sha256.clone()),
                skipped_fallbacks: Vec::new(),
            }),
            matches,
            reports: Vec::new(),
            elapsed,
            degraded: Vec::new(),
            success: None,
        });
        let outcome = Outcome::Forward(Forward {
            remove_headers: Vec::new(),
            set_headers: Vec::new(),
            append_headers: Vec::new(),
            body: None,
            translation: Translation::None,
            summary,
        });
        let trace = Trace {
            elapsed,
            handling: Handling::Forwarded,
            routing,
            cache: None,
        };
        Ok((outcome, trace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str_with_env;

    const CONFIG: &str = r#"
providers:
  - {name: p, base_url: "http://127.0.0.1:1"}
models:
  - {name: small, provider: p}
  - {name: coder, provider: p}
routing: {default_model: small}
signals:
  keywords:
    - {name: code, operator: OR, keywords: [python]}
decisions:
  - name: coding
    rules: {type: keyword, name: code}
    modelRefs: [{model: coder}]
decision_log: {path: /dev/null}
"#;

    fn engine() -> Engine {
        Engine::new(load_str_with_env(CONFIG, &|_| None).unwrap()).unwrap()
    }

    fn record() -> v1::LocalRoute {
        v1::LocalRoute {
            decision: "coding".into(),
            confidence: 1.0,
            signals: "keyword:code".into(),
            prompt_tokens: 12,
            latency_us: 40,
            prompt_sha256: "ab".repeat(32),
            prompt: None,
            routed: true,
        }
    }

    #[test]
    fn a_local_route_reads_like_the_engines_own() {
        let e = engine();
        let (outcome, trace) = e.local_route("req-1", "coder", &record()).unwrap();
        let Outcome::Forward(f) = outcome else {
            panic!("forward")
        };
        assert_eq!(f.summary.model, "coder");
        assert_eq!(f.summary.decision.as_deref(), Some("coding"));
        assert_eq!(f.summary.confidence, Some(1.0));
        assert_eq!(trace.handling, Handling::Forwarded);
        let routing = trace.routing.unwrap();
        assert_eq!(routing.matches.len(), 1);
        assert_eq!(routing.matches[0].kind, SignalKind::Keyword);
        assert_eq!(&*routing.matches[0].name, "code");
        assert_eq!(routing.elapsed, Duration::from_micros(40));
        let rec = routing.record.unwrap();
        assert_eq!((rec.request_id.as_str(), rec.model.as_str()), ("req-1", "coder"));
        assert_eq!(rec.prompt_sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert!(rec.prompt.is_none(), "the running config does not keep prompts");

        // No decision: the default model, still a routing step.
        let r = v1::LocalRoute {
            decision: String::new(),
            signals: String::new(),
            confidence: 0.0,
            ..record()
        };
        let (_, trace) = e.local_route("req-2", "small", &r).unwrap();
        assert!(trace.routing.is_some_and(|t| t.matches.is_empty()));

        // A concrete model passed through: no routing step, no confidence.
        let r = v1::LocalRoute {
            decision: String::new(),
            signals: String::new(),
            routed: false,
            ..record()
        };
        let (outcome, trace) = e.local_route("req-3", "small", &r).unwrap();
        assert!(trace.routing.is_none());
        assert!(matches!(outcome, Outcome::Forward(f) if f.summary.confidence.is_none()));
    }

    #[test]
    fn records_the_running_config_does_not_know_are_refused() {
        let e = engine();
        let cases = [
            (
                v1::LocalRoute {
                    decision: "gone".into(),
                    ..record()
                },
                LocalRouteError::UnknownDecision("gone".into()),
            ),
            (
                v1::LocalRoute {
                    signals: "keyword:code,keyword:gone".into(),
                    ..record()
                },
                LocalRouteError::UnknownSignal("keyword:gone".into()),
            ),
            (
                v1::LocalRoute {
                    signals: "domain:math".into(),
                    ..record()
                },
                LocalRouteError::UnknownSignal("domain:math".into()),
            ),
            (
                v1::LocalRoute {
                    confidence: 1.5,
                    ..record()
                },
                LocalRouteError::OutOfRange,
            ),
            (
                v1::LocalRoute {
                    latency_us: u64::MAX,
                    ..record()
                },
                LocalRouteError::OutOfRange,
            ),
            (
                v1::LocalRoute {
                    routed: false,
                    ..record()
                },
                LocalRouteError::Inconsistent,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(e.local_route("req", "coder", &r).unwrap_err(), want, "{r:?}");
        }
    }
}
