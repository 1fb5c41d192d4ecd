//! The live decision feed behind `/dashboard`: one event per finished request, broadcast to
//! whoever is subscribed (the admin endpoint's `GET /v1/events`).
//!
//! Both attach modes end in [`super::accounting::record`] (ext_proc at the end of the response or
//! of the gRPC stream, wasm through the `Report` RPC), which calls [`Feed::finished`]. What only
//! the routing step knows (signals, confidence, routing latency, embedding cache) is kept from
//! [`Feed::on_route`] until then, keyed by request id, in a small bounded cache. Requests answered
//! locally by the engine (bad input, unknown model, blocking plugins) have no response phase
//! and are published from [`Feed::on_route`] directly.
//!
//! The hot path pays one atomic load when nobody watches: nothing is stored, built or sent.
//! Events carry names, numbers and ids, never prompt text.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use llmsoup_contract::headers::{DECISION_HEADER, FAIL_OPEN_DECISION, MODEL_HEADER, SIGNALS_HEADER};
use llmsoup_contract::outcome::Outcome;
use llmsoup_contract::v1::UsageReport;
use opentelemetry::metrics::{Counter, UpDownCounter};
use serde::Serialize;
use tokio::sync::broadcast;

use super::metrics::Metrics;

/// Events buffered per subscriber; a subscriber further behind skips the oldest.
const CAPACITY: usize = 256;
/// Open feeds at most: each is a connection and a task on the admin endpoint.
pub const MAX_SUBSCRIBERS: usize = 64;
/// Routed requests whose response has not finished yet, remembered for their event.
const PENDING_ENTRIES: u64 = 4096;
/// A response that takes longer than this gets an event without its routing facts.
const PENDING_TTL: Duration = Duration::from_secs(15 * 60);

/// One finished (or locally answered) request, as the dashboard shows it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Event {
    /// The request's `x-request-id`.
    pub request_id: String,
    /// Unix time (seconds) the event was published.
    pub ts: f64,
    /// `routed` (auto model), `passthrough` (concrete model), `fail-open`, `local_reply`
    /// (answered by the sidecar without an upstream), or `forwarded` (routing facts unknown).
    pub outcome: String,
    /// The model the request went to (empty for a local reply without one).
    pub model: String,
    /// The decision that matched, if any.
    pub decision: Option<String>,
    /// Matched signals, `kind:name` comma-separated.
    pub signals: String,
    /// The decision's confidence.
    pub confidence: Option<f64>,
    /// Milliseconds the sidecar spent parsing and routing.
    pub route_ms: Option<f64>,
    /// Whether the query embedding came from the cache (`None` when no model signal ran).
    pub embedding_cached: Option<bool>,
    /// HTTP status to the client (0: the upstream never answered).
    pub status: u32,
    /// Machine-readable error code of a local reply.
    pub error: Option<String>,
    /// The response was SSE.
    pub stream: bool,
    /// Prompt tokens (from the provider's usage block).
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Cached prompt tokens.
    pub cached_tokens: u64,
    /// The response carried a usage block.
    pub usage_seen: bool,
    /// Spend in USD.
    pub cost_usd: f64,
    /// Spend avoided versus the baseline model, in USD.
    pub saved_usd: f64,
    /// Milliseconds to the first response byte.
    pub ttft_ms: Option<f64>,
    /// Milliseconds to the end of the response.
    pub duration_ms: Option<f64>,
}

/// What routing knew about a request, kept until its response ends.
#[derive(Debug, Clone)]
struct RouteFacts {
    routed: bool,
    signals: String,
    confidence: Option<f64>,
    route_ms: f64,
    embedding_cached: Option<bool>,
}

/// The feed: one per sidecar, in its [`super::Observer`].
pub struct Feed {
    // Serialised once, shared by every subscriber.
    tx: broadcast::Sender<Arc<str>>,
    // Our own count, not `receiver_count()`, which takes the channel's lock on every request.
    subscribers: Arc<AtomicUsize>,
    pending: moka::sync::Cache<String, RouteFacts>,
    open: UpDownCounter<i64>,
    dropped: Counter<u64>,
}

/// A live subscription; counted in `llmsoup.dashboard.subscribers` while it exists.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<str>>,
    subscribers: Arc<AtomicUsize>,
    open: UpDownCounter<i64>,
    dropped: Counter<u64>,
}

/// What [`Subscription::recv`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// One event, as JSON.
    Event(Arc<str>),
    /// This many events were skipped because the subscriber fell behind.
    Lagged(u64),
}

impl Subscription {
    /// The next event; `None` once the feed is gone (never, while the process runs).
    pub async fn recv(&mut self) -> Option<Received> {
        match self.rx.recv().await {
            Ok(e) => Some(Received::Event(e)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                self.dropped.add(n, &[]);
                Some(Received::Lagged(n))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.open.add(-1, &[]);
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new()
    }
}

impl Feed {
    /// A feed whose subscriber counts go nowhere (tests).
    pub fn new() -> Self {
        Feed::with_metrics(&Metrics::noop())
    }

    /// A feed counting its subscribers and skipped events in `metrics`.
    pub fn with_metrics(metrics: &Metrics) -> Self {
        Feed {
            open: metrics.dashboard_subscribers.clone(),
            dropped: metrics.dashboard_dropped.clone(),
            tx: broadcast::channel(CAPACITY).0,
            subscribers: Arc::new(AtomicUsize::new(0)),
            pending: moka::sync::Cache::builder()
                .max_capacity(PENDING_ENTRIES)
                .time_to_live(PENDING_TTL)
                .build(),
        }
    }

    /// Subscribes to events published from now on; `None` when [`MAX_SUBSCRIBERS`] are open.
    pub fn subscribe(&self) -> Option<Subscription> {
        self.subscribers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_SUBSCRIBERS).then_some(n + 1)
            })
            .ok()?;
        self.open.add(1, &[]);
        Some(Subscription {
            rx: self.tx.subscribe(),
            subscribers: self.subscribers.clone(),
            open: self.open.clone(),
            dropped: self.dropped.clone(),
        })
    }

    /// Current number of subscribers.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    fn listening(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    fn publish(&self, event: &Event) {
        match serde_json::to_string(event) {
            // The last subscriber may have left since the check: nothing to do then.
            Ok(json) => drop(self.tx.send(json.into())),
            Err(e) => tracing::warn!(error = %e, "serialising a dashboard event failed"),
        }
    }

    /// Called once a request body is decided: remembers the routing facts of a forwarded request,
    /// publishes a local reply. The hot path pays one atomic load when nobody watches.
    pub fn on_route(&self, request_id: &str, outcome: &Outcome, elapsed: Duration) {
        if !self.listening() {
            return;
        }
        match outcome {
            Outcome::Forward(f) => {
                if request_id.is_empty() {
                    return;
                }
                let s = &f.summary;
                self.pending.insert(
                    request_id.to_string(),
                    RouteFacts {
                        routed: s.confidence.is_some(),
                        signals: s.signals.clone(),
                        confidence: s.confidence,
                        route_ms: ms(elapsed),
                        embedding_cached: s.embedding_cached,
                    },
                );
            }
            Outcome::Reply(r) => {
                let header = |name: &str| {
                    r.headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v)
                };
                let error = serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|b| Some(b.get("error")?.get("code")?.as_str()?.to_string()));
                self.publish(&Event {
                    request_id: request_id.to_string(),
                    ts: unix_now(),
                    outcome: "local_reply".into(),
                    model: header(MODEL_HEADER).cloned().unwrap_or_default(),
                    decision: header(DECISION_HEADER).cloned(),
                    signals: header(SIGNALS_HEADER).cloned().unwrap_or_default(),
                    route_ms: Some(ms(elapsed)),
                    status: u32::from(r.status),
                    error,
                    ..Event::default()
                });
            }
        }
    }

    /// Called by accounting for every finished request, with what it cost and saved.
    pub fn finished(&self, r: &UsageReport, cost_usd: f64, saved_usd: f64) {
        if !self.listening() {
            return;
        }
        let facts = (!r.request_id.is_empty())
            .then(|| self.pending.remove(&r.request_id))
            .flatten();
        let outcome = match (&facts, r.decision.as_str()) {
            (_, FAIL_OPEN_DECISION) => "fail-open",
            (Some(f), _) if f.routed => "routed",
            (Some(_), _) => "passthrough",
            (None, _) => "forwarded",
        };
        let us = |v: u64| (v > 0).then(|| v as f64 / 1e3);
        self.publish(&Event {
            request_id: r.request_id.clone(),
            ts: unix_now(),
            outcome: outcome.into(),
            model: r.model.clone(),
            decision: (!r.decision.is_empty()).then(|| r.decision.clone()),
            signals: facts.as_ref().map(|f| f.signals.clone()).unwrap_or_default(),
            confidence: facts.as_ref().and_then(|f| f.confidence),
            route_ms: facts.as_ref().map(|f| f.route_ms),
            embedding_cached: facts.as_ref().and_then(|f| f.embedding_cached),
            status: r.status,
            error: None,
            stream: r.stream,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cached_tokens: r.cached_tokens,
            usage_seen: r.usage_seen,
            cost_usd,
            saved_usd,
            ttft_ms: us(r.time_to_first_byte_us),
            duration_ms: us(r.duration_us),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmsoup_contract::outcome::{Forward, Reply, Summary};

    async fn next_for(sub: &mut Subscription, id: &str) -> Event {
        loop {
            let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
                .await
                .expect("an event in time")
                .expect("feed open");
            if let Received::Event(json) = got {
                let e: Event = serde_json::from_str(&json).unwrap();
                if e.request_id == id {
                    return e;
                }
            }
        }
    }

    fn forward(summary: Summary) -> Outcome {
        Outcome::Forward(Forward {
            remove_headers: Vec::new(),
            set_headers: Vec::new(),
            append_headers: Vec::new(),
            body: None,
            translation: Default::default(),
            summary,
        })
    }

    #[tokio::test]
    async fn a_routed_request_carries_its_routing_facts_to_its_finish() {
        let feed = Feed::new();
        let mut sub = feed.subscribe().unwrap();
        let summary = Summary {
            model: "strong".into(),
            decision: Some("coding".into()),
            signals: "keyword:code".into(),
            confidence: Some(1.0),
            embedding_cached: Some(true),
            ..Summary::default()
        };
        feed.on_route("feed-1", &forward(summary), Duration::from_micros(1500));
        feed.finished(
            &UsageReport {
                request_id: "feed-1".into(),
                model: "strong".into(),
                decision: "coding".into(),
                status: 200,
                prompt_tokens: 100,
                completion_tokens: 50,
                usage_seen: true,
                time_to_first_byte_us: 20_000,
                duration_us: 30_000,
                ..Default::default()
            },
            0.25,
            0.5,
        );
        let e = next_for(&mut sub, "feed-1").await;
        assert_eq!(e.outcome, "routed");
        assert_eq!(e.decision.as_deref(), Some("coding"));
        assert_eq!(e.signals, "keyword:code");
        assert_eq!(e.route_ms, Some(1.5));
        assert_eq!(e.embedding_cached, Some(true));
        assert_eq!((e.prompt_tokens, e.completion_tokens), (100, 50));
        assert_eq!((e.cost_usd, e.saved_usd), (0.25, 0.5));
        assert_eq!((e.ttft_ms, e.duration_ms), (Some(20.0), Some(30.0)));
        assert!(feed.pending.get("feed-1").is_none(), "facts are taken, not kept");
    }

    #[tokio::test]
    async fn local_replies_and_unknown_requests_are_published() {
        let feed = Feed::new();
        let mut sub = feed.subscribe().unwrap();
        let reply = Reply::from(llmsoup_contract::ApiError::model_not_found("gpt-9"));
        feed.on_route("feed-2", &Outcome::Reply(reply), Duration::from_millis(1));
        let e = next_for(&mut sub, "feed-2").await;
        assert_eq!((e.outcome.as_str(), e.status), ("local_reply", 400));
        assert_eq!(e.error.as_deref(), Some("model_not_found"));

        // A report without routing facts (routed before anyone subscribed, or on another replica).
        feed.finished(
            &UsageReport {
                request_id: "feed-3".into(),
                model: "cheap".into(),
                decision: "fail-open".into(),
                status: 502,
                ..Default::default()
            },
            0.0,
            0.0,
        );
        let e = next_for(&mut sub, "feed-3").await;
        assert_eq!((e.outcome.as_str(), e.status, e.route_ms), ("fail-open", 502, None));
    }

    #[test]
    fn subscribers_are_capped_and_counted() {
        let feed = Feed::new();
        assert!(!feed.listening());
        let subs: Vec<_> = (0..MAX_SUBSCRIBERS).map(|_| feed.subscribe().unwrap()).collect();
        assert!(feed.listening());
        assert!(feed.subscribe().is_none(), "one too many");
        drop(subs);
        assert!(!feed.listening(), "leaving subscribers are uncounted");
        assert!(feed.subscribe().is_some());
    }

    #[tokio::test]
    async fn a_slow_subscriber_skips_instead_of_blocking() {
        let feed = Feed::new();
        let mut sub = feed.subscribe().unwrap();
        for i in 0..(CAPACITY + 10) {
            feed.on_route(
                &format!("lag-{i}"),
                &Outcome::Reply(Reply {
                    status: 200,
                    headers: Vec::new(),
                    body: Vec::new(),
                }),
                Duration::ZERO,
            );
        }
        let first = sub.recv().await.unwrap();
        assert!(matches!(first, Received::Lagged(n) if n >= 10), "{first:?}");
    }
}
