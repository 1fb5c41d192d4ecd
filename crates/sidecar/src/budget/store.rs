//! The budget counters in Redis: one pipelined round trip per check or charge, over a
//! connection that reconnects on its own, every call bounded by `budgets.store.timeout_ms`.

use std::time::Duration;

use llmsoup_config::BudgetStore;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// One counter operation.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// Read a counter (0 when absent).
    Get {
        /// The key.
        key: &'a str,
    },
    /// Add to a counter and (re)arm its expiry; yields the new value.
    Incr {
        /// The key.
        key: &'a str,
        /// What to add.
        by: i64,
        /// Seconds the key lives on (it outlives its window, then Redis drops it).
        ttl: u64,
    },
}

/// Why the store did not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis refused or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within `timeout_ms`.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// A Redis connection for budget counters.
pub struct Store {
    settings: BudgetStore,
    conn: ConnectionManager,
    timeout: Duration,
}

impl Store {
    /// A store for `settings`; connects on first use (an unreachable Redis is not an error
    /// here), and reconnects after failures.
    pub fn open(settings: &BudgetStore) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let client = redis::Client::open(settings.redis_url.as_str())
            .map_err(|e| anyhow::anyhow!("budgets.store.redis_url: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("budgets.store: {e}"))?;
        Ok(Store {
            settings: settings.clone(),
            conn,
            timeout,
        })
    }

    /// The settings it was opened with.
    pub fn settings(&self) -> &BudgetStore {
        &self.settings
    }

    /// Runs `ops` in one pipeline; one value per op, in order.
    pub async fn run(&self, ops: &[Op<'_>]) -> Result<Vec<i64>, StoreError> {
        let mut pipe = redis::pipe();
        for op in ops {
            match *op {
                Op::Get { key } => {
                    pipe.cmd("GET").arg(key);
                }
                Op::Incr { key, by, ttl } => {
                    pipe.cmd("INCRBY").arg(key).arg(by);
                    pipe.cmd("EXPIRE").arg(key).arg(ttl).ignore();
                }
            }
        }
        let mut conn = self.conn.clone();
        let values: Vec<Option<i64>> = tokio::time::timeout(self.timeout, pipe.query_async(&mut conn))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }
}
