//! What the sidecar learns from traffic and publishes: metrics, accounting (`/stats`), the live
//! decision feed, the decision log, and what routing reads: the backends' observed health, live
//! calibration windows and feedback-learned quality ([`Learned`]).
//!
//! All of it is one [`Observer`] value, created at `serve` and handed to every service: no
//! process-wide state, so tests build their own and the data flow shows in signatures. The
//! engine never calls in here; front ends pass its [`Trace`] to [`Observer::on_route`] and usage
//! reports to [`Observer::report`].

pub mod accounting;
pub mod decision_log;
pub mod feed;
pub mod learning;
pub mod metrics;

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use llmsoup_config::Config;
use llmsoup_contract::ApiError;
use llmsoup_contract::auth::AuthError;
use llmsoup_contract::outcome::{Outcome, ResponsePath};
use llmsoup_contract::v1::UsageReport;
use llmsoup_router::engine::{Engine, Handling, Learned, Trace};
use llmsoup_router::selection::Backends;

use accounting::{Accounting, CacheOutcome, Stats};
use llmsoup_router::plugins::cache::CacheStep;

use crate::budget::Budgets;
use crate::cache::ResponseCache;

use decision_log::DecisionLog;
use feed::Feed;
use learning::{RecentRequests, RoutedTo};
use metrics::{Metrics, kv};

/// The sidecar's observed state, shared by its services.
pub struct Observer {
    metrics: Metrics,
    registry: Option<prometheus::Registry>,
    accounting: Accounting,
    feed: Feed,
    learned: Learned,
    recent: RecentRequests,
    decision_log: ArcSwapOption<DecisionLog>,
    budgets: Budgets,
    cache: ResponseCache,
}

/// What `POST /v1/feedback` recorded.
#[derive(Debug, Clone)]
pub struct FeedbackRecorded {
    /// Where the request went.
    pub to: RoutedTo,
    /// The decision's blended quality of that model after the score (`None` without a decision).
    pub quality: Option<f64>,
}

/// A tenant as a label value: the client token's name, `anonymous` without auth.
fn tenant_label(tenant: &str) -> String {
    if tenant.is_empty() { "anonymous" } else { tenant }.to_string()
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
            cache: ResponseCache::new(metrics.clone()),
            metrics,
            registry,
            accounting: Accounting::default(),
            learned: Learned::default(),
            recent: RecentRequests::default(),
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
        &self.learned.backends
    }

    /// Everything routing learns from traffic (backends, calibration windows, feedback quality).
    pub fn learned(&self) -> &Learned {
        &self.learned
    }

    /// The `/stats` totals.
    pub fn stats(&self) -> Stats {
        let mut stats = self.accounting.snapshot();
        stats.cache.stored = self.cache.stored();
        stats
    }

    /// The response cache (its store follows the config's `response_cache` section).
    pub fn cache(&self) -> &ResponseCache {
        &self.cache
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

    /// A routing engine for `config` that reads this observer's learned state, with the decision
    /// log and the budget store the config asks for opened; nothing changes unless all succeed.
    pub fn engine(&self, config: Config) -> anyhow::Result<Engine> {
        let log = match &config.decision_log {
            Some(d) => Some(Arc::new(DecisionLog::open(d.path.clone().into(), d.include_prompt)?)),
            None => None,
        };
        let cache = config.response_cache.clone();
        let engine = Engine::with_learned(config, self.learned.clone())?;
        self.cache.configure(&cache)?;
        self.budgets.configure(engine.config())?;
        self.decision_log.store(log);
        // The calibration windows follow the new config (dropped where it no longer calibrates a
        // rule, its shares applied to the rest) only now that the engine will serve: a refused
        // reload keeps the running config's.
        self.learned
            .calibration
            .configure(&engine.live_thresholds().calibrators);
        Ok(engine)
    }

    /// Reads back what the decision log of `engine`'s config holds (routed requests for feedback,
    /// feedback scores, calibration scores): called once at start, so a restart keeps learning
    /// where the last process stopped. A missing log is a fresh start.
    pub fn restore(&self, engine: &Engine) -> learning::Restored {
        let Some(log) = &engine.config().decision_log else {
            return learning::Restored::default();
        };
        match learning::read_tail(std::path::Path::new(&log.path)) {
            Ok(text) => learning::restore(&text, engine, &self.learned, &self.recent),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => learning::Restored::default(),
            Err(e) => {
                tracing::warn!(path = %log.path, error = %e, "cannot read the decision log back; starting fresh");
                learning::Restored::default()
            }
        }
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
        if trace.routing.is_some() {
            let to = match (&trace.handling, outcome) {
                (Handling::Forwarded, Outcome::Forward(f)) => Some(RoutedTo {
                    decision: f.summary.decision.clone(),
                    model: f.summary.model.clone(),
                }),
                (Handling::Cached { model, decision, .. }, _) => Some(RoutedTo {
                    decision: Some(decision.clone()),
                    model: model.clone(),
                }),
                _ => None,
            };
            if let Some(to) = to {
                self.recent.insert(request_id, to);
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
                if let Some(step) = &trace.cache {
                    let (result, tenant, decision, outcome) = match step {
                        CacheStep::Lookup(l) => ("miss", &l.tenant, &l.decision, CacheOutcome::Miss),
                        CacheStep::Skipped { tenant, decision, .. } => {
                            ("skipped", tenant, decision, CacheOutcome::Skipped)
                        }
                    };
                    m.cache_lookups.add(
                        1,
                        &[
                            kv("result", result),
                            kv("kind", "none"),
                            kv("tenant", tenant_label(tenant)),
                            kv("decision", decision.clone()),
                        ],
                    );
                    self.accounting.record_cache(tenant, outcome);
                }
            }
            (
                Handling::Cached {
                    model,
                    decision,
                    tenant,
                    kind,
                    saved_usd,
                },
                _,
            ) => {
                m.requests.add(
                    1,
                    &[
                        kv("model", model.clone()),
                        kv("decision", decision.clone()),
                        kv("outcome", "cached"),
                    ],
                );
                m.response_path.add(
                    1,
                    &[
                        kv("path", ResponsePath::Cache.as_str()),
                        kv("decision", decision.clone()),
                    ],
                );
                m.cache_lookups.add(
                    1,
                    &[
                        kv("result", "hit"),
                        kv("kind", *kind),
                        kv("tenant", tenant_label(tenant)),
                        kv("decision", decision.clone()),
                    ],
                );
                m.cache_saved.add(*saved_usd, &[kv("tenant", tenant_label(tenant))]);
                self.accounting.record_cache(tenant, CacheOutcome::Hit(*saved_usd));
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
        if let Some(local) = &r.local_route {
            self.on_local_route(engine, r, local);
        }
        // The wasm filter hands a cache leader's captured answer back with its report.
        if !r.cache_key.is_empty()
            && let Some(key) = crate::cache::parse_ticket(&r.cache_key)
        {
            let body = (!r.response_body.is_empty()).then_some(r.response_body.as_slice());
            self.cache.complete(&key, r.status, r.stream, body);
        }
        if !r.request_id.is_empty() && !r.model.is_empty() {
            self.recent.answered_by(&r.request_id, &r.model);
        }
        accounting::record(self, engine, r);
    }

    /// Publishes a request the wasm filter routed with its `LocalPlan` as [`Self::on_route`]
    /// publishes the engine's own (decision log, metrics, feed, feedback ids), before its usage
    /// is accounted: late by up to one report flush, but in the same order.
    fn on_local_route(&self, engine: &Engine, r: &UsageReport, local: &llmsoup_contract::v1::LocalRoute) {
        // The report's own checks first; `accounting::record` counts a report that fails them.
        if accounting::validate(engine, r).is_err() {
            return;
        }
        let published = if local.decision == r.decision {
            engine
                .local_route(&r.request_id, &r.model, local)
                .map_err(|e| e.to_string())
        } else {
            Err("the record's decision is not the report's".into())
        };
        match published {
            Ok((outcome, trace)) => {
                // `Engine::handle` counts a forwarded request in flight when it routes it.
                engine.backends().started(&r.model);
                self.on_route(&r.request_id, &outcome, &trace);
            }
            Err(why) => {
                tracing::debug!(model = %r.model.escape_debug(), why, "local route record dropped");
                accounting::dropped(self, accounting::Dropped::LocalRoute, 1);
            }
        }
    }

    /// Records a quality score (0–1) for a routed request: its decision and the model that
    /// answered get the score in their feedback-learned quality (which `cost` selection reads),
    /// and the decision log keeps it (so a restart reloads it). Returns where the request went and
    /// the decision's blended quality for that model now (`None` without a decision).
    pub fn feedback(&self, engine: &Engine, request_id: &str, score: f64) -> Result<FeedbackRecorded, ApiError> {
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
        let Some(to) = self.recent.get(request_id) else {
            return Err(ApiError::unknown_request(request_id));
        };
        let now = unix_now();
        let cfg = &engine.config().routing.feedback;
        let quality = to.decision.as_deref().map(|d| {
            self.learned.quality.record(d, &to.model, score, now, cfg);
            let prior = engine.config().model(&to.model).and_then(|m| m.quality).unwrap_or(0.0);
            self.learned.quality.quality(d, &to.model, prior, now, cfg)
        });
        log.write(&serde_json::json!({
            "event": "feedback",
            "ts": now,
            "request_id": request_id,
            "score": score,
            "decision": to.decision,
            "model": to.model,
        }));
        Ok(FeedbackRecorded { to, quality })
    }

    pub(crate) fn accounting(&self) -> &Accounting {
        &self.accounting
    }
}
