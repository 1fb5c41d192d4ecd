//! What the sidecar learns from traffic and publishes: metrics, accounting (`/stats`), the live
//! decision feed, the decision log, and the backends' observed health that routing reads.
//!
//! All of it is one [`Observer`] value, created at `serve` and handed to every service: no
//! process-wide state, so tests build their own and the data flow shows in signatures. The
//! engine never calls in here; front ends pass its [`Trace`] to [`Observer::on_route`] and usage
//! reports to [`Observer::report`].

pub mod accounting;
pub mod decision_log;
pub mod feed;
pub mod metrics;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use llmsoup_config::Config;
use llmsoup_contract::ApiError;
use llmsoup_contract::auth::AuthError;
use llmsoup_contract::outcome::{Outcome, ResponsePath};
use llmsoup_contract::v1::UsageReport;
use llmsoup_router::engine::{Engine, Handling, Trace};
use llmsoup_router::selection::Backends;

use crate::budget::Budgets;

use accounting::{Accounting, Stats};
use decision_log::DecisionLog;
use feed::Feed;
use metrics::{Metrics, kv};

/// The sidecar's observed state, shared by its services.
pub struct Observer {
    metrics: Metrics,
    registry: Option<prometheus::Registry>,
    accounting: Accounting,
    feed: Feed,
    backends: Arc<Backends>,
    decision_log: ArcSwapOption<DecisionLog>,
    budgets: Budgets,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Default for Observer {
    fn default() -> Self {
        Observer::new(Metrics::noop(), None)
    }
}

impl Observer {
    fn new(metrics: Metrics, registry: Option<prometheus::Registry>) -> Self {
        Observer {
            feed: Feed::with_metrics(&metrics),
            metrics,
            registry,
            accounting: Accounting::default(),
            backends: Arc::default(),
            decision_log: ArcSwapOption::empty(),
            budgets: Budgets::default(),
        }
    }

    /// An observer whose metrics are exported in Prometheus format (the server's). Installs the
    /// process's OpenTelemetry meter provider, so call it once.
    pub fn with_prometheus() -> anyhow::Result<Self> {
        let (metrics, registry) = metrics::install()?;
        Ok(Observer::new(metrics, Some(registry)))
    }

    /// The instruments.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The Prometheus text exposition of every metric (empty without an exporter).
    pub fn render_metrics(&self) -> String {
        self.registry.as_ref().map(metrics::render).unwrap_or_default()
    }

    /// What responses taught about each model; engines read it.
    pub fn backends(&self) -> &Arc<Backends> {
        &self.backends
    }

    /// The `/stats` totals.
    pub fn stats(&self) -> Stats {
        self.accounting.snapshot()
    }

    /// The live decision feed.
    pub fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Budget and rate-limit counters (Redis), checked by the rate limit service and charged
    /// by usage reports.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// A routing engine for `config` that reads this observer's backends, with the decision log
    /// and the budget store the config asks for opened; nothing changes unless all succeed.
    pub fn engine(&self, config: Config) -> anyhow::Result<Engine> {
        let log = match &config.decision_log {
            Some(d) => Some(Arc::new(DecisionLog::open(d.path.clone().into(), d.include_prompt)?)),
            None => None,
        };
        let engine = Engine::with_backends(config, self.backends.clone())?;
        self.budgets.configure(engine.config())?;
        self.decision_log.store(log);
        Ok(engine)
    }

    /// A request refused by a budget or rate limit (`limit`: `scope:limit`, e.g.
    /// `token:tokens_per_minute`, or `unavailable`): counted per tenant and model in metrics and
    /// `/stats`. Names that are not configured are counted as `other`, so a forged call cannot
    /// grow label sets.
    pub fn throttled(&self, config: &Config, tenant: &str, model: &str, limit: String) {
        let tenant = if config.auth.tokens.iter().any(|t| t.name == tenant) {
            tenant
        } else {
            ""
        };
        let model = if config.model(model).is_some() { model } else { "" };
        self.metrics.throttled.add(
            1,
            &[
                kv("tenant", accounting::tenant_label(tenant).to_string()),
                kv(
                    "gen_ai.request.model",
                    if model.is_empty() { "other" } else { model }.to_string(),
                ),
                kv("limit", limit),
            ],
        );
        self.accounting.throttled(tenant, model);
    }

    /// A client refused at the gateway: counted by reason, answered with the 401 body.
    pub fn rejected(&self, e: AuthError) -> ApiError {
        self.metrics.rejections.add(1, &[kv("code", e.code())]);
        ApiError::from(e)
    }

    /// [`Observer::authenticate`], naming the tenant (`None` with auth off).
    pub fn tenant<'e>(
        &self,
        engine: &'e Engine,
        authorization: Option<&[u8]>,
        api_key: Option<&[u8]>,
    ) -> Result<Option<&'e str>, ApiError> {
        engine.tenant(authorization, api_key).map_err(|e| self.rejected(e))
    }

    /// Checks a request's token with `engine`; a refusal is counted and becomes the 401.
    pub fn authenticate(
        &self,
        engine: &Engine,
        authorization: Option<&[u8]>,
        api_key: Option<&[u8]>,
    ) -> Result<(), ApiError> {
        engine
            .authenticate(authorization, api_key)
            .map_err(|e| self.rejected(e))
    }

    /// Counts what the engine's gate (`Engine::on_headers`) refused before any body. Not
    /// published to the feed: such requests never reach routing.
    pub fn on_gate(&self, trace: &Trace) {
        if let Handling::Rejected { code } = trace.handling {
            self.metrics.rejections.add(1, &[kv("code", code)]);
        }
    }

    /// Publishes what the engine did with one request body: metrics, the decision log, the feed,
    /// and `/stats` for requests a plugin answered locally.
    pub fn on_route(&self, request_id: &str, outcome: &Outcome, trace: &Trace) {
        let m = &self.metrics;
        if let Some(r) = &trace.routing {
            for report in &r.reports {
                let signal = kv("signal", report.kind.as_str());
                m.signal_duration
                    .record(report.elapsed.as_secs_f64(), std::slice::from_ref(&signal));
                if report.error.is_some() {
                    m.signal_errors.add(1, &[signal]);
                }
            }
            for x in &r.matches {
                m.signal_matches
                    .add(1, &[kv("signal", x.kind.as_str()), kv("rule", x.name.to_string())]);
            }
            for v in &r.degraded {
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
            }
            m.routing_duration.record(r.elapsed.as_secs_f64(), &[]);
            if let (Some(record), Some(log)) = (&r.record, &*self.decision_log.load()) {
                let mut entry = serde_json::Map::new();
                entry.insert("event".into(), "route".into());
                entry.insert("ts".into(), unix_now().into());
                if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(record) {
                    entry.extend(fields);
                }
                log.write(&serde_json::Value::Object(entry));
            }
        }
        match (&trace.handling, outcome) {
            (Handling::Forwarded, Outcome::Forward(f)) => {
                let label = if f.summary.confidence.is_some() {
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
                        kv("outcome", label),
                    ],
                );
                m.response_path.add(
                    1,
                    &[kv("path", ResponsePath::Upstream.as_str()), kv("decision", decision)],
                );
            }
            (Handling::Answered { model, decision, path }, _) => {
                m.requests.add(
                    1,
                    &[
                        kv("model", model.clone()),
                        kv("decision", decision.clone()),
                        kv("outcome", "blocked"),
                    ],
                );
                self.accounting.record_local(decision);
                m.response_path
                    .add(1, &[kv("path", path.as_str()), kv("decision", decision.clone())]);
            }
            (Handling::Rejected { code }, _) => m.rejections.add(1, &[kv("code", *code)]),
            (Handling::Forwarded, Outcome::Reply(_)) | (Handling::Listed, _) => {}
        }
        self.feed.on_route(request_id, outcome, trace.elapsed);
    }

    /// Accounts one finished request (a usage report from either attach mode).
    pub fn report(&self, engine: &Engine, r: &UsageReport) {
        accounting::record(self, engine, r);
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
        let Some(log) = &*self.decision_log.load() else {
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

    pub(crate) fn accounting(&self) -> &Accounting {
        &self.accounting
    }
}
