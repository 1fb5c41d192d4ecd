//! `response_cache:`: where the response cache of decisions with a `cache` plugin keeps its
//! entries (in-process by default, Redis to share them across replicas), its bounds, and
//! in-flight deduplication.

use super::*;

/// Where cached responses live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CacheBackend {
    /// In the sidecar's memory (moka), bounded by `max_bytes`; one cache per replica.
    #[default]
    Memory,
    /// A Redis server shared by every replica (`redis.url`); when it cannot be reached the
    /// cache degrades to a miss (counted in `llmsoup_cache_errors_total`), never to an error.
    Redis,
}

/// `response_cache.redis`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheRedisConfig {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). Use `${ENV}` for
    /// credentials.
    pub url: String,
    /// Longest a cache command may take before the request goes on as a miss (milliseconds).
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// Prefix of every key llmsoup writes.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

fn default_redis_timeout_ms() -> u64 {
    50
}

fn default_key_prefix() -> String {
    "llmsoup:cache:".into()
}

/// `response_cache.dedup`: identical concurrent requests wait for the first one's answer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheDedupConfig {
    /// Off: every miss goes to the provider.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Longest a duplicate waits for the first request's answer before it goes to the provider
    /// itself (milliseconds).
    #[serde(default = "default_dedup_wait_ms")]
    pub max_wait_ms: u64,
}

fn default_dedup_wait_ms() -> u64 {
    30_000
}

impl Default for CacheDedupConfig {
    fn default() -> Self {
        CacheDedupConfig {
            enabled: true,
            max_wait_ms: default_dedup_wait_ms(),
        }
    }
}

/// `response_cache:` (used by decisions with a `cache` plugin).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseCacheConfig {
    /// `memory` (default) or `redis`.
    #[serde(default)]
    pub backend: CacheBackend,
    /// The Redis server, with `backend: redis`.
    #[serde(default)]
    pub redis: Option<CacheRedisConfig>,
    /// How long an entry lives unless its plugin says otherwise (seconds).
    #[serde(default = "default_ttl_seconds")]
    pub ttl_seconds: u64,
    /// In-process backend: total bytes of cached bodies kept (least recently used go first).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Largest response body cached; bigger answers are passed on and not kept.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
    /// Most semantic candidates compared per conversation context (model, tenant, system
    /// prompt, history, tools, parameters); older ones are forgotten first.
    #[serde(default = "default_max_semantic_candidates")]
    pub max_semantic_candidates: u32,
    /// In-flight deduplication.
    #[serde(default)]
    pub dedup: CacheDedupConfig,
}

fn default_ttl_seconds() -> u64 {
    3600
}

fn default_max_bytes() -> u64 {
    256 << 20
}

fn default_max_entry_bytes() -> u64 {
    256 << 10
}

fn default_max_semantic_candidates() -> u32 {
    1024
}

impl Default for ResponseCacheConfig {
    fn default() -> Self {
        ResponseCacheConfig {
            backend: CacheBackend::Memory,
            redis: None,
            ttl_seconds: default_ttl_seconds(),
            max_bytes: default_max_bytes(),
            max_entry_bytes: default_max_entry_bytes(),
            max_semantic_candidates: default_max_semantic_candidates(),
            dedup: CacheDedupConfig::default(),
        }
    }
}

impl ResponseCacheConfig {
    /// Cross-field checks; errors name `response_cache.*`.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let at = "response_cache";
        if self.backend == CacheBackend::Redis {
            let Some(r) = &self.redis else {
                return Err(ConfigError::invalid(
                    format!("{at}.redis"),
                    "`backend: redis` needs `redis.url`",
                ));
            };
            if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://") || r.url.starts_with("unix://")) {
                return Err(ConfigError::invalid(
                    format!("{at}.redis.url"),
                    "expected a redis://, rediss:// or unix:// URL",
                ));
            }
        }
        for (key, v) in [
            ("ttl_seconds", self.ttl_seconds),
            ("max_bytes", self.max_bytes),
            ("max_entry_bytes", self.max_entry_bytes),
            ("max_semantic_candidates", u64::from(self.max_semantic_candidates)),
            ("redis.timeout_ms", self.redis.as_ref().map_or(1, |r| r.timeout_ms)),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(format!("{at}.{key}"), "must be at least 1"));
            }
        }
        // The wasm filter carries a captured body in its Report call: keep it well under the
        // 64 MiB gRPC message bound.
        if self.max_entry_bytes > 8 << 20 {
            return Err(ConfigError::invalid(
                format!("{at}.max_entry_bytes"),
                "at most 8 MiB (8388608)",
            ));
        }
        Ok(())
    }
}
