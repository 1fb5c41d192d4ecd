//! Budgets and rate limits in Envoy: the `ratelimit` HTTP filter, asking the sidecar's rate limit
//! service (RLS v3, on the gRPC port, with the gRPC token) before each provider call, with one
//! descriptor per request (the model route's model, and the tenant the auth step derived from
//! the client token); and the local-reply mappers that give its refusals their status.
//!
//! The filter sits after the attach filter (ext_proc or wasm) and before the router, in both
//! modes: only then are the tenant (set after the token is checked) and the chosen model known,
//! and the route is the model route. Requests answered by the gateway itself (a plugin's reply, a
//! refusal) never reach it, so they count against no budget.

use serde_json::{Value, json};

use llmsoup_config::Config;
use llmsoup_contract::ApiError;
use llmsoup_contract::budget::{BUDGET_HEADER, DOMAIN, MODEL_KEY, TENANT_HEADER, TENANT_KEY, UNAVAILABLE};

use crate::{SIDECAR_CLUSTER, duration, error_value, grpc_metadata};

/// Name of the rate limit filter.
pub const RATELIMIT_FILTER: &str = "envoy.filters.http.ratelimit";

/// How long Envoy waits for the rate limit service beyond the store's own bound, in
/// milliseconds: the sidecar answers within `budgets.store.timeout_ms` (a store that does not
/// answer by then is the service's verdict to give, not a transport error).
const RLS_MARGIN_MS: u64 = 250;

/// Whether a limit can apply to requests on `model`'s route: any per-token or per-group limit, or
/// one on the model. Routes no limit can apply to make no rate limit call at all.
pub fn route_may_be_limited(config: &Config, model: &str) -> bool {
    let b = &config.budgets;
    b.enabled() && (!b.tokens.is_empty() || !b.groups.is_empty() || b.models.contains_key(model))
}

/// The model route's `rate_limits`: the model, and the tenant when the request has one (anonymous
/// requests still count against the model's limits).
pub fn route_rate_limits(model: &str) -> Value {
    json!([{
        "actions": [
            {"generic_key": {"descriptor_key": MODEL_KEY, "descriptor_value": model}},
            {"request_headers": {"header_name": TENANT_HEADER, "descriptor_key": TENANT_KEY, "skip_if_absent": true}},
        ]
    }])
}

/// The `ratelimit` HTTP filter, when any budget is configured.
pub fn filter(config: &Config) -> Option<Value> {
    let b = &config.budgets;
    if !b.enabled() {
        return None;
    }
    let store_ms = b.store.as_ref().map_or(100, |s| s.timeout_ms);
    let timeout = duration(store_ms + RLS_MARGIN_MS);
    let mut grpc = json!({
        "envoy_grpc": {"cluster_name": SIDECAR_CLUSTER},
        "timeout": timeout,
    });
    if let Some(md) = grpc_metadata(config) {
        grpc["initial_metadata"] = md;
    }
    Some(json!({
        "name": RATELIMIT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": DOMAIN,
            "request_type": "external",
            "timeout": timeout,
            // The sidecar unreachable: refuse when a configured limit fails closed (spend caps by
            // default), with `budgets.unavailable_status`; let requests through otherwise.
            "failure_mode_deny": b.deny_when_unreachable(),
            "status_on_error": {"code": b.unavailable_status},
            // The refusal carries its own JSON body, content-type and retry-after (from the
            // service); Envoy's `x-envoy-ratelimited` adds nothing a client needs.
            "disable_x_envoy_ratelimited_header": true,
            "rate_limit_service": {"grpc_service": grpc, "transport_api_version": "V3"},
        }
    }))
}

/// Local-reply mappers, first in the list: a refusal because the budgets cannot be checked gets
/// a JSON body, `retry-after` and `x-llmsoup-budget: unavailable`, with the filter's
/// `status_on_error` (`budgets.unavailable_status`). The service signals it with a gRPC error
/// (only when a limit that fails closed applies), as Envoy does when the sidecar cannot be
/// reached at all: an over-limit answer could only be a 429.
pub fn local_reply_mappers(config: &Config) -> Vec<Value> {
    let b = &config.budgets;
    if !b.enabled() {
        return Vec::new();
    }
    let unavailable = ApiError::budget_unavailable(b.unavailable_status);
    vec![json!({
        "filter": {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": "response.code_details == 'rate_limiter_error'",
            }
        }},
        "body_format_override": {"json_format": error_value(&unavailable)},
        "headers_to_add": [
            {"header": {"key": "retry-after", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": BUDGET_HEADER, "value": UNAVAILABLE}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        ],
    })]
}
