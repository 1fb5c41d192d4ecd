//! Token budgets and rate limits: `budgets:`. Enforced by Envoy's `ratelimit` filter, which asks
//! the sidecar's rate limit service (RLS v3) before each provider call; counters live in Redis so
//! every replica (and a restarted sidecar) sees the same totals.

use std::collections::BTreeMap;

use super::*;

/// Limits for one client token, team or model. Every limit is optional; an empty entry is refused.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute (fixed one-minute windows, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Prompt + completion tokens per minute. Tokens are known only once a response ends, so a
    /// request is refused when the minute's total has already reached the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Spend per UTC day, in USD, priced with the models' `pricing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<f64>,
    /// Spend per UTC calendar month, in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_month: Option<f64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Whether a spend cap is set.
    pub fn has_spend_cap(&self) -> bool {
        self.usd_per_day.is_some() || self.usd_per_month.is_some()
    }

    /// Whether a rate limit (requests or tokens per minute) is set.
    pub fn has_rate_limit(&self) -> bool {
        self.requests_per_minute.is_some() || self.tokens_per_minute.is_some()
    }
}

/// Where budget counters are kept.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetStore {
    /// Redis URL (`redis://[:password@]host:port[/db]`, `rediss://` for TLS). Use `${ENV}` to keep
    /// a password out of the file.
    pub redis_url: String,
    /// How long one check or charge may wait for Redis, in milliseconds; past it the store counts
    /// as unavailable (see `rate_limit_failure_mode`, `spend_failure_mode`).
    #[serde(default = "default_store_timeout_ms")]
    pub timeout_ms: u64,
    /// Prefix of every key llmsoup writes.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

fn default_store_timeout_ms() -> u64 {
    100
}
fn default_key_prefix() -> String {
    "llmsoup:budget".into()
}

/// Budgets and rate limits per client token (`auth.tokens[].name`), per team
/// (`auth.tokens[].group`) and per model. A request is refused with 429, an OpenAI-style body
/// and `retry-after` when any limit that applies to it is reached.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// The shared counter store; required when any limit is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<BudgetStore>,
    /// Limits per client token name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, Limits>,
    /// Limits per token group (team): shared by every token of the group.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Limits>,
    /// Limits per model name, over all clients.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, Limits>,
    /// Requests/min and tokens/min while the store is unreachable: `open` (default) lets
    /// requests through, `closed` refuses them.
    #[serde(default)]
    pub rate_limit_failure_mode: FailureMode,
    /// Spend caps while the store is unreachable: `closed` (default) refuses requests a cap
    /// applies to, `open` lets them through (unpriced).
    #[serde(default = "closed")]
    pub spend_failure_mode: FailureMode,
    /// Status of a refusal because the store is unreachable: 503 (default) or 429.
    #[serde(default = "default_unavailable_status")]
    pub unavailable_status: u16,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        BudgetsConfig {
            store: None,
            tokens: BTreeMap::new(),
            groups: BTreeMap::new(),
            models: BTreeMap::new(),
            rate_limit_failure_mode: FailureMode::Open,
            spend_failure_mode: closed(),
            unavailable_status: default_unavailable_status(),
        }
    }
}

fn closed() -> FailureMode {
    FailureMode::Closed
}
fn default_unavailable_status() -> u16 {
    503
}

impl BudgetsConfig {
    /// Whether any limit is configured (then Envoy renders the rate limit filter).
    pub fn enabled(&self) -> bool {
        [&self.tokens, &self.groups, &self.models]
            .iter()
            .any(|m| m.values().any(|l| !l.is_empty()))
    }

    /// Whether a request must be refused when the store is unreachable and the limits in `scopes`
    /// apply to it.
    pub fn fails_closed<'a>(&self, mut scopes: impl Iterator<Item = &'a Limits>) -> bool {
        scopes.any(|l| {
            (l.has_spend_cap() && self.spend_failure_mode == FailureMode::Closed)
                || (l.has_rate_limit() && self.rate_limit_failure_mode == FailureMode::Closed)
        })
    }

    /// Whether Envoy refuses requests when the rate limit service (the sidecar) cannot be
    /// reached at all: as soon as any configured limit would fail closed.
    pub fn deny_when_unreachable(&self) -> bool {
        self.fails_closed(
            self.tokens
                .values()
                .chain(self.groups.values())
                .chain(self.models.values()),
        )
    }

    pub(crate) fn validate(&self, config: &Config) -> Result<(), ConfigError> {
        let groups: std::collections::BTreeSet<&str> =
            config.auth.tokens.iter().filter_map(|t| t.group.as_deref()).collect();
        for (section, map) in [
            ("tokens", &self.tokens),
            ("groups", &self.groups),
            ("models", &self.models),
        ] {
            for (name, limits) in map {
                let at = format!("budgets.{section}.{name}");
                let known = match section {
                    "tokens" => config.auth.tokens.iter().any(|t| &t.name == name),
                    "groups" => groups.contains(name.as_str()),
                    _ => config.model(name).is_some(),
                };
                if !known {
                    let what = match section {
                        "tokens" => "no `auth.tokens` entry has this name",
                        "groups" => "no `auth.tokens` entry has this group",
                        _ => "not a configured model",
                    };
                    return Err(ConfigError::invalid(at, what));
                }
                if limits.is_empty() {
                    return Err(ConfigError::invalid(
                        at,
                        "set at least one of requests_per_minute, tokens_per_minute, usd_per_day, usd_per_month",
                    ));
                }
                for (key, v) in [
                    ("usd_per_day", limits.usd_per_day),
                    ("usd_per_month", limits.usd_per_month),
                ] {
                    if let Some(v) = v
                        && !(v.is_finite() && v >= 0.0)
                    {
                        return Err(ConfigError::invalid(
                            format!("{at}.{key}"),
                            "must be a non-negative number",
                        ));
                    }
                }
                if section == "models"
                    && limits.has_spend_cap()
                    && config.model(name).is_some_and(|m| m.pricing.is_none())
                {
                    return Err(ConfigError::invalid(
                        at,
                        "a spend cap on a model needs its `pricing` (its requests would cost nothing)",
                    ));
                }
            }
        }
        if self.enabled() {
            let Some(store) = &self.store else {
                return Err(ConfigError::invalid(
                    "budgets.store",
                    "budgets need a shared store: set `store.redis_url`",
                ));
            };
            if !(store.redis_url.starts_with("redis://")
                || store.redis_url.starts_with("rediss://")
                || store.redis_url.starts_with("redis+unix://")
                || store.redis_url.starts_with("unix://"))
            {
                return Err(ConfigError::invalid(
                    "budgets.store.redis_url",
                    "must start with redis://, rediss://, redis+unix:// or unix://",
                ));
            }
            if store.timeout_ms == 0 {
                return Err(ConfigError::invalid("budgets.store.timeout_ms", "must be at least 1"));
            }
            if store.key_prefix.is_empty() {
                return Err(ConfigError::invalid("budgets.store.key_prefix", "must not be empty"));
            }
        }
        if ![429, 503].contains(&self.unavailable_status) {
            return Err(ConfigError::invalid("budgets.unavailable_status", "must be 429 or 503"));
        }
        Ok(())
    }
}
