//! Token budgets and rate limits that hold across replicas and restarts.
//!
//! Envoy's `ratelimit` filter asks the sidecar's rate limit service ([`crate::server`]'s RLS v3
//! service) before each provider call, with the tenant (the authenticated client token's name,
//! set by the auth step as `x-llmsoup-tenant`) and the model as descriptors. [`Budgets::check`]
//! counts the request and compares the current windows' totals with the limits of the token, its
//! group and the model; [`Budgets::charge`] adds a finished request's tokens and spend when its
//! usage report arrives. Counters live in Redis ([`store`]), keyed by scope, name and window
//! ([`window`]), so every replica sees the same totals and a restart loses nothing.

pub mod store;
pub mod window;

use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use llmsoup_config::{BudgetStore, BudgetsConfig, Config, Limits};

use store::Store;
use window::Window;

/// Who a limit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A client token (`auth.tokens[].name`).
    Token,
    /// A token group (`auth.tokens[].group`).
    Group,
    /// A model, over all clients.
    Model,
}

impl Scope {
    /// Label and key segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Token => "token",
            Scope::Group => "group",
            Scope::Model => "model",
        }
    }
}

/// Which limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `requests_per_minute`.
    Requests,
    /// `tokens_per_minute`.
    Tokens,
    /// `usd_per_day`.
    SpendDay,
    /// `usd_per_month`.
    SpendMonth,
}

impl Metric {
    /// The config key (and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Requests => "requests_per_minute",
            Metric::Tokens => "tokens_per_minute",
            Metric::SpendDay => "usd_per_day",
            Metric::SpendMonth => "usd_per_month",
        }
    }

    fn window(self) -> Window {
        match self {
            Metric::Requests | Metric::Tokens => Window::Minute,
            Metric::SpendDay => Window::Day,
            Metric::SpendMonth => Window::Month,
        }
    }

    /// Counter key segment: what is counted in which window.
    fn counter(self) -> &'static str {
        match self {
            Metric::Requests => "req",
            Metric::Tokens => "tok",
            Metric::SpendDay | Metric::SpendMonth => "usd",
        }
    }

    /// Whether a store outage refuses requests this limit applies to.
    fn fails_closed(self, b: &BudgetsConfig) -> bool {
        use llmsoup_config::FailureMode::Closed;
        match self {
            Metric::Requests | Metric::Tokens => b.rate_limit_failure_mode == Closed,
            Metric::SpendDay | Metric::SpendMonth => b.spend_failure_mode == Closed,
        }
    }

    /// The limit in counter units (spend is counted in micro-USD, so Redis adds integers).
    fn limit(self, l: &Limits) -> Option<i64> {
        let usd = |v: f64| (v * 1e6).round().min(i64::MAX as f64) as i64;
        match self {
            Metric::Requests => l.requests_per_minute.map(|v| v.min(i64::MAX as u64) as i64),
            Metric::Tokens => l.tokens_per_minute.map(|v| v.min(i64::MAX as u64) as i64),
            Metric::SpendDay => l.usd_per_day.map(usd),
            Metric::SpendMonth => l.usd_per_month.map(usd),
        }
    }
}

const METRICS: [Metric; 4] = [Metric::Requests, Metric::Tokens, Metric::SpendDay, Metric::SpendMonth];

/// A limit that refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// Whose limit.
    pub scope: Scope,
    /// The token, group or model name.
    pub name: String,
    /// Which limit.
    pub metric: Metric,
}

/// What [`Budgets::check`] says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No limit applies, or none is reached.
    Allow,
    /// A limit is reached; `retry_after` seconds until its window ends.
    Over {
        /// The limit (the one whose window ends last, when several are reached).
        exceeded: Exceeded,
        /// Seconds until the request may succeed.
        retry_after: u64,
    },
    /// The store is unreachable and a limit that fails closed applies.
    Unavailable,
}

/// One limit that applies to a request: whose, which, the counter key and its ceiling.
struct Applied<'a> {
    scope: Scope,
    name: &'a str,
    metric: Metric,
    key: String,
    limit: i64,
}

/// The limits of `config` that apply to a request by `tenant` (empty: anonymous) for `model`.
fn applicable<'a>(config: &'a Config, tenant: &'a str, model: &'a str, unix: u64) -> Vec<Applied<'a>> {
    let b = &config.budgets;
    let Some(store) = &b.store else {
        return Vec::new();
    };
    let group = (!tenant.is_empty())
        .then(|| config.auth.tokens.iter().find(|t| t.name == tenant))
        .flatten()
        .and_then(|t| t.group.as_deref());
    let scopes = [
        (Scope::Token, (!tenant.is_empty()).then_some(tenant)),
        (Scope::Group, group),
        (Scope::Model, (!model.is_empty()).then_some(model)),
    ];
    let mut out = Vec::new();
    for (scope, name) in scopes {
        let Some(name) = name else { continue };
        let map = match scope {
            Scope::Token => &b.tokens,
            Scope::Group => &b.groups,
            Scope::Model => &b.models,
        };
        let Some(limits) = map.get(name) else { continue };
        for metric in METRICS {
            if let Some(limit) = metric.limit(limits) {
                out.push(Applied {
                    scope,
                    name,
                    metric,
                    key: key(store, scope, name, metric, unix),
                    limit,
                });
            }
        }
    }
    out
}

/// `prefix:scope:name:counter:window:id`, e.g. `llmsoup:budget:token:alice:usd:d:20793`.
fn key(store: &BudgetStore, scope: Scope, name: &str, metric: Metric, unix: u64) -> String {
    let w = metric.window();
    format!(
        "{}:{}:{}:{}:{}:{}",
        store.key_prefix,
        scope.as_str(),
        name,
        metric.counter(),
        w.tag(),
        w.id(unix)
    )
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The budget counters' store, opened from the config's `budgets.store` (none: budgets off).
#[derive(Default)]
pub struct Budgets {
    store: ArcSwapOption<Store>,
}

impl Budgets {
    /// Opens (or reopens, when the store settings changed) the store `config` names. Lazy: an
    /// unreachable Redis is not an error here, only when a request needs it.
    pub fn configure(&self, config: &Config) -> anyhow::Result<()> {
        let wanted = config.budgets.store.as_ref().filter(|_| config.budgets.enabled());
        let current = self.store.load();
        match (wanted, current.as_deref()) {
            (None, _) => self.store.store(None),
            (Some(w), Some(c)) if c.settings() == w => {}
            (Some(w), _) => self.store.store(Some(std::sync::Arc::new(Store::open(w)?))),
        }
        Ok(())
    }

    /// Counts one request by `tenant` for `model` and says whether it may go on.
    pub async fn check(&self, config: &Config, tenant: &str, model: &str) -> Verdict {
        self.check_at(config, tenant, model, unix_now()).await
    }

    async fn check_at(&self, config: &Config, tenant: &str, model: &str, unix: u64) -> Verdict {
        let applied = applicable(config, tenant, model, unix);
        if applied.is_empty() {
            return Verdict::Allow;
        }
        let b = &config.budgets;
        let Some(store) = self.store.load_full() else {
            return fail(b, &applied);
        };
        let ops: Vec<store::Op<'_>> = applied
            .iter()
            .map(|a| match a.metric {
                // Requests are counted as they are checked: the window's count including this one.
                Metric::Requests => store::Op::Incr {
                    key: &a.key,
                    by: 1,
                    ttl: a.metric.window().ttl_secs(),
                },
                _ => store::Op::Get { key: &a.key },
            })
            .collect();
        let values = match store.run(&ops).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "budget store unavailable for a check");
                return fail(b, &applied);
            }
        };
        let mut worst: Option<(u64, &Applied<'_>)> = None;
        for (a, v) in applied.iter().zip(values) {
            let over = match a.metric {
                Metric::Requests => v > a.limit,
                _ => v >= a.limit,
            };
            if over {
                let wait = a.metric.window().remaining(unix);
                if worst.is_none_or(|(w, _)| wait > w) {
                    worst = Some((wait, a));
                }
            }
        }
        match worst {
            None => Verdict::Allow,
            Some((retry_after, a)) => Verdict::Over {
                exceeded: Exceeded {
                    scope: a.scope,
                    name: a.name.to_string(),
                    metric: a.metric,
                },
                retry_after,
            },
        }
    }

    /// Adds a finished request's tokens and spend (USD) to every counter that a limit of its
    /// tenant, group or model watches. Never blocks the caller: the write runs on its own task.
    pub fn charge(&self, config: &Config, tenant: &str, model: &str, tokens: u64, usd: f64) {
        let Some(store) = self.store.load_full() else { return };
        let writes = charges(config, tenant, model, tokens, usd, unix_now());
        if writes.is_empty() {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = apply(&store, &writes).await {
                tracing::warn!(error = %e, "budget store unavailable: a finished request's usage was not charged");
            }
        });
    }

    /// [`Budgets::charge`], waiting for the write (tests).
    #[cfg(test)]
    async fn charge_now(&self, config: &Config, tenant: &str, model: &str, tokens: u64, usd: f64, unix: u64) {
        let store = self.store.load_full().expect("a store");
        apply(&store, &charges(config, tenant, model, tokens, usd, unix))
            .await
            .expect("charged");
    }
}

/// The counter increments one finished request makes: (key, amount, ttl).
fn charges(config: &Config, tenant: &str, model: &str, tokens: u64, usd: f64, unix: u64) -> Vec<(String, i64, u64)> {
    let micros = (usd * 1e6).round().max(0.0) as i64;
    let tokens = tokens.min(i64::MAX as u64) as i64;
    applicable(config, tenant, model, unix)
        .into_iter()
        .filter_map(|a| {
            let by = match a.metric {
                Metric::Requests => return None,
                Metric::Tokens => tokens,
                Metric::SpendDay | Metric::SpendMonth => micros,
            };
            (by > 0).then(|| (a.key, by, a.metric.window().ttl_secs()))
        })
        .collect()
}

async fn apply(store: &Store, writes: &[(String, i64, u64)]) -> Result<(), store::StoreError> {
    let ops: Vec<store::Op<'_>> = writes
        .iter()
        .map(|(key, by, ttl)| store::Op::Incr {
            key,
            by: *by,
            ttl: *ttl,
        })
        .collect();
    store.run(&ops).await.map(drop)
}

/// The verdict when the store cannot answer: refuse if any applicable limit fails closed.
fn fail(b: &BudgetsConfig, applied: &[Applied<'_>]) -> Verdict {
    if applied.iter().any(|a| a.metric.fails_closed(b)) {
        Verdict::Unavailable
    } else {
        Verdict::Allow
    }
}

#[cfg(test)]
mod tests;
