//! Provider health, enforced by Envoy: outlier detection and circuit breakers on every cluster
//! that reaches a provider (`provider_<name>`, and `fallback_model_<name>` for chain members).

use serde_json::{Value, json};

use llmsoup_config::ProviderConfig;

use super::duration;

/// Adds `p`'s outlier detection and circuit breakers to one of its clusters.
pub(crate) fn apply(p: &ProviderConfig, cluster: &mut Value) {
    let c = &p.circuit_breakers;
    cluster["circuit_breakers"] = json!({"thresholds": [{
        "priority": "DEFAULT",
        "max_connections": c.max_connections,
        "max_pending_requests": c.max_pending_requests,
        "max_requests": c.max_requests,
        "track_remaining": true,
    }]});
    let o = &p.outlier_detection;
    if !o.enabled {
        return;
    }
    cluster["outlier_detection"] = json!({
        // Resets and connect failures count with 5xx (no split of local-origin errors).
        "consecutive_5xx": o.consecutive_5xx,
        "interval": duration(o.interval_ms),
        "base_ejection_time": duration(o.base_ejection_time_ms),
        "max_ejection_time": duration(o.max_ejection_time_ms),
        // A provider is one host: Envoy's default (10 %) would still eject it, say so plainly.
        "max_ejection_percent": 100,
        // Only consecutive failures eject: success-rate ejection needs five hosts or more.
        "enforcing_success_rate": 0,
    });
    // Envoy's default panic threshold (50 %) would keep sending to an ejected sole host.
    cluster["common_lb_config"] = json!({"healthy_panic_threshold": {"value": 0}});
}

/// Circuit breakers of a chain's aggregate cluster: Envoy counts a chain's retries there, and
/// its default (3 retries in flight per cluster) would silently stop failing over under load.
pub(crate) fn aggregate(max_requests: u32, cluster: &mut Value) {
    cluster["circuit_breakers"] = json!({"thresholds": [{
        "priority": "DEFAULT",
        "max_requests": max_requests,
        "max_retries": max_requests,
    }]});
}
