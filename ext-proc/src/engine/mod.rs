//! The routing engine: `parse → signals → decision → selection → mutations`, one function both
//! gRPC front ends (ext_proc and Router) call. It knows nothing about gRPC or Envoy messages:
//! it takes HTTP-level facts and returns HTTP-level mutations or a local reply.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::config::{Config, ModelConfig, SignalKind};
use llmsoup_proto::auth::{self, AuthError};

use crate::decision::DecisionEngine;
use crate::decision_log::DecisionLog;
use crate::metrics::{self, kv};
use crate::protocol::{ApiError, RequestView, parse_request};
use crate::selection;
use crate::signals::{Match, SignalReport, SignalSet};

/// Header Envoy routes on: the chosen model's name.
pub const MODEL_HEADER: &str = "x-llmsoup-model";
/// Response header: the decision that picked the model.
pub const DECISION_HEADER: &str = "x-llmsoup-decision";
/// Response header: matched signals, `kind:name` comma-separated.
pub const SIGNALS_HEADER: &str = "x-llmsoup-signals";
/// Response header: the decision's confidence.
pub const CONFIDENCE_HEADER: &str = "x-llmsoup-confidence";
/// Response header: the request's complexity score (when a complexity signal ran).
pub const COMPLEXITY_HEADER: &str = "x-llmsoup-complexity";
/// Prefix reserved for llmsoup; clients may not send these headers.
pub const RESERVED_PREFIX: &str = "x-llmsoup-";

/// The result of routing a prompt (what `llmsoup route` prints).
#[derive(Debug, Clone)]
pub struct Routed {
    /// The chosen model's name.
    pub model: String,
    /// The winning decision, or `None` when the default model was used.
    pub decision: Option<String>,
    /// The winning decision's confidence.
    pub confidence: f64,
    /// Every signal match.
    pub matches: Vec<Match>,
    /// Per-signal timing and errors.
    pub reports: Vec<SignalReport>,
    /// Time spent routing.
    pub elapsed: Duration,
}

impl Routed {
    /// Matched signals in compact `kind:name` form for the response header.
    pub fn signals_header(&self) -> String {
        let mut out = String::new();
        for m in &self.matches {
            if !out.is_empty() {
                out.push(',');
            }
            let _ = write!(out, "{}:{}", m.kind, m.name);
        }
        out
    }
}

/// What the front end reports back to the client in `x-llmsoup-*` response headers.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The model the request went to.
    pub model: String,
    /// The decision, when one matched.
    pub decision: Option<String>,
    /// Matched signals (compact form).
    pub signals: String,
    /// Decision confidence, when routed.
    pub confidence: Option<f64>,
    /// Complexity score, when a complexity signal ran.
    pub complexity: Option<f64>,
    /// Whether the query embedding came from the cache (`None` when no model signal ran).
    pub embedding_cached: Option<bool>,
}

impl Summary {
    /// Headers to add to the client response.
    pub fn response_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![(MODEL_HEADER, self.model.clone())];
        if let Some(d) = &self.decision {
            h.push((DECISION_HEADER, d.clone()));
        }
        if !self.signals.is_empty() {
            h.push((SIGNALS_HEADER, self.signals.clone()));
        }
        if let Some(c) = self.confidence {
            h.push((CONFIDENCE_HEADER, format!("{c:.3}")));
        }
        if let Some(c) = self.complexity {
            h.push((COMPLEXITY_HEADER, format!("{c:.3}")));
        }
        h
    }
}

/// Forward the request upstream with these changes.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Headers to set (overwriting).
    pub set_headers: Vec<(&'static str, String)>,
    /// Replacement body, when it changed (the front end must fix `content-length`).
    pub body: Option<Vec<u8>>,
    /// What to tell the client.
    pub summary: Summary,
}

/// Answer the client directly.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(&'static str, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply {
            status: e.status,
            headers: vec![("content-type", "application/json".into())],
            body: e.to_json(),
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Forward upstream, mutated.
    Forward(Forward),
    /// Reply locally.
    Reply(Reply),
}

/// One loaded configuration, ready to route.
pub struct Engine {
    config: Config,
    signals: SignalSet,
    decisions: DecisionEngine,
    token_hashes: Vec<[u8; 32]>,
    /// Precomputed `GET /v1/models` body.
    models_body: Vec<u8>,
    /// "Saved" compares against this model's prices: the most expensive one a decision uses.
    baseline: Option<String>,
    decision_log: Option<DecisionLog>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Engine {
    /// Builds the engine from a validated config.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let decisions = DecisionEngine::from_config(&config);
        let referenced: BTreeSet<(SignalKind, String)> = decisions.referenced_signals();
        let signals = SignalSet::build(&config, &referenced).map_err(anyhow::Error::msg)?;
        let token_hashes = config
            .auth
            .tokens
            .iter()
            .map(|t| {
                let mut h = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut h)?;
                Ok(h)
            })
            .collect::<Result<Vec<_>, hex::FromHexError>>()?;
        let models_body = models_list(&config);
        let baseline = config
            .decisions
            .iter()
            .flat_map(|d| &d.model_refs)
            .filter_map(|r| config.model(&r.model))
            .chain(std::iter::once(config.default_model()))
            .filter_map(|m| Some((m, m.pricing.as_ref()?)))
            .max_by(|a, b| {
                let price = |p: &crate::config::Pricing| p.prompt_per_1m + p.completion_per_1m;
                price(a.1).total_cmp(&price(b.1))
            })
            .map(|(m, _)| m.name.clone());
        let decision_log = match &config.decision_log {
            Some(d) => Some(DecisionLog::open(d.path.clone().into(), d.include_prompt)?),
            None => None,
        };
        Ok(Engine {
            config,
            signals,
            decisions,
            token_hashes,
            models_body,
            baseline,
            decision_log,
        })
    }

    /// The configuration this engine was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Prices of the baseline model "saved" is measured against.
    pub fn baseline_pricing(&self) -> Option<&crate::config::Pricing> {
        self.baseline
            .as_deref()
            .and_then(|b| self.config.model(b)?.pricing.as_ref())
    }

    /// Whether client tokens are required.
    pub fn auth_enabled(&self) -> bool {
        !self.token_hashes.is_empty()
    }

    /// Checks an `Authorization` (or `x-api-key`) header value against the stored token hashes.
    pub fn authenticate(&self, authorization: Option<&[u8]>, api_key: Option<&[u8]>) -> Result<(), ApiError> {
        if self.token_hashes.is_empty() {
            return Ok(());
        }
        let (code, message) = match auth::check(&self.token_hashes, authorization, api_key) {
            Ok(_) => return Ok(()),
            Err(AuthError::Missing) => (
                "missing_api_key",
                "You didn't provide an API key. Send it as `Authorization: Bearer <token>`.",
            ),
            Err(AuthError::Wrong) => ("invalid_api_key", "Incorrect API key provided."),
        };
        metrics::get().rejections.add(1, &[kv("code", code)]);
        Err(ApiError::unauthorized(message))
    }

    /// Evaluates signals and decisions on a prompt and selects the model.
    pub async fn route(&self, view: &RequestView) -> Result<Routed, ApiError> {
        let start = Instant::now();
        let (matches, reports) = self.signals.evaluate(view).await;
        let m = metrics::get();
        for r in &reports {
            let signal = kv("signal", r.kind.as_str());
            m.signal_duration
                .record(r.elapsed.as_secs_f64(), std::slice::from_ref(&signal));
            if r.error.is_some() {
                m.signal_errors.add(1, &[signal]);
            }
        }
        for x in &matches {
            m.signal_matches
                .add(1, &[kv("signal", x.kind.as_str()), kv("rule", x.name.to_string())]);
        }
        let winner = self.decisions.decide(&matches);
        let (model, decision, confidence) = match winner {
            Some(w) => match selection::select(&self.config, &w.decision.model_refs, &w.decision.algorithm) {
                Some(m) => (m, Some(w.decision.name.to_string()), w.confidence),
                None => {
                    tracing::warn!(decision = %w.decision.name, "no enabled model among the decision's modelRefs; using the default model");
                    (self.config.default_model(), None, 0.0)
                }
            },
            None => (self.config.default_model(), None, 0.0),
        };
        if !model.enabled {
            return Err(ApiError::unavailable("No enabled model can serve this request."));
        }
        Ok(Routed {
            model: model.name.clone(),
            decision,
            confidence,
            matches,
            reports,
            elapsed: start.elapsed(),
        })
    }

    /// The scores behind each signal's verdict (for `llmsoup route` / `classify`).
    pub async fn explain(&self, view: &RequestView) -> serde_json::Map<String, serde_json::Value> {
        self.signals.explain(view).await
    }

    /// Handles a request that has no body (or whose body is not routed).
    pub fn on_headers_only(&self, method: &str, path: &str) -> Option<Outcome> {
        let path = path.split('?').next().unwrap_or(path);
        if method.eq_ignore_ascii_case("GET") && path == "/v1/models" {
            return Some(Outcome::Reply(Reply {
                status: 200,
                headers: vec![("content-type", "application/json".into())],
                body: self.models_body.clone(),
            }));
        }
        None
    }

    /// Handles a complete request body: the routing gate, then routing for auto models.
    pub async fn on_body(&self, body: &[u8]) -> Outcome {
        self.on_request(body, "").await
    }

    /// [`Engine::on_body`] for a request with an id (`x-request-id`), for the decision log.
    pub async fn on_request(&self, body: &[u8], request_id: &str) -> Outcome {
        let start = Instant::now();
        let outcome = self.on_request_inner(body, request_id).await;
        crate::feed::on_route(request_id, &outcome, start.elapsed());
        outcome
    }

    async fn on_request_inner(&self, body: &[u8], request_id: &str) -> Outcome {
        let m = metrics::get();
        match self.on_body_inner(body, request_id).await {
            Ok(f) => {
                crate::selection::backends::started(&f.summary.model);
                let outcome = if f.summary.confidence.is_some() {
                    "routed"
                } else {
                    "passthrough"
                };
                m.requests.add(
                    1,
                    &[
                        kv("model", f.summary.model.clone()),
                        kv("decision", f.summary.decision.clone().unwrap_or_else(|| "none".into())),
                        kv("outcome", outcome),
                    ],
                );
                Outcome::Forward(f)
            }
            Err(e) => {
                m.rejections.add(1, &[kv("code", e.code.unwrap_or("error"))]);
                Outcome::Reply(e.into())
            }
        }
    }

    /// Records a quality score (0–1) for a routed request in the decision log.
    pub fn feedback(&self, request_id: &str, score: f64) -> Result<(), ApiError> {
        if !(0.0..=1.0).contains(&score) || request_id.is_empty() {
            return Err(ApiError::bad_request(
                "Feedback needs a `request_id` and a `score` between 0 and 1.",
                None,
                "invalid_feedback",
            ));
        }
        let Some(log) = &self.decision_log else {
            return Err(ApiError::bad_request(
                "Feedback is recorded in the decision log; configure `decision_log` first.",
                None,
                "decision_log_disabled",
            ));
        };
        log.write(
            &serde_json::json!({"event": "feedback", "ts": unix_now(), "request_id": request_id, "score": score}),
        );
        Ok(())
    }

    async fn on_body_inner(&self, body: &[u8], request_id: &str) -> Result<Forward, ApiError> {
        let parsed = parse_request(body, self.config.routing.include_history)?;
        if !self.config.routing.auto_models.iter().any(|a| a == &parsed.model) {
            // Concrete model: pass through untouched, only tell Envoy where it goes.
            let model = self
                .config
                .model(&parsed.model)
                .filter(|m| m.enabled)
                .ok_or_else(|| ApiError::model_not_found(&parsed.model))?;
            let body =
                (model.provider_model_id() != model.name).then(|| parsed.with_model(body, model.provider_model_id()));
            return Ok(Forward {
                set_headers: vec![(MODEL_HEADER, model.name.clone())],
                body,
                summary: Summary {
                    model: model.name.clone(),
                    ..Summary::default()
                },
            });
        }
        let routed = self.route(&parsed.view).await?;
        metrics::get()
            .routing_duration
            .record(routed.elapsed.as_secs_f64(), &[]);
        let model: &ModelConfig = self
            .config
            .model(&routed.model)
            .ok_or_else(|| ApiError::unavailable("The selected model is not configured."))?;
        tracing::debug!(
            model = %routed.model,
            decision = routed.decision.as_deref().unwrap_or("-"),
            signals = %routed.signals_header(),
            prompt_tokens = parsed.view.prompt_tokens,
            stream = parsed.stream,
            latency_us = routed.elapsed.as_micros() as u64,
            "routed"
        );
        if let Some(log) = &self.decision_log {
            let mut entry = serde_json::json!({
                "event": "route",
                "ts": unix_now(),
                "request_id": request_id,
                "model": routed.model,
                "decision": routed.decision,
                "confidence": routed.confidence,
                "signals": routed.signals_header(),
                "complexity": parsed.view.complexity.get(),
                "prompt_tokens": parsed.view.prompt_tokens,
                "latency_us": routed.elapsed.as_micros() as u64,
            });
            if log.include_prompt {
                entry["prompt"] = serde_json::json!(parsed.view.text);
            } else {
                entry["prompt_sha256"] = serde_json::json!(hex::encode(auth::hash(parsed.view.text.as_bytes())));
            }
            log.write(&entry);
        }
        Ok(Forward {
            set_headers: vec![(MODEL_HEADER, model.name.clone())],
            body: Some(parsed.with_model(body, model.provider_model_id())),
            summary: Summary {
                model: model.name.clone(),
                signals: routed.signals_header(),
                decision: routed.decision,
                confidence: Some(routed.confidence),
                complexity: parsed.view.complexity.get().copied(),
                embedding_cached: parsed.view.embedding_cached(),
            },
        })
    }
}

fn models_list(config: &Config) -> Vec<u8> {
    let mut data: Vec<serde_json::Value> = config
        .routing
        .auto_models
        .iter()
        .map(|n| serde_json::json!({"id": n, "object": "model", "created": 0, "owned_by": "llmsoup"}))
        .collect();
    data.extend(
        config
            .models
            .iter()
            .filter(|m| m.enabled)
            .map(|m| serde_json::json!({"id": m.name, "object": "model", "created": 0, "owned_by": m.provider})),
    );
    serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).expect("serialises")
}

/// SHA-256 hex of a client token, as stored in `auth.tokens[].sha256`.
pub fn hash_token(token: &str) -> String {
    hex::encode(auth::hash(token.trim().as_bytes()))
}

#[cfg(test)]
mod tests;
