//! Response-side accounting: where usage reports from both attach modes (the wasm filter's
//! Report call, the ext_proc response phase) end up. Today: a structured debug log line per
//! request (`LLMSOUP_LOG=info,llmsoup=debug`); metrics come next.

use llmsoup_proto::v1::UsageReport;

/// Records one finished request.
pub fn record(r: &UsageReport) {
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
