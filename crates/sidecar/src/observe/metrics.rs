//! Metrics: OpenTelemetry instruments exported in Prometheus text format on the admin port.
//!
//! Names follow the OpenTelemetry GenAI conventions where they exist
//! (`gen_ai.client.token.usage`, `gen_ai.server.request.duration`,
//! `gen_ai.server.time_to_first_token`, `gen_ai.server.time_per_output_token`) and use an
//! `llmsoup.` prefix otherwise. Label values are bounded by the configuration (model, decision,
//! signal and rule names, client token names) or fixed sets (error codes, token types).
//!
//! The instruments live in the server's [`crate::observe::Observer`]; without [`install`] (tests,
//! CLI tools) they record into OpenTelemetry's no-op provider.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _, UpDownCounter};

/// Latency buckets in seconds: 100 µs … 60 s.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Token-count buckets.
const TOKENS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
];

/// Every instrument llmsoup records.
#[derive(Clone)]
pub struct Metrics {
    /// Requests by decision, model and outcome (routed, passthrough, blocked).
    pub requests: Counter<u64>,
    /// Requests answered locally with an error, by code.
    pub rejections: Counter<u64>,
    /// Time spent routing (signals + decision + selection).
    pub routing_duration: Histogram<f64>,
    /// Time each signal took.
    pub signal_duration: Histogram<f64>,
    /// Matches by signal and rule.
    pub signal_matches: Counter<u64>,
    /// Signals that failed (and counted as no match).
    pub signal_errors: Counter<u64>,
    /// Decisions whose verdict hinged on a failed signal, by signal, decision and action
    /// (`block`: treated as matched, `skip`: as not matched).
    pub signal_error_decisions: Counter<u64>,
    /// Requests served on the fail-open path.
    pub fail_open: Counter<u64>,
    /// Fallback-chain attempts that failed before another model answered, by model.
    pub fallback_failed: Counter<u64>,
    /// Requests by response path (upstream, fast_response, blocked) and decision.
    pub response_path: Counter<u64>,
    /// Tokens per request by type (input, output, cached_input).
    pub token_usage: Histogram<u64>,
    /// Upstream request duration.
    pub request_duration: Histogram<f64>,
    /// Time to the first response byte.
    pub time_to_first_token: Histogram<f64>,
    /// Time per output token after the first.
    pub time_per_output_token: Histogram<f64>,
    /// Spend in USD by model.
    pub cost: Counter<f64>,
    /// What the same tokens would have cost on the baseline model, minus the spend.
    pub saved: Counter<f64>,
    /// Usage reports refused (unknown model or decision, values out of range, too many in one
    /// call), by reason; a forged or corrupt report changes nothing else.
    pub reports_dropped: Counter<u64>,
    /// Response cache lookups by result (`hit`, `miss`, `skipped`), kind of hit (`exact`,
    /// `semantic`, `dedup`; `none` otherwise), tenant and decision.
    pub cache_lookups: Counter<u64>,
    /// Spend the response cache avoided (the stored answer's tokens at its model's prices), by
    /// tenant.
    pub cache_saved: Counter<f64>,
    /// Answers offered to the cache by result (`stored`, `not_cacheable`).
    pub cache_stores: Counter<u64>,
    /// Cache store failures (unreachable or slow Redis) by backend and operation; each one
    /// degrades to a miss.
    pub cache_errors: Counter<u64>,
    /// Finished requests by tenant (the client token's name, `anonymous` without auth).
    pub tenant_requests: Counter<u64>,
    /// Tokens by tenant and type (input, output).
    pub tenant_tokens: Counter<u64>,
    /// Spend in USD by tenant.
    pub tenant_cost: Counter<f64>,
    /// Requests refused by a budget or rate limit, by tenant, model and limit
    /// (`scope:limit`, or `unavailable` when the budget store could not be reached).
    pub throttled: Counter<u64>,
    /// Open `/v1/events` streams (dashboards watching the decision feed).
    pub dashboard_subscribers: UpDownCounter<i64>,
    /// Feed events a slow dashboard skipped.
    pub dashboard_dropped: Counter<u64>,
}

impl Metrics {
    /// Instruments that record nothing (tests, tools).
    pub fn noop() -> Self {
        Metrics::new(&opentelemetry::metrics::noop::NoopMeterProvider::new().meter("llmsoup"))
    }

    /// The instruments of `meter`.
    pub fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, desc: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(desc)
                .with_boundaries(SECONDS.to_vec())
                .build()
        };
        Metrics {
            requests: meter
                .u64_counter("llmsoup.requests")
                .with_description("Requests by decision, model and outcome")
                .build(),
            rejections: meter
                .u64_counter("llmsoup.rejections")
                .with_description("Requests answered locally with an error, by code")
                .build(),
            routing_duration: seconds("llmsoup.routing.duration", "Time spent routing a request"),
            signal_duration: seconds("llmsoup.signal.duration", "Time each signal took"),
            signal_matches: meter
                .u64_counter("llmsoup.signal.matches")
                .with_description("Signal rule matches")
                .build(),
            signal_errors: meter
                .u64_counter("llmsoup.signal.errors")
                .with_description("Signal evaluations that failed and counted as no match")
                .build(),
            signal_error_decisions: meter
                .u64_counter("llmsoup.signal.error.decisions")
                .with_description("Decisions whose verdict hinged on a failed signal, by signal, decision and action")
                .build(),
            fail_open: meter
                .u64_counter("llmsoup.fail_open")
                .with_description("Requests served on the fail-open path (sidecar unavailable)")
                .build(),
            fallback_failed: meter
                .u64_counter("llmsoup.fallback.failed_attempts")
                .with_description("Fallback-chain attempts that failed (connect error, reset, 5xx, 429) before the next model, by model")
                .build(),
            response_path: meter
                .u64_counter("llmsoup.response.path")
                .with_description("Requests by response path (upstream, fast_response, blocked) and decision")
                .build(),
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Tokens per request")
                .with_boundaries(TOKENS.to_vec())
                .build(),
            request_duration: seconds("gen_ai.server.request.duration", "Upstream request duration"),
            time_to_first_token: seconds("gen_ai.server.time_to_first_token", "Time to the first response byte"),
            time_per_output_token: seconds("gen_ai.server.time_per_output_token", "Time per output token"),
            cost: meter
                .f64_counter("llmsoup.cost_usd")
                .with_unit("USD")
                .with_description("Spend by model")
                .build(),
            saved: meter
                .f64_counter("llmsoup.saved_usd")
                .with_unit("USD")
                .with_description("Spend avoided versus the baseline model")
                .build(),
            reports_dropped: meter
                .u64_counter("llmsoup.reports.dropped")
                .with_description("Usage reports refused (unknown model or decision, out-of-range values), by reason")
                .build(),
            cache_lookups: meter
                .u64_counter("llmsoup.cache.lookups")
                .with_description("Response cache lookups by result, kind, tenant and decision")
                .build(),
            cache_saved: meter
                .f64_counter("llmsoup.cache.saved_usd")
                .with_unit("USD")
                .with_description("Spend the response cache avoided, by tenant")
                .build(),
            cache_stores: meter
                .u64_counter("llmsoup.cache.stores")
                .with_description("Answers offered to the response cache, by result")
                .build(),
            cache_errors: meter
                .u64_counter("llmsoup.cache.errors")
                .with_description("Response cache store failures (each a miss), by backend and operation")
                .build(),
            tenant_requests: meter
                .u64_counter("llmsoup.tenant.requests")
                .with_description("Finished requests by tenant (client token name)")
                .build(),
            tenant_tokens: meter
                .u64_counter("llmsoup.tenant.tokens")
                .with_unit("{token}")
                .with_description("Tokens by tenant and type")
                .build(),
            tenant_cost: meter
                .f64_counter("llmsoup.tenant.cost_usd")
                .with_unit("USD")
                .with_description("Spend by tenant")
                .build(),
            throttled: meter
                .u64_counter("llmsoup.budget.throttled")
                .with_description("Requests refused by a budget or rate limit, by tenant, model and limit")
                .build(),
            dashboard_subscribers: meter
                .i64_up_down_counter("llmsoup.dashboard.subscribers")
                .with_description("Open decision-feed streams (dashboards)")
                .build(),
            dashboard_dropped: meter
                .u64_counter("llmsoup.dashboard.dropped_events")
                .with_description("Decision-feed events skipped by subscribers that fell behind")
                .build(),
        }
    }
}

/// Instruments wired to a Prometheus registry (also installed as the process's OpenTelemetry
/// meter provider); call once, at server start.
pub fn install() -> anyhow::Result<(Metrics, prometheus::Registry)> {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        .without_target_info()
        .build()?;
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(exporter)
        .build();
    let meter = provider.meter("llmsoup");
    opentelemetry::global::set_meter_provider(provider);
    Ok((Metrics::new(&meter), registry))
}

/// The Prometheus text exposition of every metric in `registry`.
pub fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder as _;
    let mut out = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A label.
pub fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}
