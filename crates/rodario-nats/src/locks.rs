//! [`LockStore`]: leases in the leases bucket, one key per lock.

use std::time::Duration;

use async_trait::async_trait;
use rodario_core::backend::{LockKey, LockStore};
use rodario_core::error::BackendError;

use crate::{names, NatsConnection};

#[async_trait]
impl LockStore for NatsConnection {
    async fn acquire(
        &self,
        key: &LockKey,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let bucket = self.locks_bucket();
        bucket.check_ttl(ttl)?;
        let key = names::lock_key(key)?;
        self.bounded("a lease acquire", bucket.insert(&key, token, ttl))
            .await
    }

    async fn release(&self, key: &LockKey, token: &str) -> Result<bool, BackendError> {
        let key = names::lock_key(key)?;
        self.bounded(
            "a lease release",
            self.locks_bucket().remove(&key, Some(token)),
        )
        .await
    }

    async fn renew(&self, key: &LockKey, token: &str, ttl: Duration) -> Result<bool, BackendError> {
        let bucket = self.locks_bucket();
        bucket.check_ttl(ttl)?;
        let key = names::lock_key(key)?;
        self.bounded("a lease renewal", bucket.renew(&key, token, ttl))
            .await
    }
}
