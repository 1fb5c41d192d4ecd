//! The routing engine: `parse → signals → decision → selection → mutations`, one entry point
//! ([`Engine::handle`]) both gRPC front ends (ext_proc and Router) call. It knows nothing about
//! gRPC or Envoy messages: it takes HTTP-level facts and returns HTTP-level mutations or a local
//! reply ([`Outcome`]), with a [`Trace`] of what happened. It records nothing itself: the caller
//! publishes the trace (metrics, the decision feed and log, accounting of local replies).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llmsoup_contract::ApiError;
use llmsoup_contract::auth::{self, AuthError};
use llmsoup_contract::fallback::{CHAIN_HEADER, MODEL_SPAN_HEADER, chain_value};
use llmsoup_contract::headers::MODEL_HEADER;
use llmsoup_contract::outcome::{Forward, HeaderName, Outcome, Reply, ResponsePath, Summary, Translation};
use llmsoup_contract::paths::{MODEL_PATH_PREFIX, ROUTED_PATHS};
use serde::Serialize;

use crate::calibration::{Calibration, LiveThresholds};
use crate::config::{AlgorithmKind, Config, DecisionConfig, ModelConfig, OnSignalError, SignalKind};
use crate::decision::{DecisionEngine, SignalErrorVerdict};
use crate::fallback;
use crate::plugins::cache::CacheStep;
use crate::plugins::{self, Api, DecisionPlugins, Reasoning};
use crate::prediction::ReferenceStrengths;
use crate::request::{RequestView, parse_request};
use crate::selection::{self, Backends, QualityEstimates, Success, SuccessTrace};
use crate::signals::difficulty::DifficultyHead;
use crate::signals::{LogOnce, Match, SignalReport, SignalSet};
use adapt::Adapted;

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
            K::Difficulty => "x-vsr-matched-difficulty",
        }
    }
}

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
    /// Decisions that depended on a failed signal, and what their `on_signal_error` made of it.
    pub degraded: Vec<SignalErrorVerdict>,
    /// What `success_target` selection saw (each candidate's strength and predicted success),
    /// when the winning decision uses it.
    pub success: Option<SuccessTrace>,
    /// The fallback chain Envoy would get, `model` first (empty without fallbacks).
    pub chain: Vec<String>,
    /// Chain models this request would not use, and why.
    pub skipped_fallbacks: Vec<fallback::Skipped>,
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

/// A request body to route, with what the front end knows about the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// The request path: it decides the API shape (OpenAI, or Anthropic for `/v1/messages`) of
    /// system prompts and local replies.
    pub path: &'a str,
    /// The complete request body.
    pub body: &'a [u8],
    /// The request's `x-request-id` (for the decision log and the feed; may be empty).
    pub request_id: &'a str,
    /// The authenticated client's token name (empty without auth): the response cache's tenant.
    pub client: &'a str,
}

/// What handling a request did, for the caller to publish.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Time from receiving the body to the outcome.
    pub elapsed: Duration,
    /// How the request was answered.
    pub handling: Handling,
    /// The routing step, when the request named an auto model.
    pub routing: Option<RoutingTrace>,
    /// The response cache step the front end must take before forwarding (a decision with a
    /// `cache` plugin): a lookup, or why the request is not cached.
    pub cache: Option<CacheStep>,
}

impl Trace {
    /// The trace of a request answered at the gate, before any body.
    fn gate(handling: Handling) -> Self {
        Trace {
            elapsed: Duration::ZERO,
            handling,
            routing: None,
            cache: None,
        }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Handling {
    /// Forwarded upstream (the outcome's summary names the model and decision).
    Forwarded,
    /// Answered by a decision's `fast_response` plugin, never sent upstream.
    Answered {
        /// The model the decision chose.
        model: String,
        /// The decision.
        decision: String,
        /// `fast_response` or `blocked`.
        path: ResponsePath,
    },
    /// Answered from the response cache (set by the front end after its lookup), never sent
    /// upstream.
    Cached {
        /// The model the decision chose (whose answer was stored).
        model: String,
        /// The decision.
        decision: String,
        /// The tenant (client token name; empty without auth).
        tenant: String,
        /// `exact`, `semantic` or `dedup`.
        kind: &'static str,
        /// What the provider call would have cost at the model's prices (USD).
        saved_usd: f64,
    },
    /// Answered from the configuration without routing (`GET /v1/models`).
    Listed,
    /// Refused with an error reply (bad input, unknown model, no model available, a method or
    /// path llmsoup does not serve).
    Rejected {
        /// The error's machine-readable code.
        code: &'static str,
    },
}

/// What the routing step saw: every signal's verdict and timing.
#[derive(Debug, Clone)]
pub struct RoutingTrace {
    /// Every signal match.
    pub matches: Vec<Match>,
    /// Per-signal timing and errors.
    pub reports: Vec<SignalReport>,
    /// Time spent in signals, decision and selection.
    pub elapsed: Duration,
    /// Decisions that depended on a failed signal, and what `on_signal_error` made of it.
    pub degraded: Vec<SignalErrorVerdict>,
    /// What `success_target` selection saw, when the winning decision uses it.
    pub success: Option<SuccessTrace>,
    /// The decision-log entry, when `decision_log` is configured.
    pub record: Option<RouteRecord>,
}

/// One routed request, as the decision log keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteRecord {
    /// The request's `x-request-id`.
    pub request_id: String,
    /// The chosen model.
    pub model: String,
    /// The winning decision.
    pub decision: Option<String>,
    /// Its confidence.
    pub confidence: f64,
    /// Matched signals, `kind:name` comma-separated.
    pub signals: String,
    /// The complexity score, when a complexity signal ran.
    pub complexity: Option<f64>,
    /// The learned router's difficulty, when a difficulty signal ran (live calibration can be
    /// seeded, and `calibrate` computes thresholds, from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<f64>,
    /// `success_target` selection: the target, each candidate's strength, predicted success and
    /// price, the choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<SuccessTrace>,
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// Routing time.
    pub latency_us: u64,
    /// The prompt (only with `decision_log.include_prompt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// SHA-256 hex of the prompt (otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_sha256: Option<String>,
    /// Models of the request's configured chain it does not use, and why (context window,
    /// tools, vision, quality floor, down, retry-after window, attempt budget, API): a selected
    /// model in a retry-after window is listed first and `model` is the fallback that replaced it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_fallbacks: Vec<fallback::Skipped>,
}

/// What a server learns from its traffic and routing reads, shared by every engine it builds (so
/// it outlives reloads): upstream observations (fed by accounting), the live calibration windows
/// (fed by the signals), and feedback-learned quality (fed by `POST /v1/feedback`).
#[derive(Debug, Clone, Default)]
pub struct Learned {
    /// Upstream observations: health, latency.
    pub backends: Arc<Backends>,
    /// Live threshold calibration windows.
    pub calibration: Arc<Calibration>,
    /// Per-decision model quality from feedback.
    pub quality: Arc<QualityEstimates>,
}

/// One loaded configuration, ready to route.
pub struct Engine {
    config: Config,
    /// What responses taught about each model (shared across reloads, fed by accounting).
    backends: Arc<Backends>,
    /// Feedback-learned quality (shared across reloads), read by `cost` selection.
    quality: Arc<QualityEstimates>,
    /// The calibrated rules and their shared windows.
    live: LiveThresholds,
    signals: SignalSet,
    decisions: DecisionEngine,
    token_hashes: Vec<[u8; 32]>,
    /// Precomputed `GET /v1/models` body.
    models_body: Vec<u8>,
    /// Precomputed `GET /v1/models/{id}` bodies.
    model_bodies: HashMap<String, Vec<u8>>,
    /// "Saved" compares against this model's prices: the most expensive one a decision uses.
    baseline: Option<String>,
    /// Per decision name: its index in `config.decisions` and its compiled plugins.
    by_decision: HashMap<String, (usize, DecisionPlugins)>,
    /// `compat.selected_model_header`, lower-cased for the wire.
    route_header: Option<String>,
    /// Signal-error verdicts already logged.
    logged: LogOnce,
    /// Model signals whose model cannot load, found at build time (cheap file checks).
    model_problems: Vec<crate::signals::ModelProblem>,
    /// The strengths of the learned router's reference models, when a decision selects with
    /// `success_target`.
    reference: Option<ReferenceStrengths>,
}

/// What handling a request body produced, with what the trace needs.
enum Handled {
    Forward(Forward),
    Local {
        reply: Reply,
        model: String,
        decision: String,
        path: ResponsePath,
    },
}

impl Engine {
    /// Builds the engine from a validated config, with backends observed by nobody else (tools,
    /// tests).
    pub fn new(config: Config) -> anyhow::Result<Self> {
        Self::with_learned(config, Learned::default())
    }

    /// Builds the engine from a validated config, reading and feeding the server's `learned`
    /// state (which outlives reloads).
    pub fn with_learned(config: Config, learned: Learned) -> anyhow::Result<Self> {
        let Learned {
            backends,
            calibration,
            quality,
        } = learned;
        let decisions = DecisionEngine::from_config(&config);
        let referenced: BTreeSet<(SignalKind, String)> = decisions.referenced_signals();
        let live = LiveThresholds::new(&config, calibration);
        let signals = SignalSet::build(&config, &referenced, &backends, &live).map_err(anyhow::Error::msg)?;
        let model_problems = crate::signals::model_problems(&config);
        let reference = if crate::signals::success_target(&config) {
            let head = DifficultyHead::builtin().map_err(anyhow::Error::msg)?;
            let (weak, strong) = (&head.reference.weak, &head.reference.strong);
            Some(ReferenceStrengths::learned(weak, strong).ok_or_else(|| {
                anyhow::anyhow!(
                    "success_target: the learned router's reference models ({weak}, {strong}) have no learned strengths"
                )
            })?)
        } else {
            None
        };
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
        let (models_body, model_bodies) = models_list(&config);
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
            backends,
            quality,
            live,
            signals,
            decisions,
            token_hashes,
            models_body,
            model_bodies,
            baseline,
            by_decision,
            route_header,
            logged: LogOnce::default(),
            model_problems,
            reference,
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

    /// The backends this engine reads.
    pub fn backends(&self) -> &Arc<Backends> {
        &self.backends
    }

    /// The calibrated rules (with the shared windows).
    pub fn live_thresholds(&self) -> &LiveThresholds {
        &self.live
    }

    /// Feedback-learned quality this engine's `cost` selection reads.
    pub fn quality(&self) -> &Arc<QualityEstimates> {
        &self.quality
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
    /// The refusal becomes the client's 401 with `ApiError::from`.
    pub fn authenticate(&self, authorization: Option<&[u8]>, api_key: Option<&[u8]>) -> Result<(), AuthError> {
        self.tenant(authorization, api_key).map(drop)
    }

    /// [`Engine::authenticate`], naming who: the matching token's `name` (the tenant budgets and
    /// per-tenant totals use), or `None` when auth is off.
    pub fn tenant(&self, authorization: Option<&[u8]>, api_key: Option<&[u8]>) -> Result<Option<&str>, AuthError> {
        if self.token_hashes.is_empty() {
            return Ok(None);
        }
        let i = auth::check(&self.token_hashes, authorization, api_key)?;
        Ok(self.config.auth.tokens.get(i).map(|t| t.name.as_str()))
    }

    /// Evaluates signals and decisions on a prompt and selects the model.
    /// The fallback chain is the one a request's body would get (`Routed::chain`).
    pub async fn route(&self, view: &RequestView) -> Result<Routed, ApiError> {
        let (mut routed, selected) = self.decide(view).await?;
        let decision = routed
            .decision
            .as_deref()
            .and_then(|d| self.by_decision.get(d))
            .map(|(i, _)| &self.config.decisions[*i]);
        let chain = self.chain(selected, decision, view);
        routed.model = chain.models[0].name.clone();
        if chain.models.len() > 1 || !chain.skipped.is_empty() {
            routed.chain = chain.models.iter().map(|m| m.name.clone()).collect();
        }
        routed.skipped_fallbacks = chain.skipped_owned();
        Ok(routed)
    }

    /// [`Engine::route`], keeping the chosen model's configuration (no second lookup by name).
    async fn decide(&self, view: &RequestView) -> Result<(Routed, &ModelConfig), ApiError> {
        let start = Instant::now();
        let (matches, reports) = self.signals.evaluate(view).await;
        let mut failed: Vec<SignalKind> = reports.iter().filter(|r| r.error.is_some()).map(|r| r.kind).collect();
        failed.dedup();
        let (winner, degraded) = self.decisions.decide_degraded(&matches, &failed);
        for v in &degraded {
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
        let mut success_trace = None;
        let (model, decision, confidence) = match winner {
            Some(w) => {
                let (success, error) = match w.decision.algorithm.kind {
                    AlgorithmKind::SuccessTarget => self.success(view).await,
                    _ => (None, None),
                };
                let inputs = selection::Inputs {
                    feedback: Some(selection::Feedback {
                        quality: &self.quality,
                        decision: &w.decision.name,
                    }),
                    success: success.as_ref(),
                    success_error: error.as_deref(),
                };
                let selected = selection::select_learned(
                    &self.config,
                    &self.backends,
                    inputs,
                    &w.decision.model_refs,
                    &w.decision.algorithm,
                );
                success_trace = selected.success;
                match selected.model {
                    Some(m) => (m, Some(w.decision.name.to_string()), w.confidence),
                    None => {
                        tracing::warn!(decision = %w.decision.name, "no enabled model among the decision's modelRefs; using the default model");
                        (self.config.default_model(), None, 0.0)
                    }
                }
            }
            None => (self.config.default_model(), None, 0.0),
        };
        if !model.enabled {
            return Err(ApiError::unavailable("No enabled model can serve this request."));
        }
        let routed = Routed {
            model: model.name.clone(),
            decision,
            confidence,
            matches,
            reports,
            elapsed: start.elapsed(),
            degraded,
            success: success_trace,
            chain: Vec::new(),
            skipped_fallbacks: Vec::new(),
        };
        Ok((routed, model))
    }

    /// The request's success prediction for `success_target`, or why there is none (the
    /// embedding failed: selection then takes the strongest model).
    async fn success(&self, view: &RequestView) -> (Option<Success>, Option<String>) {
        let Some(reference) = self.reference else {
            return (None, Some("no reference strengths".into()));
        };
        let Some(embedder) = self.signals.embedder() else {
            return (None, Some("no embedder".into()));
        };
        match crate::signals::difficulty::predict(embedder, view).await {
            Ok(p) => (
                Some(Success {
                    prediction: Some(p),
                    reference,
                }),
                None,
            ),
            Err(e) => {
                if self.logged.first(format!("success_target\0{e}")) {
                    tracing::error!(error = %e, "success_target: no success prediction, the strongest model is chosen (logged once per cause)");
                }
                (
                    Some(Success {
                        prediction: None,
                        reference,
                    }),
                    Some(e.to_string()),
                )
            }
        }
    }

    /// The scores behind each signal's verdict (for `llmsoup route` / `classify`).
    pub async fn explain(&self, view: &RequestView) -> serde_json::Map<String, serde_json::Value> {
        self.signals.explain(view).await
    }

    /// The gate on method and path, before any body: everything that is not a POST with a body
    /// is answered here and never reaches a provider. `GET /v1/models` gets the model list; a
    /// routed endpoint asked with another method gets a 405; a POST without a body a 400; any other
    /// bodyless or non-POST request a 404. `None`: a POST whose body must be routed
    /// ([`Engine::handle`]).
    pub fn on_headers(&self, method: &str, path: &str, has_body: bool) -> Option<(Outcome, Trace)> {
        let path = path.split('?').next().unwrap_or(path);
        let error = match (method, path) {
            ("POST", _) if has_body => return None,
            ("GET", "/v1/models") => {
                let reply = Reply {
                    status: 200,
                    headers: vec![("content-type", "application/json".into())],
                    body: self.models_body.clone(),
                };
                return Some((Outcome::Reply(reply), Trace::gate(Handling::Listed)));
            }
            ("GET", p) if p.starts_with(MODEL_PATH_PREFIX) => {
                // `models.retrieve`: the same entry the list has, or the 404 OpenAI gives.
                let id = &p[MODEL_PATH_PREFIX.len()..];
                match self.model_bodies.get(id) {
                    Some(body) => {
                        let reply = Reply {
                            status: 200,
                            headers: vec![("content-type", "application/json".into())],
                            body: body.clone(),
                        };
                        return Some((Outcome::Reply(reply), Trace::gate(Handling::Listed)));
                    }
                    None => ApiError {
                        status: 404,
                        ..ApiError::model_not_found(id)
                    },
                }
            }
            ("POST", _) => ApiError::empty_body(),
            (_, "/v1/models") => ApiError::method_not_allowed("GET"),
            (_, p) if p.starts_with(MODEL_PATH_PREFIX) => ApiError::method_not_allowed("GET"),
            (_, p) if ROUTED_PATHS.contains(&p) => ApiError::method_not_allowed("POST"),
            _ => ApiError::not_found(),
        };
        let handling = Handling::Rejected {
            code: error.code.unwrap_or("error"),
        };
        let allow = (error.status == 405).then(|| {
            if path == "/v1/models" || path.starts_with(MODEL_PATH_PREFIX) {
                "GET"
            } else {
                "POST"
            }
        });
        let mut reply = Reply::from(error);
        if let Some(allow) = allow {
            reply.headers.push(("allow", allow.into()));
        }
        Some((Outcome::Reply(reply), Trace::gate(handling)))
    }

    /// Handles a complete request body: the routing gate, then routing for auto models. The one
    /// entry point for request bodies in both attach modes.
    pub async fn handle(&self, req: Request<'_>) -> (Outcome, Trace) {
        let start = Instant::now();
        let mut routing = None;
        let mut cache = None;
        let api = Api::from_path(req.path);
        let (outcome, handling) = match self.on_body_inner(api, req, &mut routing, &mut cache).await {
            Ok(Handled::Forward(f)) => {
                // A request the cache may answer is started by the front end on a miss.
                if !matches!(cache, Some(CacheStep::Lookup(_))) {
                    self.backends.started(&f.summary.model);
                }
                (Outcome::Forward(f), Handling::Forwarded)
            }
            Ok(Handled::Local {
                reply,
                model,
                decision,
                path,
            }) => (Outcome::Reply(reply), Handling::Answered { model, decision, path }),
            Err(e) => {
                let code = e.code.unwrap_or("error");
                // Clients read errors in their own API's shape (the Anthropic SDK needs `type`).
                let anthropic = (api == Api::Anthropic).then(|| e.to_anthropic_json());
                let mut reply = Reply::from(e);
                if let Some(body) = anthropic {
                    reply.body = body;
                }
                (Outcome::Reply(reply), Handling::Rejected { code })
            }
        };
        if !matches!(handling, Handling::Forwarded) {
            cache = None;
        }
        let trace = Trace {
            elapsed: start.elapsed(),
            handling,
            routing,
            cache,
        };
        (outcome, trace)
    }

    async fn on_body_inner(
        &self,
        api: Api,
        req: Request<'_>,
        trace: &mut Option<RoutingTrace>,
        cache: &mut Option<CacheStep>,
    ) -> Result<Handled, ApiError> {
        let body = req.body;
        if body.is_empty() {
            // A POST whose body turned out empty (e.g. HTTP/2 with trailers and no data).
            return Err(ApiError::empty_body());
        }
        let mut parsed = parse_request(body, self.config.routing.include_history)?;
        if !req.request_id.is_empty() {
            parsed.view.tiebreak_key = Some(crate::request::stable_hash(req.request_id.as_bytes()));
        }
        if !self.config.routing.auto_models.iter().any(|a| a == &parsed.model) {
            // Concrete model: pass through untouched, only tell Envoy where it goes.
            let requested = self
                .config
                .model(&parsed.model)
                .filter(|m| m.enabled)
                .ok_or_else(|| ApiError::model_not_found(&parsed.model))?;
            let chain = self.chain(requested, None, &parsed.view);
            // The named model, unless its provider asked for a pause and a fallback can take it.
            let model = chain.models[0];
            let plan = self.plan(req.path, model)?;
            let adapted = match adapt::translate(plan, body, model.provider_model_id())? {
                Some(a) => a,
                None => {
                    let spliced = (model.provider_model_id() != model.name)
                        .then(|| parsed.with_model(body, model.provider_model_id()));
                    self.with_stream_usage(plan, api, req.path, spliced, body)
                }
            };
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
                set_headers: {
                    let mut h = self.routing_headers(&model.name, adapted.path);
                    if matches!(adapted.translation, Translation::None | Translation::StripUsageChunk) {
                        let sent = adapted.body.as_deref().unwrap_or(body);
                        self.chain_headers(&chain, sent, &mut h);
                    }
                    h
                },
                append_headers: Vec::new(),
                body: adapted.body,
                translation: adapted.translation,
                summary,
            }));
        }
        let (routed, selected) = self.decide(&parsed.view).await?;
        let winner = routed.decision.as_deref().and_then(|d| self.by_decision.get(d));
        let chain = self.chain(selected, winner.map(|(i, _)| &self.config.decisions[*i]), &parsed.view);
        // The selected model, unless its provider asked for a pause and a fallback can take it.
        let model = chain.models[0];
        tracing::debug!(
            model = %routed.model,
            decision = routed.decision.as_deref().unwrap_or("-"),
            signals = %routed.signals_header(),
            prompt_tokens = parsed.view.prompt_tokens,
            stream = parsed.stream,
            latency_us = routed.elapsed.as_micros() as u64,
            "routed"
        );
        let record = self.config.decision_log.as_ref().map(|log| RouteRecord {
            request_id: req.request_id.to_string(),
            model: model.name.clone(),
            decision: routed.decision.clone(),
            confidence: routed.confidence,
            signals: routed.signals_header(),
            complexity: parsed.view.complexity.get().copied(),
            difficulty: parsed.view.difficulty.get().map(|p| p.difficulty()),
            success: routed.success.clone(),
            prompt_tokens: parsed.view.prompt_tokens,
            latency_us: routed.elapsed.as_micros() as u64,
            prompt: log.include_prompt.then(|| parsed.view.text.clone()),
            prompt_sha256: (!log.include_prompt).then(|| hex::encode(auth::hash(parsed.view.text.as_bytes()))),
            skipped_fallbacks: chain.skipped_owned(),
        });
        *trace = Some(RoutingTrace {
            matches: routed.matches.clone(),
            reports: routed.reports.clone(),
            elapsed: routed.elapsed,
            degraded: routed.degraded.clone(),
            success: routed.success.clone(),
            record,
        });
        let plugins = winner.map(|(_, p)| p);
        let mut summary = Summary {
            model: model.name.clone(),
            signals: routed.signals_header(),
            decision: routed.decision.clone(),
            confidence: Some(routed.confidence),
            complexity: parsed.view.complexity.get().copied(),
            embedding_cached: parsed.view.embedding_cached(),
            compat: Vec::new(),
            cache: None,
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
        if let Some(plugin) = plugins.and_then(|p| p.cache.as_ref()) {
            let decision = routed.decision.as_deref().unwrap_or_default();
            *cache = Some(
                match plugins::cache::lookup(plugin, api, req.path, body, &model.name, req.client, decision) {
                    Ok(mut lookup) => {
                        if lookup.threshold.is_some()
                            && let Some(embedder) = self.signals.embedder()
                        {
                            // The shared query embedding: computed once, whether a signal or the
                            // cache asks first. Without it the lookup is exact only.
                            lookup.embedding = parsed.view.embedding(embedder).await.ok();
                        }
                        CacheStep::Lookup(Box::new(lookup))
                    }
                    Err(reason) => CacheStep::Skipped {
                        reason,
                        tenant: req.client.to_string(),
                        decision: decision.to_string(),
                    },
                },
            );
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
        // Translated first, so plugins write the provider's API (a reasoning toggle is a
        // provider-side field the client's API may not have).
        let plan = self.plan(req.path, model)?;
        let translated = adapt::translate(plan, body, upstream_id)?;
        let (mut translated, translated_body) = match translated {
            Some(mut a) => {
                let b = a.body.take();
                (Some(a), b)
            }
            None => (None, None),
        };
        let (source, provider_api) = match &translated_body {
            Some(b) => (b.as_slice(), plan.provider_api(api)),
            None => (body, api),
        };
        let new_body = if body_plugins.changes_body() || reasoning.is_some() {
            let (b, report) =
                plugins::rewrite_body(source, provider_api, upstream_id, body_plugins, reasoning.as_ref()).map_err(
                    |e| {
                        ApiError::bad_request(
                            format!("{}.", llmsoup_contract::error::truncate_echo(&e.to_string())),
                            None,
                            "invalid_json",
                        )
                    },
                )?;
            injected = report.injected_system_prompt;
            b
        } else if let Some(b) = translated_body {
            b
        } else {
            // Nothing else changes: splice the model id into the original bytes.
            parsed.with_model(body, upstream_id)
        };
        let adapted = match translated.take() {
            Some(a) => Adapted {
                body: Some(new_body),
                ..a
            },
            None => self.with_stream_usage(plan, api, req.path, Some(new_body), body),
        };
        if self.config.compat.vsr_headers {
            // What was written into the request, not merely asked for by the modelRef.
            let reasoning_on = reasoning.as_ref().map(|r| r.enabled);
            summary.compat = self.vsr_headers(&routed, reasoning_on, injected, ResponsePath::Upstream);
        }
        let mut set_headers = self.routing_headers(&model.name, adapted.path);
        if matches!(adapted.translation, Translation::None | Translation::StripUsageChunk)
            && let Some(sent) = adapted.body.as_deref()
        {
            self.chain_headers(&chain, sent, &mut set_headers);
        }
        let mut forward = Forward {
            remove_headers: Vec::new(),
            set_headers,
            append_headers: Vec::new(),
            body: adapted.body,
            translation: adapted.translation,
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

    /// The chain of a request routed to `primary` (by `decision`), skipped models logged.
    fn chain<'c>(
        &'c self,
        primary: &'c ModelConfig,
        decision: Option<&'c DecisionConfig>,
        view: &RequestView,
    ) -> fallback::Chain<'c> {
        let chain = fallback::chain(&self.config, &self.backends, primary, decision, view);
        for (name, why) in &chain.skipped {
            tracing::debug!(model = %primary.name, fallback = %name, reason = why.as_str(), "chain model skipped for this request");
        }
        chain
    }

    /// The request's fallback chain for Envoy (`contract::fallback`): the chain's models and where
    /// the `model` value sits in the body, so each attempt can splice its own id. Nothing when
    /// the chain is one model.
    fn chain_headers(&self, chain: &fallback::Chain<'_>, sent: &[u8], headers: &mut Vec<(HeaderName, String)>) {
        if chain.models.len() < 2 {
            return;
        }
        // Where `model` sits in the body Envoy sends (plugins or stream options may have moved
        // it): one more parse, for chained requests only.
        let Ok(span) = parse_request(sent, false).map(|p| p.model_span()) else {
            return;
        };
        let names: Vec<&str> = chain.models.iter().map(|m| m.name.as_str()).collect();
        headers.push((Cow::Borrowed(CHAIN_HEADER), chain_value(&names)));
        headers.push((Cow::Borrowed(MODEL_SPAN_HEADER), format!("{}-{}", span.start, span.end)));
    }

    /// The headers Envoy routes on: ours, plus the compatibility one when configured, and the
    /// provider's endpoint when the request was translated to its API.
    fn routing_headers(&self, model: &str, path: Option<&'static str>) -> Vec<(HeaderName, String)> {
        let mut h = vec![(Cow::Borrowed(MODEL_HEADER), model.to_string())];
        if let Some(name) = &self.route_header {
            h.push((Cow::Owned(name.clone()), model.to_string()));
        }
        if let Some(path) = path {
            h.push((Cow::Borrowed(":path"), path.to_string()));
        }
        h
    }

    /// How a request on `path` reaches `model`'s provider.
    fn plan(&self, path: &str, model: &ModelConfig) -> Result<adapt::Plan, ApiError> {
        let provider = self
            .config
            .provider(&model.provider)
            .ok_or_else(|| ApiError::unavailable(format!("The model `{}` has no provider.", model.name)))?;
        adapt::plan(path, &model.name, provider)
    }

    /// A native request's body (`changed`, or the client's `original` when it did not change),
    /// asking for usage on an OpenAI stream whose client did not, when responses are accounted.
    fn with_stream_usage(
        &self,
        plan: adapt::Plan,
        api: Api,
        path: &str,
        changed: Option<Vec<u8>>,
        original: &[u8],
    ) -> Adapted {
        let asked = self
            .config
            .gateway
            .response_accounting
            .then(|| adapt::ask_for_usage(plan, api, path, changed.as_deref().unwrap_or(original)))
            .flatten();
        match asked {
            Some((body, translation)) => Adapted {
                body: Some(body),
                path: None,
                translation,
            },
            None => Adapted {
                body: changed,
                ..Adapted::default()
            },
        }
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

/// `GET /v1/models` and each `GET /v1/models/{id}` body, precomputed.
fn models_list(config: &Config) -> (Vec<u8>, HashMap<String, Vec<u8>>) {
    let data = model_entries(config);
    let by_id = data
        .iter()
        .filter_map(|m| Some((m["id"].as_str()?.to_string(), serde_json::to_vec(m).ok()?)))
        .collect();
    let list = serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).expect("serialises");
    (list, by_id)
}

fn model_entries(config: &Config) -> Vec<serde_json::Value> {
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
    data
}

mod adapt;
mod local;
pub use local::LocalRouteError;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vsr_parity;
