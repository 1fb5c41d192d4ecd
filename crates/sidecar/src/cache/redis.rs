//! The shared store: a Redis server (`redis` crate, tokio `ConnectionManager`, connected lazily
//! and reconnecting on its own). Every command is bounded by `response_cache.redis.timeout_ms`;
//! a failure is reported to the caller, which treats it as a miss.
//!
//! Keys (under `key_prefix`): `e:<exact key hex>` holds an encoded [`Entry`] with the entry's TTL;
//! `s:<context key hex>` is a list of semantic candidates, newest first, each the 32-byte exact
//! key followed by the embedding as little-endian f32s, trimmed to `max_semantic_candidates` and
//! expiring with its newest entry.

use std::sync::Arc;
use std::time::Duration;

use llmsoup_config::ResponseCacheConfig;
use llmsoup_router::plugins::cache::{Entry, Key};
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Flight, StoreError};

/// A Redis-backed store.
pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
    prefix: String,
    max_candidates: isize,
}

impl RedisStore {
    /// A store for `settings.redis` (no connection is made until the first command).
    pub fn new(settings: &ResponseCacheConfig) -> anyhow::Result<Self> {
        let r = settings
            .redis
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("response_cache.redis is required with backend: redis"))?;
        let client =
            redis::Client::open(r.url.as_str()).map_err(|e| anyhow::anyhow!("response_cache.redis.url: {e}"))?;
        let timeout = Duration::from_millis(r.timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("response_cache.redis: {e}"))?;
        Ok(RedisStore {
            conn,
            timeout,
            prefix: r.key_prefix.clone(),
            max_candidates: settings.max_semantic_candidates as isize,
        })
    }

    fn entry_key(&self, key: &Key) -> String {
        format!("{}e:{}", self.prefix, hex::encode(key))
    }

    fn context_key(&self, context: &Key) -> String {
        format!("{}s:{}", self.prefix, hex::encode(context))
    }

    async fn bounded<T>(&self, f: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError(e.to_string())),
            Err(_) => Err(StoreError(format!("no answer within {:?}", self.timeout))),
        }
    }

    /// The entry stored under `key`.
    pub async fn get(&self, key: &Key) -> Result<Option<Arc<Entry>>, StoreError> {
        let mut conn = self.conn.clone();
        let bytes: Option<Vec<u8>> = self.bounded(conn.get(self.entry_key(key))).await?;
        Ok(bytes.and_then(|b| Entry::decode(&b)).map(Arc::new))
    }

    /// The closest candidate of `context` at least `threshold` similar whose entry still exists.
    pub async fn nearest(
        &self,
        context: &Key,
        embedding: &[f32],
        threshold: f32,
    ) -> Result<Option<Arc<Entry>>, StoreError> {
        let mut conn = self.conn.clone();
        let items: Vec<Vec<u8>> = self
            .bounded(conn.lrange(self.context_key(context), 0, self.max_candidates - 1))
            .await?;
        let mut scored: Vec<(f32, Key)> = items
            .iter()
            .filter_map(|item| {
                let (k, rest) = item.split_first_chunk::<32>()?;
                if rest.len() != embedding.len() * 4 {
                    return None;
                }
                let other: Vec<f32> = rest
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Some((llmsoup_models::cosine(embedding, &other), *k))
            })
            .filter(|(s, _)| *s >= threshold)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, k) in scored.iter().take(4) {
            if let Some(e) = self.get(k).await? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Keeps the leader's answer (and its semantic candidate).
    pub async fn put(&self, flight: &Flight, entry: Arc<Entry>) -> Result<(), StoreError> {
        let ttl = flight.ttl.as_secs().max(1);
        let mut pipe = redis::pipe();
        pipe.set_ex(self.entry_key(&flight.key), entry.encode(), ttl).ignore();
        if let Some(embedding) = &flight.embedding {
            let mut item = Vec::with_capacity(32 + embedding.len() * 4);
            item.extend_from_slice(&flight.key);
            for x in embedding.iter() {
                item.extend_from_slice(&x.to_le_bytes());
            }
            let list = self.context_key(&flight.context);
            pipe.lpush(&list, item)
                .ignore()
                .ltrim(&list, 0, self.max_candidates - 1)
                .ignore()
                .expire(&list, ttl as i64)
                .ignore();
        }
        let mut conn = self.conn.clone();
        self.bounded(pipe.query_async::<()>(&mut conn)).await
    }
}
