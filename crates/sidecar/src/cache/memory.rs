//! The in-process store: moka caches bounded by bytes (entries) and by count (semantic
//! candidates), each entry living for its own TTL.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llmsoup_config::ResponseCacheConfig;
use llmsoup_models::Embedding;
use llmsoup_router::plugins::cache::{Entry, Key};
use moka::sync::Cache;

use super::Flight;

#[derive(Clone)]
struct Stored {
    entry: Arc<Entry>,
    ttl: Duration,
}

struct PerEntryTtl;

impl moka::Expiry<Key, Stored> for PerEntryTtl {
    fn expire_after_create(&self, _key: &Key, value: &Stored, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Semantic candidates of one context: (exact key, embedding of the last user turn), newest first.
type Candidates = Arc<Mutex<VecDeque<(Key, Embedding)>>>;

/// Most contexts whose semantic candidates are kept.
const MAX_CONTEXTS: u64 = 65_536;

/// Entries and semantic candidates in this process.
pub struct MemoryStore {
    entries: Cache<Key, Stored>,
    candidates: Cache<Key, Candidates>,
    max_candidates: usize,
}

impl MemoryStore {
    /// A store bounded as `settings` say.
    pub fn new(settings: &ResponseCacheConfig) -> Self {
        MemoryStore {
            entries: Cache::builder()
                .max_capacity(settings.max_bytes)
                .weigher(|_k, v: &Stored| u32::try_from(v.entry.body.len() + 96).unwrap_or(u32::MAX))
                .expire_after(PerEntryTtl)
                .build(),
            candidates: Cache::builder()
                .max_capacity(MAX_CONTEXTS)
                .time_to_idle(Duration::from_secs(settings.ttl_seconds))
                .build(),
            max_candidates: settings.max_semantic_candidates as usize,
        }
    }

    /// The entry stored under `key`.
    pub fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        self.entries.get(key).map(|s| s.entry)
    }

    /// The entry whose last user turn is closest to `embedding` among `context`'s candidates,
    /// if at least `threshold` similar. Candidates whose entry is gone are skipped.
    pub fn nearest(&self, context: &Key, embedding: &[f32], threshold: f32) -> Option<Arc<Entry>> {
        let candidates = self.candidates.get(context)?;
        let scored: Vec<(f32, Key)> = {
            let list = candidates.lock().ok()?;
            let mut s: Vec<(f32, Key)> = list
                .iter()
                .map(|(k, e)| (llmsoup_models::cosine(embedding, e), *k))
                .filter(|(score, _)| *score >= threshold)
                .collect();
            s.sort_by(|a, b| b.0.total_cmp(&a.0));
            s
        };
        scored.iter().find_map(|(_, k)| self.get(k))
    }

    /// Keeps the leader's answer.
    pub fn put(&self, flight: &Flight, entry: Arc<Entry>) {
        self.entries.insert(flight.key, Stored { entry, ttl: flight.ttl });
        if let Some(embedding) = &flight.embedding {
            let list = self.candidates.get_with(flight.context, Default::default);
            if let Ok(mut list) = list.lock() {
                list.retain(|(k, _)| *k != flight.key);
                list.push_front((flight.key, embedding.clone()));
                list.truncate(self.max_candidates);
            }
        }
    }
}
