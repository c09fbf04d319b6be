//! Account leases: at most one holder per account at a time, across processes.
//!
//! Distributed mode keeps them in Redis: `SET key token NX PX ttl` to take one, a
//! compare-and-pexpire script to renew, compare-and-delete to release. A lease can still be
//! lost (a paused process, a wiped Redis), which is why every database write made under a lease
//! is also fenced by the account's `lease_epoch` (see `store`). Single-machine mode uses the
//! in-process [`LocalLocks`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;

/// A held lease. The token proves ownership on renew and release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub account_id: i64,
    token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease store unavailable: {0}")]
    Redis(crate::queue::RedisFailure),
}

// Through `RedisFailure`, so the text holds each cause once and no password.
impl From<redis::RedisError> for LeaseError {
    fn from(e: redis::RedisError) -> Self {
        LeaseError::Redis(crate::queue::RedisFailure::new(&e, None))
    }
}

/// Where leases live.
#[async_trait]
pub trait AccountLocks: Send + Sync + 'static {
    /// Takes the account's lease if nobody holds it.
    async fn try_acquire(&self, account_id: i64) -> Result<Option<Lease>, LeaseError>;
    /// Extends the lease; false when it was lost (expired or taken by someone else).
    async fn renew(&self, lease: &Lease) -> Result<bool, LeaseError>;
    /// Gives the lease back; false when it was already lost.
    async fn release(&self, lease: &Lease) -> Result<bool, LeaseError>;
    /// Whether anybody holds the account's lease now.
    async fn is_held(&self, account_id: i64) -> Result<bool, LeaseError>;
    /// How long a lease lives without renewal.
    fn ttl(&self) -> Duration;
}

/// Lease keys checked by one `EXISTS` of [`RedisLocks::held_count`].
const HELD_COUNT_KEYS: i64 = 1000;

/// Leases in Redis, under `{prefix}lease:account:{id}`.
#[derive(Clone)]
pub struct RedisLocks {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
}

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

impl RedisLocks {
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>, ttl: Duration) -> Self {
        Self { conn, prefix: prefix.into(), ttl }
    }

    fn key(&self, account_id: i64) -> String {
        format!("{}lease:account:{account_id}", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Number of leases held now on the accounts with ids 1 to `max_account_id` (a gauge for
    /// /metrics; the caller reads the highest id from the database).
    ///
    /// One `EXISTS` of up to 1,000 lease keys per thousand accounts, all in one
    /// round trip: the cost follows the number of accounts. A `SCAN` of the lease pattern
    /// walks every key of the database instead, and the queue keeps a few keys per waiting
    /// job, so with 100,000 jobs waiting each sample of every worker read some 200,000 keys.
    pub async fn held_count(&self, max_account_id: i64) -> Result<u64, LeaseError> {
        if max_account_id < 1 {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        let mut first = 1;
        while first <= max_account_id {
            let last = max_account_id.min(first + HELD_COUNT_KEYS - 1);
            let cmd = pipe.cmd("EXISTS");
            for id in first..=last {
                cmd.arg(self.key(id));
            }
            first = last + 1;
        }
        let mut conn = self.conn.clone();
        let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(counts.into_iter().sum())
    }
}

#[async_trait]
impl AccountLocks for RedisLocks {
    async fn try_acquire(&self, account_id: i64) -> Result<Option<Lease>, LeaseError> {
        let token = ulid::Ulid::new().to_string();
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(account_id))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(&mut conn)
            .await?;
        Ok(set.map(|_| Lease { account_id, token }))
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let mut conn = self.conn.clone();
        let renewed: i64 = redis::Script::new(RENEW)
            .key(self.key(lease.account_id))
            .arg(&lease.token)
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await?;
        Ok(renewed == 1)
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let mut conn = self.conn.clone();
        let deleted: i64 = redis::Script::new(RELEASE)
            .key(self.key(lease.account_id))
            .arg(&lease.token)
            .invoke_async(&mut conn)
            .await?;
        Ok(deleted == 1)
    }

    async fn is_held(&self, account_id: i64) -> Result<bool, LeaseError> {
        let mut conn = self.conn.clone();
        let exists: bool =
            redis::cmd("EXISTS").arg(self.key(account_id)).query_async(&mut conn).await?;
        Ok(exists)
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Leases inside one process, for `smart-joiner run`. They never expire: the process holding
/// them is the only one working.
#[derive(Clone, Default)]
pub struct LocalLocks {
    held: Arc<Mutex<HashMap<i64, String>>>,
}

impl LocalLocks {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<i64, String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl AccountLocks for LocalLocks {
    async fn try_acquire(&self, account_id: i64) -> Result<Option<Lease>, LeaseError> {
        let mut held = self.held();
        if held.contains_key(&account_id) {
            return Ok(None);
        }
        let token = ulid::Ulid::new().to_string();
        held.insert(account_id, token.clone());
        Ok(Some(Lease { account_id, token }))
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, LeaseError> {
        Ok(self.held().get(&lease.account_id) == Some(&lease.token))
    }

    async fn release(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let mut held = self.held();
        if held.get(&lease.account_id) == Some(&lease.token) {
            held.remove(&lease.account_id);
            return Ok(true);
        }
        Ok(false)
    }

    async fn is_held(&self, account_id: i64) -> Result<bool, LeaseError> {
        Ok(self.held().contains_key(&account_id))
    }

    fn ttl(&self) -> Duration {
        Duration::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_lock_has_one_holder_and_only_the_holder_releases_it() {
        let locks = LocalLocks::default();
        let a = locks.try_acquire(1).await.unwrap().expect("free");
        assert!(locks.try_acquire(1).await.unwrap().is_none());
        let forged = Lease { account_id: 1, token: "forged".into() };
        assert!(!locks.release(&forged).await.unwrap());
        assert!(locks.is_held(1).await.unwrap());
        assert!(locks.renew(&a).await.unwrap());
        assert!(locks.release(&a).await.unwrap());
        assert!(!locks.renew(&a).await.unwrap());
        assert!(locks.try_acquire(1).await.unwrap().is_some());
    }
}
