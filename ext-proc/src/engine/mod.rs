//! The routing engine: `parse → signals → decision → selection → mutations`, one function both
//! gRPC front ends (ext_proc and Router) call. It knows nothing about gRPC or Envoy messages:
//! it takes HTTP-level facts and returns HTTP-level mutations or a local reply.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::config::{Config, ModelConfig, OnSignalError, SignalKind};
use llmsoup_proto::auth::{self, AuthError};

use crate::decision::DecisionEngine;
use crate::decision_log::DecisionLog;
use crate::metrics::{self, kv};
use crate::plugins::{self, Api, DecisionPlugins, Reasoning};
use crate::protocol::{ApiError, RequestView, parse_request};
use crate::selection;
use crate::signals::{LogOnce, Match, SignalReport, SignalSet};

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

/// The endpoints llmsoup routes (POST only). Envoy's route table answers other methods on them
/// with the same 405 when the sidecar is not asked (`envoy::render`).
pub const ROUTED_PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/messages",
    "/v1/embeddings",
    "/v1/responses",
];

/// vLLM Semantic Router's response headers, sent when `compat.vsr_headers` is on.
pub mod vsr {
    /// The selected model.
    pub const SELECTED_MODEL: &str = "x-vsr-selected-model";
    /// The winning decision.
    pub const SELECTED_DECISION: &str = "x-vsr-selected-decision";
    /// The winning decision's confidence.
    pub const SELECTED_CONFIDENCE: &str = "x-vsr-selected-confidence";
    /// `on` / `off`: the reasoning toggle written into the request (absent when none was).
    pub const SELECTED_REASONING: &str = "x-vsr-selected-reasoning";
    /// `true` / `false`: a `system_prompt` plugin put its prompt into the request.
    pub const INJECTED_SYSTEM_PROMPT: &str = "x-vsr-injected-system-prompt";
    /// `upstream`, `fast_response` or `blocked`.
    pub const RESPONSE_PATH: &str = "x-vsr-response-path";

    /// `x-vsr-matched-*` header for a signal kind.
    pub fn matched(kind: crate::config::SignalKind) -> &'static str {
        use crate::config::SignalKind as K;
        match kind {
            K::Keyword => "x-vsr-matched-keywords",
            K::Embedding => "x-vsr-matched-embeddings",
            K::Domain => "x-vsr-matched-domains",
            K::Language => "x-vsr-matched-language",
            K::Context => "x-vsr-matched-context",
            K::Complexity => "x-vsr-matched-complexity",
            K::Latency => "x-vsr-matched-latency",
            K::Pii => "x-vsr-matched-pii",
            K::Jailbreak => "x-vsr-matched-jailbreak",
        }
    }
}

/// A request header name: llmsoup's own are static, configured ones are owned.
pub type HeaderName = Cow<'static, str>;

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
    /// Compatibility headers (`x-vsr-*`), already rendered.
    pub compat: Vec<(&'static str, String)>,
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
        h.extend(self.compat.iter().cloned());
        h
    }
}

/// Forward the request upstream with these changes.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Headers to remove (applied first).
    pub remove_headers: Vec<HeaderName>,
    /// Headers to set (overwriting).
    pub set_headers: Vec<(HeaderName, String)>,
    /// Headers to append (kept alongside existing values).
    pub append_headers: Vec<(HeaderName, String)>,
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
    /// Per decision name: its index in `config.decisions` and its compiled plugins.
    by_decision: HashMap<String, (usize, DecisionPlugins)>,
    /// `compat.selected_model_header`, lower-cased for the wire.
    route_header: Option<String>,
    /// Signal-error verdicts already logged.
    logged: LogOnce,
    /// Model signals whose model cannot load, found at build time (cheap file checks).
    model_problems: Vec<crate::signals::ModelProblem>,
}

/// Where a request's answer came from (bounded metric label and `x-vsr-response-path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponsePath {
    /// The upstream model answers.
    Upstream,
    /// A `fast_response` plugin answered as the assistant.
    FastResponse,
    /// A `fast_response` plugin refused the request with an error status.
    Blocked,
}

impl ResponsePath {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponsePath::Upstream => "upstream",
            ResponsePath::FastResponse => "fast_response",
            ResponsePath::Blocked => "blocked",
        }
    }
}

/// What handling a request body produced, with what metrics need.
enum Handled {
    Forward(Forward),
    Local {
        reply: Reply,
        model: String,
        decision: String,
        path: ResponsePath,
    },
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
        let model_problems = crate::signals::model_problems(&config);
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
        let by_decision = config
            .decisions
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), (i, DecisionPlugins::new(&d.plugins))))
            .collect();
        let route_header = config
            .compat
            .selected_model_header
            .as_ref()
            .map(|h| h.to_ascii_lowercase());
        Ok(Engine {
            config,
            signals,
            decisions,
            token_hashes,
            models_body,
            baseline,
            decision_log,
            by_decision,
            route_header,
            logged: LogOnce::default(),
            model_problems,
        })
    }

    /// Model signals whose model cannot load (missing or incomplete directory, a classifier head
    /// that does not fit), each with the decisions that reference it and whether that is an
    /// error (a blocking decision depends on it) or a warning.
    pub fn model_problems(&self) -> &[crate::signals::ModelProblem] {
        &self.model_problems
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
        let e = match auth::check(&self.token_hashes, authorization, api_key) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let code = match e {
            AuthError::Missing => "missing_api_key",
            AuthError::Wrong => "invalid_api_key",
        };
        metrics::get().rejections.add(1, &[kv("code", code)]);
        Err(ApiError::unauthorized(e.message()))
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
        let mut failed: Vec<SignalKind> = reports.iter().filter(|r| r.error.is_some()).map(|r| r.kind).collect();
        failed.dedup();
        let (winner, affected) = self.decisions.decide_degraded(&matches, &failed);
        for v in &affected {
            for s in &v.signals {
                m.signal_error_decisions.add(
                    1,
                    &[
                        kv("signal", s.as_str()),
                        kv("decision", v.decision.to_string()),
                        kv("action", v.action.as_str()),
                    ],
                );
            }
            if self
                .logged
                .first(format!("{}\0{:?}\0{}", v.decision, v.signals, v.action.as_str()))
            {
                let kinds: Vec<&str> = v.signals.iter().map(|k| k.as_str()).collect();
                match v.action {
                    OnSignalError::Block => tracing::error!(
                        decision = %v.decision,
                        signals = ?kinds,
                        "a signal this decision needs failed; on_signal_error=block treats it as matched (logged once)"
                    ),
                    OnSignalError::Skip => tracing::warn!(
                        decision = %v.decision,
                        signals = ?kinds,
                        "a signal this decision needs failed; on_signal_error=skip treats it as not matched (logged once)"
                    ),
                }
            }
        }
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

    /// The gate on method and path, before any body: everything that is not a POST with a body
    /// is answered here and never reaches a provider. `GET /v1/models` gets the model list; a
    /// routed endpoint asked with another method gets a 405; a POST without a body a 400; any other
    /// bodyless or non-POST request a 404. `None`: a POST whose body must be routed.
    pub fn on_headers(&self, method: &str, path: &str, has_body: bool) -> Option<Outcome> {
        let path = path.split('?').next().unwrap_or(path);
        let error = match (method, path) {
            ("POST", _) if has_body => return None,
            ("GET", "/v1/models") => {
                return Some(Outcome::Reply(Reply {
                    status: 200,
                    headers: vec![("content-type", "application/json".into())],
                    body: self.models_body.clone(),
                }));
            }
            ("POST", _) => ApiError::empty_body(),
            (_, "/v1/models") => ApiError::method_not_allowed("GET"),
            (_, p) if ROUTED_PATHS.contains(&p) => ApiError::method_not_allowed("POST"),
            _ => ApiError::not_found(),
        };
        metrics::get()
            .rejections
            .add(1, &[kv("code", error.code.unwrap_or("error"))]);
        let allow = (error.status == 405).then(|| if path == "/v1/models" { "GET" } else { "POST" });
        let mut reply = Reply::from(error);
        if let Some(allow) = allow {
            reply.headers.push(("allow", allow.into()));
        }
        Some(Outcome::Reply(reply))
    }

    /// Handles a complete request body: the routing gate, then routing for auto models.
    pub async fn on_body(&self, body: &[u8]) -> Outcome {
        self.on_request(body, "").await
    }

    /// [`Engine::on_body`] for a request with an id (`x-request-id`), for the decision log.
    pub async fn on_request(&self, body: &[u8], request_id: &str) -> Outcome {
        self.on_request_at("", body, request_id).await
    }

    /// [`Engine::on_request`] knowing the request path, which decides the API shape (OpenAI, or
    /// Anthropic for `/v1/messages`) of system prompts and local replies.
    pub async fn on_request_at(&self, path: &str, body: &[u8], request_id: &str) -> Outcome {
        let start = Instant::now();
        let outcome = self.on_request_inner(path, body, request_id).await;
        crate::feed::on_route(request_id, &outcome, start.elapsed());
        outcome
    }

    async fn on_request_inner(&self, path: &str, body: &[u8], request_id: &str) -> Outcome {
        let m = metrics::get();
        match self.on_body_inner(Api::from_path(path), body, request_id).await {
            Ok(Handled::Forward(f)) => {
                crate::selection::backends::started(&f.summary.model);
                let outcome = if f.summary.confidence.is_some() {
                    "routed"
                } else {
                    "passthrough"
                };
                let decision = f.summary.decision.clone().unwrap_or_else(|| "none".into());
                m.requests.add(
                    1,
                    &[
                        kv("model", f.summary.model.clone()),
                        kv("decision", decision.clone()),
                        kv("outcome", outcome),
                    ],
                );
                m.response_path.add(
                    1,
                    &[kv("path", ResponsePath::Upstream.as_str()), kv("decision", decision)],
                );
                Outcome::Forward(f)
            }
            Ok(Handled::Local {
                reply,
                model,
                decision,
                path,
            }) => {
                m.requests.add(
                    1,
                    &[
                        kv("model", model),
                        kv("decision", decision.clone()),
                        kv("outcome", "blocked"),
                    ],
                );
                crate::accounting::record_local(&decision);
                m.response_path
                    .add(1, &[kv("path", path.as_str()), kv("decision", decision)]);
                Outcome::Reply(reply)
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

    async fn on_body_inner(&self, api: Api, body: &[u8], request_id: &str) -> Result<Handled, ApiError> {
        if body.is_empty() {
            // A POST whose body turned out empty (e.g. HTTP/2 with trailers and no data).
            return Err(ApiError::empty_body());
        }
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
            let mut summary = Summary {
                model: model.name.clone(),
                ..Summary::default()
            };
            if self.config.compat.vsr_headers {
                summary.compat = vec![
                    (vsr::SELECTED_MODEL, model.name.clone()),
                    (vsr::RESPONSE_PATH, ResponsePath::Upstream.as_str().into()),
                ];
            }
            return Ok(Handled::Forward(Forward {
                remove_headers: Vec::new(),
                set_headers: self.routing_headers(&model.name),
                append_headers: Vec::new(),
                body,
                summary,
            }));
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
        let winner = routed.decision.as_deref().and_then(|d| self.by_decision.get(d));
        let plugins = winner.map(|(_, p)| p);
        let mut summary = Summary {
            model: model.name.clone(),
            signals: routed.signals_header(),
            decision: routed.decision.clone(),
            confidence: Some(routed.confidence),
            complexity: parsed.view.complexity.get().copied(),
            embedding_cached: parsed.view.embedding_cached(),
            compat: Vec::new(),
        };
        if let Some(fast) = plugins.and_then(|p| p.fast_response.as_ref()) {
            let path = if plugins::fast_response::blocks(fast) {
                ResponsePath::Blocked
            } else {
                ResponsePath::FastResponse
            };
            if self.config.compat.vsr_headers {
                summary.compat = self.vsr_headers(&routed, None, false, path);
            }
            let mut reply = plugins::fast_response::reply(fast, api, parsed.stream, &model.name);
            reply.headers.extend(summary.response_headers());
            return Ok(Handled::Local {
                reply,
                model: model.name.clone(),
                decision: routed.decision.unwrap_or_default(),
                path,
            });
        }
        let model_ref = winner.and_then(|(i, _)| {
            self.config.decisions[*i]
                .model_refs
                .iter()
                .find(|r| r.model == model.name)
        });
        let upstream_id = model_ref
            .and_then(|r| r.lora_name.as_deref())
            .unwrap_or_else(|| model.provider_model_id());
        let reasoning = Reasoning::resolve(&self.config, model, model_ref);
        let body_plugins = plugins.unwrap_or(&DecisionPlugins::NONE);
        let mut injected = false;
        let new_body = if body_plugins.changes_body() || reasoning.is_some() {
            let (b, report) =
                plugins::rewrite_body(body, api, upstream_id, body_plugins, reasoning.as_ref()).map_err(|e| {
                    ApiError::bad_request(
                        format!("{}.", crate::protocol::truncate_echo(&e.to_string())),
                        None,
                        "invalid_json",
                    )
                })?;
            injected = report.injected_system_prompt;
            b
        } else {
            // Nothing else changes: splice the model id into the original bytes.
            parsed.with_model(body, upstream_id)
        };
        if self.config.compat.vsr_headers {
            // What was written into the request, not merely asked for by the modelRef.
            let reasoning_on = reasoning.as_ref().map(|r| r.enabled);
            summary.compat = self.vsr_headers(&routed, reasoning_on, injected, ResponsePath::Upstream);
        }
        let mut forward = Forward {
            remove_headers: Vec::new(),
            set_headers: self.routing_headers(&model.name),
            append_headers: Vec::new(),
            body: Some(new_body),
            summary,
        };
        if let Some(h) = plugins.and_then(|p| p.headers.as_ref()) {
            forward.remove_headers = h.delete.iter().map(|n| Cow::Owned(n.clone())).collect();
            forward
                .set_headers
                .extend(h.update.iter().map(|x| (Cow::Owned(x.name.clone()), x.value.clone())));
            forward.append_headers = h
                .add
                .iter()
                .map(|x| (Cow::Owned(x.name.clone()), x.value.clone()))
                .collect();
        }
        Ok(Handled::Forward(forward))
    }

    /// The headers Envoy routes on: ours, plus the compatibility one when configured.
    fn routing_headers(&self, model: &str) -> Vec<(HeaderName, String)> {
        let mut h = vec![(Cow::Borrowed(MODEL_HEADER), model.to_string())];
        if let Some(name) = &self.route_header {
            h.push((Cow::Owned(name.clone()), model.to_string()));
        }
        h
    }

    /// vLLM Semantic Router's response headers for a routed request.
    fn vsr_headers(
        &self,
        routed: &Routed,
        reasoning: Option<bool>,
        injected_system_prompt: bool,
        path: ResponsePath,
    ) -> Vec<(&'static str, String)> {
        let mut h = vec![(vsr::SELECTED_MODEL, routed.model.clone())];
        if let Some(d) = &routed.decision {
            h.push((vsr::SELECTED_DECISION, d.clone()));
            h.push((vsr::SELECTED_CONFIDENCE, format!("{:.4}", routed.confidence)));
        }
        if let Some(on) = reasoning {
            h.push((vsr::SELECTED_REASONING, if on { "on" } else { "off" }.into()));
        }
        let mut by_kind: Vec<(&'static str, String)> = Vec::new();
        for m in &routed.matches {
            let name = vsr::matched(m.kind);
            match by_kind.iter_mut().find(|(k, _)| *k == name) {
                Some((_, v)) => {
                    v.push(',');
                    v.push_str(&m.name);
                }
                None => by_kind.push((name, m.name.to_string())),
            }
        }
        h.extend(by_kind);
        h.push((
            vsr::INJECTED_SYSTEM_PROMPT,
            if injected_system_prompt { "true" } else { "false" }.into(),
        ));
        h.push((vsr::RESPONSE_PATH, path.as_str().into()));
        h
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
