//! The response cache's state and I/O: the store (in-process [`memory`] or shared [`redis`]),
//! in-flight deduplication, and answers captured from the response path.
//!
//! The engine decides whether a request may be cached and computes its keys
//! (`llmsoup_router::plugins::cache`); the front ends then call [`ResponseCache::resolve`]:
//! 1. exact key → a stored answer is replayed (`x-llmsoup-cache: hit`);
//! 2. semantic: among entries with the same context key (model, tenant, system prompt,
//!    history, tools, parameters), the stored last user turn closest to this one, if at least
//!    the plugin's similarity threshold;
//! 3. otherwise, when an identical request (same exact key, so same tenant) is already on its
//!    way to the provider, wait (bounded by `response_cache.dedup.max_wait_ms`) for its answer
//!    and replay it — streams included: a waiting streaming client gets the finished answer
//!    replayed as SSE (fanning a live stream out chunk by chunk would need the sidecar to hold
//!    and copy every chunk of the first stream; replaying the finished one keeps the hot path
//!    unchanged and is correct, at the cost of the duplicates' time to first token);
//! 4. else the request goes upstream as the *leader* of its key, with a ticket (the exact key)
//!    that the response path hands back with the captured body ([`ResponseCache::complete`]) or
//!    without it ([`ResponseCache::abandon`]: error status, body too large, stream cut), which
//!    releases any waiters.
//!
//! A store that cannot be reached (Redis down, too slow) is a miss, counted in
//! `llmsoup_cache_errors_total`; requests never fail because of the cache.

pub mod memory;
pub mod redis;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use llmsoup_config::{CacheBackend, ResponseCacheConfig};
use llmsoup_contract::outcome::{Outcome, ResponsePath};
use llmsoup_contract::v1::UsageReport;
use llmsoup_router::engine::{Engine, Handling, Trace, vsr};
use llmsoup_router::plugins::cache::{CacheLookup, CacheStep, Entry, Key};
use tokio::sync::watch;

use crate::observe::accounting;

/// How a lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitKind {
    /// The exact request was cached.
    Exact,
    /// A paraphrase above the similarity threshold was cached.
    Semantic,
    /// An identical request in flight answered it.
    Dedup,
}

impl HitKind {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            HitKind::Exact => "exact",
            HitKind::Semantic => "semantic",
            HitKind::Dedup => "dedup",
        }
    }
}

/// What [`ResponseCache::resolve`] found.
#[derive(Debug)]
pub enum Resolved {
    /// A stored (or just finished) answer.
    Hit(Arc<Entry>, HitKind),
    /// Nothing: go upstream. `leader`: this request's answer is awaited and should be captured
    /// and handed back under its key.
    Miss {
        /// Whether this request leads its key (its answer will be stored).
        leader: bool,
    },
}

/// A store failure (unreachable, timed out, refused): the lookup or write is skipped.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One store: in-process or Redis.
pub enum Store {
    /// moka, in this process.
    Memory(memory::MemoryStore),
    /// A Redis server shared by replicas.
    Redis(redis::RedisStore),
}

impl Store {
    fn backend(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    async fn get(&self, key: &Key) -> Result<Option<Arc<Entry>>, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.get(key)),
            Store::Redis(r) => r.get(key).await,
        }
    }

    async fn nearest(&self, lookup: &CacheLookup, threshold: f32) -> Result<Option<Arc<Entry>>, StoreError> {
        let Some(embedding) = &lookup.embedding else {
            return Ok(None);
        };
        match self {
            Store::Memory(m) => Ok(m.nearest(&lookup.context, embedding, threshold)),
            Store::Redis(r) => r.nearest(&lookup.context, embedding, threshold).await,
        }
    }

    async fn put(&self, flight: &Flight, entry: Arc<Entry>) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                m.put(flight, entry);
                Ok(())
            }
            Store::Redis(r) => r.put(flight, entry).await,
        }
    }
}

/// What the leader's ticket remembers until its answer comes back.
pub struct Flight {
    /// The exact key.
    pub key: Key,
    /// The context key.
    pub context: Key,
    /// The last user turn's embedding, for semantic candidates.
    pub embedding: Option<llmsoup_models::Embedding>,
    /// Entry lifetime.
    pub ttl: Duration,
    shape: llmsoup_router::plugins::cache::Shape,
    started: Instant,
    done: watch::Sender<Option<Option<Arc<Entry>>>>,
}

/// Most requests awaited at once; beyond it, misses are neither deduplicated nor stored.
const MAX_FLIGHTS: usize = 16_384;

/// The store in use and the settings it was built from.
struct Current {
    settings: ResponseCacheConfig,
    store: Arc<Store>,
}

/// The response cache: the store, built from `response_cache` and rebuilt when a reload changes
/// it, and the requests in flight (kept across reloads).
pub struct ResponseCache {
    current: ArcSwap<Current>,
    flights: Mutex<HashMap<Key, Flight>>,
    metrics: crate::observe::metrics::Metrics,
    /// Answers stored since start (for `/stats`).
    stored: Arc<AtomicU64>,
}

impl ResponseCache {
    /// A cache with the default in-process store.
    pub fn new(metrics: crate::observe::metrics::Metrics) -> Self {
        let settings = ResponseCacheConfig::default();
        ResponseCache {
            current: ArcSwap::from_pointee(Current {
                store: Arc::new(Store::Memory(memory::MemoryStore::new(&settings))),
                settings,
            }),
            flights: Mutex::new(HashMap::new()),
            metrics,
            stored: Arc::default(),
        }
    }

    /// Uses `settings` from now on (a new store when they changed; an unchanged section keeps
    /// the store and what it holds).
    pub fn configure(&self, settings: &ResponseCacheConfig) -> anyhow::Result<()> {
        if self.current.load().settings == *settings {
            return Ok(());
        }
        let store = match settings.backend {
            CacheBackend::Memory => Store::Memory(memory::MemoryStore::new(settings)),
            CacheBackend::Redis => Store::Redis(redis::RedisStore::new(settings)?),
        };
        tracing::info!(backend = store.backend(), "response cache store");
        self.current.store(Arc::new(Current {
            settings: settings.clone(),
            store: Arc::new(store),
        }));
        Ok(())
    }

    fn failed(&self, store: &Store, op: &'static str, e: &StoreError) {
        tracing::debug!(backend = store.backend(), op, error = %e, "response cache store failed; treated as a miss");
        self.metrics.cache_errors.add(
            1,
            &[
                crate::observe::metrics::kv("backend", store.backend()),
                crate::observe::metrics::kv("op", op),
            ],
        );
    }

    /// Looks `lookup` up: a stored answer, an identical request's answer, or a miss (see the
    /// module docs).
    pub async fn resolve(&self, lookup: &CacheLookup) -> Resolved {
        let current = self.current.load_full();
        let store = &current.store;
        match store.get(&lookup.key).await {
            Ok(Some(e)) => return Resolved::Hit(e, HitKind::Exact),
            Ok(None) => {}
            Err(e) => self.failed(store, "get", &e),
        }
        if let Some(threshold) = lookup.threshold {
            match store.nearest(lookup, threshold).await {
                Ok(Some(e)) => return Resolved::Hit(e, HitKind::Semantic),
                Ok(None) => {}
                Err(e) => self.failed(store, "nearest", &e),
            }
        }
        let dedup = &current.settings.dedup;
        let max_wait = Duration::from_millis(dedup.max_wait_ms);
        let ttl = Duration::from_secs(lookup.ttl_seconds.unwrap_or(current.settings.ttl_seconds));
        let mut waiting = {
            let Ok(mut flights) = self.flights.lock() else {
                return Resolved::Miss { leader: false };
            };
            match flights.get(&lookup.key) {
                // A leader that outlived the wait bound lost its answer (a report that never
                // came): this request takes over.
                Some(f) if f.started.elapsed() < max_wait => {
                    if !dedup.enabled {
                        return Resolved::Miss { leader: false };
                    }
                    f.done.subscribe()
                }
                _ => {
                    if flights.len() >= MAX_FLIGHTS {
                        flights.retain(|_, f| f.started.elapsed() < max_wait);
                        if flights.len() >= MAX_FLIGHTS {
                            return Resolved::Miss { leader: false };
                        }
                    }
                    let (done, _) = watch::channel(None);
                    flights.insert(
                        lookup.key,
                        Flight {
                            key: lookup.key,
                            context: lookup.context,
                            embedding: lookup.embedding.clone(),
                            ttl,
                            shape: lookup.shape,
                            started: Instant::now(),
                            done,
                        },
                    );
                    return Resolved::Miss { leader: true };
                }
            }
        };
        // The leader's answer, if it comes in time and could be kept.
        match tokio::time::timeout(max_wait, waiting.wait_for(Option::is_some)).await {
            Ok(Ok(answer)) => match answer.clone().flatten() {
                Some(e) => Resolved::Hit(e, HitKind::Dedup),
                None => Resolved::Miss { leader: false },
            },
            _ => Resolved::Miss { leader: false },
        }
    }

    /// Whether `key` has a leader waiting for its answer (so a captured body is wanted).
    pub fn awaits(&self, key: &Key) -> bool {
        self.flights.lock().is_ok_and(|f| f.contains_key(key))
    }

    /// The leader's response finished: keep it if it may be kept, hand it to any waiters, and
    /// release the key. `body`: the captured body (`None` when it was not captured or outgrew
    /// the capture bound). Stores that do I/O are written in the background.
    pub fn complete(&self, key: &Key, status: u32, sse: bool, body: Option<&[u8]>) {
        let Some(flight) = self.flights.lock().ok().and_then(|mut f| f.remove(key)) else {
            return;
        };
        let current = self.current.load_full();
        let entry = body
            .filter(|b| b.len() as u64 <= current.settings.max_entry_bytes)
            .and_then(|b| Entry::from_response(flight.shape, status, sse, b))
            .map(Arc::new);
        flight.done.send_replace(Some(entry.clone()));
        let Some(entry) = entry else {
            self.metrics
                .cache_stores
                .add(1, &[crate::observe::metrics::kv("result", "not_cacheable")]);
            return;
        };
        let stored = |metrics: &crate::observe::metrics::Metrics, counter: &AtomicU64| {
            metrics
                .cache_stores
                .add(1, &[crate::observe::metrics::kv("result", "stored")]);
            counter.fetch_add(1, Ordering::Relaxed);
        };
        match &*current.store {
            Store::Memory(m) => {
                m.put(&flight, entry);
                stored(&self.metrics, &self.stored);
            }
            Store::Redis(_) => {
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let metrics = self.metrics.clone();
                let counter = self.stored.clone();
                rt.spawn(async move {
                    match current.store.put(&flight, entry).await {
                        Ok(()) => stored(&metrics, &counter),
                        Err(e) => {
                            tracing::debug!(error = %e, "response cache write failed");
                            metrics.cache_errors.add(
                                1,
                                &[
                                    crate::observe::metrics::kv("backend", "redis"),
                                    crate::observe::metrics::kv("op", "put"),
                                ],
                            );
                        }
                    }
                });
            }
        }
    }

    /// The leader's response ended without an answer to keep (or was never captured): waiters
    /// go upstream themselves.
    pub fn abandon(&self, key: &Key) {
        if let Some(flight) = self.flights.lock().ok().and_then(|mut f| f.remove(key)) {
            flight.done.send_replace(Some(None));
        }
    }

    /// Answers stored since start.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Largest body worth capturing for the store.
    pub fn max_entry_bytes(&self) -> usize {
        usize::try_from(self.current.load().settings.max_entry_bytes).unwrap_or(usize::MAX)
    }
}

/// Parses a ticket (the exact key in hex) handed back by the response path.
pub fn parse_ticket(hex_key: &str) -> Option<Key> {
    let mut k = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut k).ok()?;
    Some(k)
}

#[cfg(test)]
mod tests;

/// Takes the engine's cache step for a request it forwards: on a hit the outcome becomes the
/// stored answer (the trace says [`Handling::Cached`]); on a miss the forwarded request is marked
/// `x-llmsoup-cache: miss` and started in the backends, and when it leads its key the ticket to
/// hand back with its response ([`ResponseCache::complete`]) is returned. Both front ends call
/// this between `Engine::handle` and `Observer::on_route`.
pub async fn apply(cache: &ResponseCache, engine: &Engine, outcome: &mut Outcome, trace: &mut Trace) -> Option<Key> {
    let Outcome::Forward(f) = outcome else {
        return None;
    };
    let lookup = match trace.cache.as_ref()? {
        CacheStep::Skipped { .. } => {
            f.summary.cache = Some("miss");
            return None;
        }
        CacheStep::Lookup(l) => l,
    };
    let resolved = cache.resolve(lookup).await;
    if let Resolved::Hit(entry, kind) = &resolved
        && let Some(mut reply) = entry.replay(lookup)
    {
        let mut summary = f.summary.clone();
        for (k, v) in &mut summary.compat {
            if *k == vsr::RESPONSE_PATH {
                *v = ResponsePath::Cache.as_str().into();
            }
        }
        reply.headers.extend(summary.response_headers());
        let saved_usd = engine
            .config()
            .model(&lookup.model)
            .and_then(|m| m.pricing.as_ref())
            .map_or(0.0, |p| {
                accounting::cost(
                    p,
                    &UsageReport {
                        prompt_tokens: entry.prompt_tokens,
                        completion_tokens: entry.completion_tokens,
                        ..Default::default()
                    },
                )
            });
        trace.handling = Handling::Cached {
            model: lookup.model.clone(),
            decision: lookup.decision.clone(),
            tenant: lookup.tenant.clone(),
            kind: kind.as_str(),
            saved_usd,
        };
        *outcome = Outcome::Reply(reply);
        return None;
    }
    f.summary.cache = Some("miss");
    engine.backends().started(&f.summary.model);
    matches!(resolved, Resolved::Miss { leader: true }).then_some(lookup.key)
}
