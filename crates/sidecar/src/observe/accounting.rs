//! Response-side accounting: where usage reports from both attach modes (the wasm filter's
//! Report call, the ext_proc response phase) end up: GenAI metrics (tokens, durations, time to
//! first token, time per output token), cost and savings, and a structured debug log line
//! (`LLMSOUP_LOG=info,llmsoup=debug`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use llmsoup_config::Pricing;
use llmsoup_contract::headers::FAIL_OPEN_DECISION;
use llmsoup_contract::v1::UsageReport;
use llmsoup_router::engine::Engine;
use serde::Serialize;

use super::Observer;
use super::metrics::kv;

/// Running totals for one model or decision.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Finished requests.
    pub requests: u64,
    /// Requests whose upstream answered 5xx or never answered.
    pub errors: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cached prompt tokens.
    pub cached_tokens: u64,
    /// Spend in USD.
    pub spent_usd: f64,
    /// Spend avoided versus the baseline model, in USD.
    pub saved_usd: f64,
    /// Requests answered by the gateway itself (`fast_response`), never sent upstream; also
    /// counted in `requests`.
    pub blocked: u64,
    /// Requests refused by a budget or rate limit (429, or the store-unavailable status).
    pub throttled: u64,
}

impl Totals {
    fn add(&mut self, r: &UsageReport, spent: f64, saved: f64) {
        self.requests += 1;
        if r.status == 0 || r.status >= 500 {
            self.errors += 1;
        }
        self.prompt_tokens += r.prompt_tokens;
        self.completion_tokens += r.completion_tokens;
        self.cached_tokens += r.cached_tokens;
        self.spent_usd += spent;
        self.saved_usd += saved;
    }
}

/// What `/stats` reports: totals overall, by model, by decision and by tenant, since the
/// sidecar started (this replica's view; budgets themselves are counted in the shared store).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Everything.
    pub total: Totals,
    /// By model name.
    pub by_model: BTreeMap<String, Totals>,
    /// By decision name (`none` when no decision matched, `fail-open` on the fail-open path).
    pub by_decision: BTreeMap<String, Totals>,
    /// By tenant: the client token's name (`anonymous` without auth).
    pub by_tenant: BTreeMap<String, Totals>,
    /// The response cache.
    pub cache: CacheTotals,
}

/// Response cache counts for one tenant (or all).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheCounts {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests a caching decision sent to the provider.
    pub misses: u64,
    /// Of the misses, requests the cache would not take (`n > 1`, too high a temperature).
    pub skipped: u64,
    /// Spend the hits avoided (USD).
    pub saved_usd: f64,
}

/// `/stats` `cache`: totals, answers stored, and per tenant (client token name; `anonymous`
/// without auth).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheTotals {
    /// All tenants.
    #[serde(flatten)]
    pub total: CacheCounts,
    /// Answers stored since start (by this replica).
    pub stored: u64,
    /// By tenant.
    pub by_tenant: BTreeMap<String, CacheCounts>,
}

/// What the cache did for one request.
#[derive(Debug, Clone, Copy)]
pub enum CacheOutcome {
    /// Answered, saving this much.
    Hit(f64),
    /// Sent upstream.
    Miss,
    /// Sent upstream without a lookup.
    Skipped,
}

/// The tenant's label in `/stats` and metrics.
pub fn tenant_label(tenant: &str) -> &str {
    if tenant.is_empty() { "anonymous" } else { tenant }
}

/// The running totals behind `/stats`, since the sidecar started.
// Keys are configured names (`validate` refuses any other), so these maps stay small; the lock
// is never held across an await.
#[derive(Debug, Default)]
pub struct Accounting {
    stats: Mutex<Stats>,
}

impl Accounting {
    /// A snapshot of the totals.
    pub fn snapshot(&self) -> Stats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records a request a decision's `fast_response` answered locally (no model, no tokens).
    pub fn record_local(&self, decision: &str) {
        if let Ok(mut guard) = self.stats.lock() {
            let stats = &mut *guard;
            for t in [
                &mut stats.total,
                stats.by_decision.entry(decision.to_string()).or_default(),
            ] {
                t.requests += 1;
                t.blocked += 1;
            }
        }
    }

    /// Records a request a budget or rate limit refused.
    pub fn throttled(&self, tenant: &str, model: &str) {
        if let Ok(mut guard) = self.stats.lock() {
            let stats = &mut *guard;
            stats.total.throttled += 1;
            stats
                .by_tenant
                .entry(tenant_label(tenant).to_string())
                .or_default()
                .throttled += 1;
            if !model.is_empty() {
                stats.by_model.entry(model.to_string()).or_default().throttled += 1;
            }
        }
    }

    /// Records what the response cache did for a request of `tenant`.
    pub fn record_cache(&self, tenant: &str, outcome: CacheOutcome) {
        if let Ok(mut guard) = self.stats.lock() {
            let cache = &mut guard.cache;
            // Tenants are configured token names: bounded by the config.
            let per = cache.by_tenant.entry(tenant_label(tenant).to_string()).or_default();
            for c in [&mut cache.total, per] {
                match outcome {
                    CacheOutcome::Hit(saved) => {
                        c.hits += 1;
                        c.saved_usd += saved;
                    }
                    CacheOutcome::Miss => c.misses += 1,
                    CacheOutcome::Skipped => {
                        c.misses += 1;
                        c.skipped += 1;
                    }
                }
            }
        }
    }

    fn add(&self, r: &UsageReport, spent: f64, saved: f64) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.total.add(r, spent, saved);
            stats
                .by_tenant
                .entry(tenant_label(&r.tenant).to_string())
                .or_default()
                .add(r, spent, saved);
            stats.by_model.entry(r.model.clone()).or_default().add(r, spent, saved);
            let decision = if r.decision.is_empty() {
                "none"
            } else {
                r.decision.as_str()
            };
            stats
                .by_decision
                .entry(decision.to_string())
                .or_default()
                .add(r, spent, saved);
        }
    }
}

/// USD for the tokens of a report at `pricing`.
pub fn cost(p: &Pricing, r: &UsageReport) -> f64 {
    let cached = r.cached_tokens.min(r.prompt_tokens) as f64;
    let uncached = r.prompt_tokens as f64 - cached;
    (uncached * p.prompt_per_1m
        + cached * p.cached_prompt_per_1m.unwrap_or(p.prompt_per_1m)
        + r.completion_tokens as f64 * p.completion_per_1m)
        / 1e6
}

/// Most reports one `Router/Report` call may carry: the wasm filter queues at most 4096 between
/// two calls, so a genuine call never has more.
pub const MAX_REPORTS_PER_CALL: usize = 4096;

/// Largest token count one request may report (no model's context comes near it): spend is
/// computed from these counts, so they bound what one report can add.
pub const MAX_TOKENS: u64 = 10_000_000;

/// Longest duration (and time to first byte) a request may report: one day.
pub const MAX_DURATION_US: u64 = 86_400 * 1_000_000;

/// Why a report was refused; the value is the `reason` label of `llmsoup_reports_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The model is not configured (a forged or stale report).
    UnknownModel,
    /// The decision is not configured (nor `fail-open`, nor empty).
    UnknownDecision,
    /// A token count above [`MAX_TOKENS`].
    Tokens,
    /// A duration above [`MAX_DURATION_US`], or a first byte after the end.
    Duration,
    /// A status outside 100..=599 (0 means no response).
    Status,
    /// Beyond [`MAX_REPORTS_PER_CALL`] in one call.
    TooMany,
    /// The tenant is not a configured token name.
    UnknownTenant,
    /// The wasm filter's local route record does not match the running config (a plan from
    /// before a reload, or a forged record): the usage is accounted, the route not published.
    LocalRoute,
}

impl Dropped {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::UnknownModel => "unknown_model",
            Dropped::UnknownDecision => "unknown_decision",
            Dropped::Tokens => "tokens_out_of_range",
            Dropped::Duration => "duration_out_of_range",
            Dropped::Status => "status_out_of_range",
            Dropped::TooMany => "too_many",
            Dropped::UnknownTenant => "unknown_tenant",
            Dropped::LocalRoute => "local_route_invalid",
        }
    }
}

/// Checks a report before it touches any state. Reports arrive over the gRPC port (the wasm
/// filter's Report call) as well as from the ext_proc response phase; both carry names that
/// become metric labels and numbers that become spend, so only configured names and sane
/// values get through: label cardinality stays bounded by the config, and one report can add
/// neither unbounded spend nor mark an unknown model down.
pub fn validate(engine: &Engine, r: &UsageReport) -> Result<(), Dropped> {
    let config = engine.config();
    if config.model(&r.model).is_none()
        || r.failed_models.len() >= llmsoup_config::MAX_CHAIN
        || r.failed_models.iter().any(|m| config.model(m).is_none())
        || r.skips.len() > llmsoup_config::MAX_CHAIN
        || r.skips.iter().any(|s| config.model(&s.model).is_none())
    {
        return Err(Dropped::UnknownModel);
    }
    if !(r.decision.is_empty()
        || r.decision == FAIL_OPEN_DECISION
        || config.decisions.iter().any(|d| d.name == r.decision))
    {
        return Err(Dropped::UnknownDecision);
    }
    if !(r.tenant.is_empty() || config.auth.tokens.iter().any(|t| t.name == r.tenant)) {
        return Err(Dropped::UnknownTenant);
    }
    if [r.prompt_tokens, r.completion_tokens, r.cached_tokens]
        .iter()
        .any(|&n| n > MAX_TOKENS)
    {
        return Err(Dropped::Tokens);
    }
    if r.duration_us > MAX_DURATION_US
        || r.time_to_first_byte_us > MAX_DURATION_US
        || (r.duration_us > 0 && r.time_to_first_byte_us > r.duration_us)
    {
        return Err(Dropped::Duration);
    }
    if r.status != 0 && !(100..=599).contains(&r.status) {
        return Err(Dropped::Status);
    }
    Ok(())
}

/// Counts `n` refused reports.
pub fn dropped(observer: &Observer, reason: Dropped, n: u64) {
    observer
        .metrics()
        .reports_dropped
        .add(n, &[kv("reason", reason.as_str())]);
}

/// Records one finished request, if [`validate`] accepts it (else counts it as dropped): the
/// backends' health and latency, metrics, cost and savings against `engine`'s config, the totals
/// and the feed.
pub fn record(observer: &Observer, engine: &Engine, r: &UsageReport) {
    if let Err(reason) = validate(engine, r) {
        tracing::debug!(model = %r.model.escape_debug(), decision = %r.decision.escape_debug(), reason = reason.as_str(), "usage report dropped");
        dropped(observer, reason, 1);
        return;
    }
    let ok = r.status != 0 && r.status < 500;
    let ttft_ms = (r.time_to_first_byte_us > 0).then(|| r.time_to_first_byte_us as f64 / 1e3);
    let tpot_ms = (r.usage_seen && r.completion_tokens > 1 && r.duration_us > r.time_to_first_byte_us)
        .then(|| (r.duration_us - r.time_to_first_byte_us) as f64 / 1e3 / (r.completion_tokens - 1) as f64);
    let m = observer.metrics();
    if r.decision != FAIL_OPEN_DECISION {
        observer.backends().record(&r.model, ok, ttft_ms, tpot_ms);
        // Attempts Envoy failed over from: each is a failure of its model, like any other.
        for failed in &r.failed_models {
            observer.backends().record(failed, false, None, None);
            m.fallback_failed.add(1, &[kv("gen_ai.request.model", failed.clone())]);
        }
        // A provider's `retry-after` on a chain attempt: leave the model out of later requests
        // for that long (capped), then use it again.
        let cap = engine.config().routing.fallback.max_skip_s;
        for s in &r.skips {
            let seconds = s.seconds.min(cap);
            if seconds > 0 {
                observer
                    .backends()
                    .skip(&s.model, std::time::Duration::from_secs(seconds));
            }
        }
    }
    let model = kv("gen_ai.request.model", r.model.clone());
    if r.decision == FAIL_OPEN_DECISION {
        m.fail_open.add(1, std::slice::from_ref(&model));
    }
    let status = kv("http.response.status_code", i64::from(r.status));
    m.request_duration
        .record(r.duration_us as f64 / 1e6, &[model.clone(), status.clone()]);
    if r.time_to_first_byte_us > 0 {
        m.time_to_first_token
            .record(r.time_to_first_byte_us as f64 / 1e6, std::slice::from_ref(&model));
    }
    if r.usage_seen {
        for (kind, n) in [
            ("input", r.prompt_tokens),
            ("output", r.completion_tokens),
            ("cached_input", r.cached_tokens),
        ] {
            if n > 0 || kind != "cached_input" {
                m.token_usage.record(n, &[model.clone(), kv("gen_ai.token.type", kind)]);
            }
        }
        if r.completion_tokens > 1 && r.duration_us > r.time_to_first_byte_us {
            let per_token = (r.duration_us - r.time_to_first_byte_us) as f64 / 1e6 / (r.completion_tokens - 1) as f64;
            m.time_per_output_token.record(per_token, std::slice::from_ref(&model));
        }
    }
    let (mut spent, mut saved) = (0.0, 0.0);
    if r.usage_seen
        && let Some(p) = engine.config().model(&r.model).and_then(|c| c.pricing.as_ref())
    {
        spent = cost(p, r);
        m.cost.add(spent, std::slice::from_ref(&model));
        if let Some(base) = engine.baseline_pricing() {
            saved = (cost(base, r) - spent).max(0.0);
            m.saved.add(saved, &[model]);
        }
    }
    let tenant = kv("tenant", tenant_label(&r.tenant).to_string());
    m.tenant_requests.add(1, std::slice::from_ref(&tenant));
    if r.usage_seen {
        for (kind, n) in [("input", r.prompt_tokens), ("output", r.completion_tokens)] {
            m.tenant_tokens.add(n, &[tenant.clone(), kv("gen_ai.token.type", kind)]);
        }
        m.tenant_cost.add(spent, &[tenant]);
        // Tokens and spend count against the tenant's, its group's and the model's budgets in
        // the shared store (a no-op without budgets).
        observer.budgets().charge(
            engine.config(),
            &r.tenant,
            &r.model,
            r.prompt_tokens + r.completion_tokens,
            spent,
        );
    }
    observer.accounting().add(r, spent, saved);
    observer.feed().finished(r, spent, saved);
    tracing::debug!(
        request_id = %r.request_id,
        model = %r.model,
        decision = %r.decision,
        status = r.status,
        stream = r.stream,
        prompt_tokens = r.prompt_tokens,
        completion_tokens = r.completion_tokens,
        cached_tokens = r.cached_tokens,
        usage_seen = r.usage_seen,
        ttfb_us = r.time_to_first_byte_us,
        duration_us = r.duration_us,
        "usage report"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmsoup_config::load_str;

    fn engine() -> Engine {
        let text = "
providers:
  - {name: p, base_url: 'http://127.0.0.1:1/v1'}
models:
  - {name: cheap, provider: p, pricing: {prompt_per_1m: 1.0, completion_per_1m: 2.0}}
  - {name: strong, provider: p, pricing: {prompt_per_1m: 10.0, completion_per_1m: 30.0}}
signals:
  keywords:
    - {name: code, keywords: [python]}
decisions:
  - name: coding
    rules: {type: keyword, name: code}
    modelRefs: [{model: strong}]
routing:
  default_model: cheap
";
        Engine::new(load_str(text).unwrap()).unwrap()
    }

    fn report() -> UsageReport {
        UsageReport {
            model: "strong".into(),
            decision: "coding".into(),
            status: 200,
            prompt_tokens: 1_000,
            completion_tokens: 200,
            usage_seen: true,
            time_to_first_byte_us: 50_000,
            duration_us: 900_000,
            ..UsageReport::default()
        }
    }

    #[test]
    fn genuine_reports_pass() {
        let e = engine();
        assert_eq!(validate(&e, &report()), Ok(()));
        for decision in ["", "fail-open"] {
            let r = UsageReport {
                decision: decision.into(),
                ..report()
            };
            assert_eq!(validate(&e, &r), Ok(()), "{decision:?}");
        }
        // No response at all (status 0, nothing timed) is a genuine upstream failure.
        let r = UsageReport {
            status: 0,
            duration_us: 0,
            time_to_first_byte_us: 0,
            ..report()
        };
        assert_eq!(validate(&e, &r), Ok(()));
        let r = UsageReport {
            prompt_tokens: MAX_TOKENS,
            duration_us: MAX_DURATION_US,
            ..report()
        };
        assert_eq!(validate(&e, &r), Ok(()));
    }

    #[test]
    fn forged_or_corrupt_reports_are_dropped() {
        let e = engine();
        let cases = [
            (
                UsageReport {
                    model: "invented-1".into(),
                    ..report()
                },
                Dropped::UnknownModel,
            ),
            (
                UsageReport {
                    model: String::new(),
                    ..report()
                },
                Dropped::UnknownModel,
            ),
            (
                UsageReport {
                    decision: "invented".into(),
                    ..report()
                },
                Dropped::UnknownDecision,
            ),
            (
                UsageReport {
                    prompt_tokens: 1_000_000_000,
                    ..report()
                },
                Dropped::Tokens,
            ),
            (
                UsageReport {
                    completion_tokens: MAX_TOKENS + 1,
                    ..report()
                },
                Dropped::Tokens,
            ),
            (
                UsageReport {
                    cached_tokens: u64::MAX,
                    ..report()
                },
                Dropped::Tokens,
            ),
            (
                UsageReport {
                    duration_us: u64::MAX,
                    ..report()
                },
                Dropped::Duration,
            ),
            (
                UsageReport {
                    time_to_first_byte_us: 2_000_000,
                    ..report()
                },
                Dropped::Duration,
            ),
            (UsageReport { status: 99, ..report() }, Dropped::Status),
            (
                UsageReport {
                    status: 600,
                    ..report()
                },
                Dropped::Status,
            ),
            (
                UsageReport {
                    status: u32::MAX,
                    ..report()
                },
                Dropped::Status,
            ),
        ];
        for (r, why) in cases {
            assert_eq!(validate(&e, &r), Err(why), "{r:?}");
        }
    }

    #[test]
    fn a_retry_after_skip_is_kept_capped_and_checked() {
        use llmsoup_contract::v1::ModelSkip;
        let e = engine();
        let observer = Observer::default();
        let skip = |model: &str, seconds| ModelSkip {
            model: model.into(),
            seconds,
        };
        // A forged model in a skip is no better than one in `model`.
        let forged = UsageReport {
            skips: vec![skip("ghost", 5)],
            ..report()
        };
        assert_eq!(validate(&e, &forged), Err(Dropped::UnknownModel));
        // An hour asked, `routing.fallback.max_skip_s` (60 by default) kept.
        record(
            &observer,
            &e,
            &UsageReport {
                skips: vec![skip("cheap", 3600), skip("strong", 0)],
                failed_models: vec!["cheap".into()],
                ..report()
            },
        );
        assert!(observer.backends().is_skipped("cheap"));
        let left = observer.backends().snapshot()["cheap"].skip_s.unwrap();
        assert!(left > 59.0 && left <= 60.0, "{left}");
        // `retry-after: 0` is no pause.
        assert!(!observer.backends().is_skipped("strong"));
    }

    #[test]
    fn a_dropped_report_changes_no_totals() {
        let e = engine();
        let observer = Observer::default();
        let before = observer.stats();
        record(
            &observer,
            &e,
            &UsageReport {
                model: "ghost-model-for-accounting-test".into(),
                ..report()
            },
        );
        record(
            &observer,
            &e,
            &UsageReport {
                prompt_tokens: 5_000_000_000,
                ..report()
            },
        );
        let after = observer.stats();
        assert!(!after.by_model.contains_key("ghost-model-for-accounting-test"));
        // Other tests may record concurrently, but none adds a billion tokens.
        assert!(after.total.prompt_tokens < before.total.prompt_tokens + 1_000_000_000);
    }

    #[test]
    fn spend_per_report_is_bounded() {
        let e = engine();
        let pricing = e.config().model("strong").unwrap().pricing.clone().unwrap();
        let worst = UsageReport {
            prompt_tokens: MAX_TOKENS,
            completion_tokens: MAX_TOKENS,
            ..report()
        };
        assert_eq!(validate(&e, &worst), Ok(()));
        assert!(cost(&pricing, &worst) <= 400.0, "{}", cost(&pricing, &worst));
    }
}
