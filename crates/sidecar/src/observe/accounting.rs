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

/// What `/stats` reports: totals overall, by model and by decision, since the sidecar started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Everything.
    pub total: Totals,
    /// By model name.
    pub by_model: BTreeMap<String, Totals>,
    /// By decision name (`none` when no decision matched, `fail-open` on the fail-open path).
    pub by_decision: BTreeMap<String, Totals>,
}

/// The running totals behind `/stats`, since the sidecar started.
// Label values are configured names, so these maps stay small; the lock is never held across an
// await.
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

    fn add(&self, r: &UsageReport, spent: f64, saved: f64) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.total.add(r, spent, saved);
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

/// Records one finished request: the backends' health and latency, metrics, cost and savings
/// against `engine`'s config, the totals and the feed.
pub fn record(observer: &Observer, engine: &Engine, r: &UsageReport) {
    let ok = r.status != 0 && r.status < 500;
    let ttft_ms = (r.time_to_first_byte_us > 0).then(|| r.time_to_first_byte_us as f64 / 1e3);
    let tpot_ms = (r.usage_seen && r.completion_tokens > 1 && r.duration_us > r.time_to_first_byte_us)
        .then(|| (r.duration_us - r.time_to_first_byte_us) as f64 / 1e3 / (r.completion_tokens - 1) as f64);
    if r.decision != FAIL_OPEN_DECISION {
        observer.backends().record(&r.model, ok, ttft_ms, tpot_ms);
    }
    let m = observer.metrics();
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
