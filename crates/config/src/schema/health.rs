//! Provider health as Envoy enforces it: `providers[].outlier_detection`,
//! `providers[].circuit_breakers`.

use super::*;

/// Envoy's outlier detection on a provider's clusters (the provider's own and, for models in
/// fallback chains, each model's): a host that fails `consecutive_5xx` times in a row (5xx,
/// reset, connect failure) is ejected for `base_ejection_time_ms` (longer each time it is
/// ejected again). An ejected provider gets no requests: a chain fails over past it without an
/// attempt, a request with nowhere else to go gets a JSON 503 at once.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// `false` turns it off (requests always reach the provider).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Failures in a row that eject the provider.
    #[serde(default = "default_consecutive_5xx")]
    pub consecutive_5xx: u32,
    /// How often Envoy re-evaluates ejections (and brings hosts back), in milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// How long a first ejection lasts, in milliseconds.
    #[serde(default = "default_base_ejection_time_ms")]
    pub base_ejection_time_ms: u64,
    /// The longest an ejection lasts, however often it recurs, in milliseconds.
    #[serde(default = "default_max_ejection_time_ms")]
    pub max_ejection_time_ms: u64,
}

fn default_consecutive_5xx() -> u32 {
    5
}
fn default_interval_ms() -> u64 {
    10_000
}
fn default_base_ejection_time_ms() -> u64 {
    30_000
}
fn default_max_ejection_time_ms() -> u64 {
    300_000
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            enabled: true,
            consecutive_5xx: default_consecutive_5xx(),
            interval_ms: default_interval_ms(),
            base_ejection_time_ms: default_base_ejection_time_ms(),
            max_ejection_time_ms: default_max_ejection_time_ms(),
        }
    }
}

/// Envoy's circuit breakers on a provider's clusters: past these, requests fail at once with a
/// JSON 503 (`upstream_overflow`) instead of queueing without bound.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// Open connections to the provider.
    #[serde(default = "default_limit")]
    pub max_connections: u32,
    /// Requests waiting for a connection.
    #[serde(default = "default_limit")]
    pub max_pending_requests: u32,
    /// Requests in flight.
    #[serde(default = "default_limit")]
    pub max_requests: u32,
}

fn default_limit() -> u32 {
    1024
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: default_limit(),
            max_pending_requests: default_limit(),
            max_requests: default_limit(),
        }
    }
}

/// Checks `providers[i].outlier_detection` and `.circuit_breakers` (`at` is `providers[i]`).
pub(crate) fn validate(p: &ProviderConfig, at: &str) -> Result<(), ConfigError> {
    let o = &p.outlier_detection;
    let c = &p.circuit_breakers;
    for (key, value) in [
        ("outlier_detection.consecutive_5xx", u64::from(o.consecutive_5xx)),
        ("outlier_detection.interval_ms", o.interval_ms),
        ("outlier_detection.base_ejection_time_ms", o.base_ejection_time_ms),
        ("circuit_breakers.max_connections", u64::from(c.max_connections)),
        (
            "circuit_breakers.max_pending_requests",
            u64::from(c.max_pending_requests),
        ),
        ("circuit_breakers.max_requests", u64::from(c.max_requests)),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(format!("{at}.{key}"), "must be at least 1"));
        }
    }
    if o.max_ejection_time_ms < o.base_ejection_time_ms {
        return Err(ConfigError::invalid(
            format!("{at}.outlier_detection.max_ejection_time_ms"),
            "must be at least base_ejection_time_ms",
        ));
    }
    Ok(())
}
