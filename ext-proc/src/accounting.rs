//! Response-side accounting: where usage reports from both attach modes (the wasm filter's
//! Report call, the ext_proc response phase) end up: GenAI metrics (tokens, durations, time to
//! first token, time per output token), cost and savings, and a structured debug log line
//! (`LLMSOUP_LOG=info,llmsoup=debug`).

use llmsoup_proto::v1::UsageReport;

use crate::config::Pricing;
use crate::engine::Engine;
use crate::metrics::{self, kv};

/// USD for the tokens of a report at `pricing`.
pub fn cost(p: &Pricing, r: &UsageReport) -> f64 {
    let cached = r.cached_tokens.min(r.prompt_tokens) as f64;
    let uncached = r.prompt_tokens as f64 - cached;
    (uncached * p.prompt_per_1m
        + cached * p.cached_prompt_per_1m.unwrap_or(p.prompt_per_1m)
        + r.completion_tokens as f64 * p.completion_per_1m)
        / 1e6
}

/// Records one finished request.
pub fn record(engine: &Engine, r: &UsageReport) {
    let m = metrics::get();
    let model = kv("gen_ai.request.model", r.model.clone());
    if r.decision == "fail-open" {
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
        if let Some(p) = engine.config().model(&r.model).and_then(|c| c.pricing.as_ref()) {
            let spent = cost(p, r);
            m.cost.add(spent, std::slice::from_ref(&model));
            if let Some(base) = engine.baseline_pricing() {
                m.saved.add((cost(base, r) - spent).max(0.0), &[model]);
            }
        }
    }
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
