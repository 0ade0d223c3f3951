//! [`LockStore`]: leases held by their token until they expire.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use rodario_core::backend::{check_ttl, LockKey, LockStore};
use rodario_core::error::BackendError;
use tokio::time::Instant;

use crate::{expires_after, locked, Entry, MemoryConnection, NAME};

/// Lease entries, purged of expired ones whenever the map has doubled since the last purge
/// (singular calls take a lease per call and leave it to expire).
#[derive(Default)]
pub(crate) struct Leases {
    entries: HashMap<String, Entry>,
    purge_above: usize,
}

impl Leases {
    fn purge_if_grown(&mut self, now: Instant) {
        if self.entries.len() > self.purge_above.max(1024) {
            self.entries.retain(|_, e| e.live(now));
            self.purge_above = self.entries.len() * 2;
        }
    }
}

#[async_trait]
impl LockStore for MemoryConnection {
    async fn acquire(
        &self,
        key: &LockKey,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        check_ttl(NAME, ttl)?;
        let now = Instant::now();
        let mut leases = locked(&self.state.locks);
        leases.purge_if_grown(now);
        let name = self.lock_name(key);
        if leases.entries.get(&name).is_some_and(|e| e.live(now)) {
            return Ok(false);
        }
        leases.entries.insert(
            name,
            Entry {
                holder: token.to_owned(),
                expires: expires_after(now, ttl),
            },
        );
        Ok(true)
    }

    async fn release(&self, key: &LockKey, token: &str) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut leases = locked(&self.state.locks);
        let name = self.lock_name(key);
        let held = leases
            .entries
            .get(&name)
            .is_some_and(|e| e.live(now) && e.holder == token);
        if held {
            leases.entries.remove(&name);
        }
        Ok(held)
    }

    async fn renew(&self, key: &LockKey, token: &str, ttl: Duration) -> Result<bool, BackendError> {
        check_ttl(NAME, ttl)?;
        let now = Instant::now();
        let mut leases = locked(&self.state.locks);
        match leases.entries.get_mut(&self.lock_name(key)) {
            Some(entry) if entry.live(now) && entry.holder == token => {
                entry.expires = expires_after(now, ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
