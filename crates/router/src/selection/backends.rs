//! What llmsoup has observed of each model's upstream: recent time to first token and time per
//! output token, failures, and a healthy / degraded / down status. One [`Backends`] value is
//! created at `serve` and shared: the sidecar's accounting feeds it from both attach modes; the
//! engine reads it (selection, the latency signal) and `/v1/backends` shows it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Observations kept per model (a sliding window).
const WINDOW: usize = 128;
/// Consecutive failures that mark a model down.
const DOWN_AFTER: u32 = 3;
/// How long a down model is skipped before it gets traffic again (and a chance to recover).
const COOLDOWN: Duration = Duration::from_secs(30);
/// A model that latency-aware selection has stopped sending traffic to gets one request after
/// this long without a new observation, so a recovered upstream is noticed (like Envoy's outlier
/// ejection time) instead of being judged forever on old samples.
pub const PROBE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Model {
    ttft_ms: VecDeque<f64>,
    tpot_ms: VecDeque<f64>,
    outcomes: VecDeque<bool>,
    requests: u64,
    started: u64,
    errors: u64,
    consecutive_failures: u32,
    down_since: Option<Instant>,
    /// When the last latency sample arrived.
    last_observed: Option<Instant>,
    /// When a probe request was last let through.
    last_probe: Option<Instant>,
    /// Until when the provider asked not to be sent this model (`retry-after` on a 429/503).
    skip_until: Option<Instant>,
}

/// A model's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Answering normally.
    Healthy,
    /// More than a fifth of recent requests failed.
    Degraded,
    /// Failing repeatedly; skipped until the cooldown ends.
    Down,
}

/// A snapshot of one model's observations.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Health.
    pub status: Status,
    /// Requests observed.
    pub requests: u64,
    /// Requests routed to it and not finished yet.
    pub in_flight: u64,
    /// Failed requests observed (5xx or no answer).
    pub errors: u64,
    /// Time to first token percentiles (ms) over the window: p50, p90, p99.
    pub ttft_ms: Option<[f64; 3]>,
    /// Time per output token percentiles (ms): p50, p90, p99.
    pub tpot_ms: Option<[f64; 3]>,
    /// Seconds left of a `retry-after` skip window (the model is left out of chains and
    /// selection until then); absent when none is running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_s: Option<f64>,
}

/// Observations of every model's upstream, shared by the engine (reads) and accounting (writes).
/// The lock is never held across an await.
#[derive(Debug, Default)]
pub struct Backends {
    models: Mutex<HashMap<String, Model>>,
}

fn push<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() == WINDOW {
        q.pop_front();
    }
    q.push_back(v);
}

/// The `p`-th percentile (1–100) of the values.
pub fn percentile(values: &VecDeque<f64>, p: u8) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().copied().collect();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * f64::from(p.clamp(1, 100)) / 100.0).round() as usize;
    Some(v[i])
}

fn status(m: &Model) -> Status {
    if m.down_since.is_some_and(|t| t.elapsed() < COOLDOWN) {
        return Status::Down;
    }
    let failed = m.outcomes.iter().filter(|ok| !**ok).count();
    if !m.outcomes.is_empty() && failed * 5 > m.outcomes.len() {
        Status::Degraded
    } else {
        Status::Healthy
    }
}

impl Backends {
    /// Notes a request routed to `model` (for in-flight counts).
    pub fn started(&self, model: &str) {
        let Ok(mut guard) = self.models.lock() else { return };
        guard.entry(model.to_string()).or_default().started += 1;
    }

    /// Records one finished request to `model`.
    pub fn record(&self, model: &str, ok: bool, ttft_ms: Option<f64>, tpot_ms: Option<f64>) {
        let Ok(mut guard) = self.models.lock() else { return };
        let m = guard.entry(model.to_string()).or_default();
        m.requests += 1;
        push(&mut m.outcomes, ok);
        if ok {
            m.consecutive_failures = 0;
            m.down_since = None;
            if let Some(t) = ttft_ms {
                push(&mut m.ttft_ms, t);
                m.last_observed = Some(Instant::now());
            }
            if let Some(t) = tpot_ms {
                push(&mut m.tpot_ms, t);
            }
        } else {
            m.errors += 1;
            m.consecutive_failures += 1;
            if m.consecutive_failures >= DOWN_AFTER && m.down_since.is_none() {
                m.down_since = Some(Instant::now());
                tracing::warn!(model, "model marked down after repeated upstream failures");
            }
        }
    }

    /// The provider asked (`retry-after`) not to be sent `model` for `pause`: it is left out
    /// of chains and selection until then. A longer window already running is kept.
    pub fn skip(&self, model: &str, pause: Duration) {
        let Ok(mut guard) = self.models.lock() else { return };
        let until = Instant::now() + pause;
        let m = guard.entry(model.to_string()).or_default();
        if m.skip_until.is_none_or(|t| t < until) {
            m.skip_until = Some(until);
            tracing::info!(
                model,
                seconds = pause.as_secs_f64(),
                "model skipped for its provider's retry-after"
            );
        }
    }

    /// Whether `model` is in a `retry-after` skip window.
    pub fn is_skipped(&self, model: &str) -> bool {
        self.models
            .lock()
            .ok()
            .and_then(|g| g.get(model).and_then(|m| m.skip_until).map(|t| t > Instant::now()))
            .unwrap_or(false)
    }

    /// Whether `model` is down or in a skip window: selection and chains leave it out.
    pub fn unavailable(&self, model: &str) -> bool {
        self.is_down(model) || self.is_skipped(model)
    }

    /// Whether `model` is currently skipped.
    pub fn is_down(&self, model: &str) -> bool {
        self.models
            .lock()
            .ok()
            .and_then(|g| g.get(model).map(|m| status(m) == Status::Down))
            .unwrap_or(false)
    }

    /// The `p`-th percentile TTFT and median TPOT of `model`, in ms.
    pub fn latency(&self, model: &str, p: u8) -> (Option<f64>, Option<f64>) {
        let Ok(guard) = self.models.lock() else {
            return (None, None);
        };
        match guard.get(model) {
            Some(m) => (percentile(&m.ttft_ms, p), percentile(&m.tpot_ms, 50)),
            None => (None, None),
        }
    }

    /// Whether `model`'s latency samples are older than `after` and no probe went out within `after`;
    /// if so the caller sends it one request, and this records that the probe went out.
    pub fn claim_probe(&self, model: &str, after: Duration) -> bool {
        let Ok(mut guard) = self.models.lock() else {
            return false;
        };
        let Some(m) = guard.get_mut(model) else {
            return false;
        };
        let stale = m.last_observed.is_some_and(|t| t.elapsed() >= after);
        let probed_recently = m.last_probe.is_some_and(|t| t.elapsed() < after);
        if stale && !probed_recently {
            m.last_probe = Some(Instant::now());
            return true;
        }
        false
    }

    /// Every observed model.
    pub fn snapshot(&self) -> HashMap<String, Snapshot> {
        let Ok(guard) = self.models.lock() else {
            return HashMap::new();
        };
        let pcts = |q: &VecDeque<f64>| Some([percentile(q, 50)?, percentile(q, 90)?, percentile(q, 99)?]);
        guard
            .iter()
            .map(|(name, m)| {
                let s = Snapshot {
                    status: status(m),
                    requests: m.requests,
                    in_flight: m.started.saturating_sub(m.requests),
                    errors: m.errors,
                    ttft_ms: pcts(&m.ttft_ms),
                    tpot_ms: pcts(&m.tpot_ms),
                    skip_s: m
                        .skip_until
                        .and_then(|t| t.checked_duration_since(Instant::now()))
                        .map(|d| d.as_secs_f64()),
                };
                (name.clone(), s)
            })
            .collect()
    }
}
