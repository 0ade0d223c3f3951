//! The in-process backend for rodario: a broker that lives in memory.
//!
//! It is what you unit-test actors with: no server, deterministic, and the same observable
//! semantics as Redis: publishes report the exact number of receiving connections, names
//! carry the backend's prefix, registrations and leases expire (on tokio's clock, so
//! `tokio::time::pause` works), and frames are encoded and decoded exactly as over a wire.
//!
//! A [`MemoryBroker`] is the "server". Each call to [`MemoryBroker::backend`] opens a new
//! "connection" to it, as another process would: give each node its own.
//!
//! ```
//! use rodario_memory::MemoryBroker;
//!
//! let broker = MemoryBroker::new();
//! let for_node_a = broker.backend();
//! let for_node_b = broker.backend();
//! let other_tenant = broker.backend_with_prefix("tenant2:");
//! # drop((for_node_a, for_node_b, other_tenant));
//! ```

#![warn(missing_docs)]

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rodario_core::backend::{
    check_ttl, Backend, Channel, Delivery, FrameSink, Group, LockKey, LockStore, Presence,
    Subscription, Transport,
};
use rodario_core::error::BackendError;
use tokio::time::Instant;

const NAME: &str = "memory";

/// An in-memory broker shared by the backends made from it. Cloning it shares the broker.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<BrokerState>,
}

#[derive(Default)]
struct BrokerState {
    next_connection: AtomicU64,
    channels: Mutex<HashMap<ChannelKey, Arc<Subscribers>, BuildHasherDefault<Fnv>>>,
    groups: Mutex<HashMap<String, HashMap<String, Entry>>>,
    locks: Mutex<Leases>,
}

/// Lease entries, purged of expired ones whenever the map has doubled since the last purge
/// (singular calls take a lease per call and leave it to expire).
#[derive(Default)]
struct Leases {
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

/// FNV-1a: a publish hashes its channel's name, and SipHash's resistance to chosen keys buys
/// nothing here (every name comes from the process itself) at several times the cost.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A channel as the broker names it: the connection's prefix and the logical channel
/// (kept apart rather than formatted into one string, so publishing allocates nothing).
type ChannelKey = (Arc<str>, Channel);

/// The subscribers of one channel. Replaced whole when one comes or goes (copy on write),
/// so that a publish takes the broker's lock only to clone an `Arc`, and delivers without it.
#[derive(Clone, Default)]
struct Subscribers {
    list: Vec<Subscriber>,
    /// Distinct connections among them: what a publish reports, as Redis counts.
    connections: usize,
}

#[derive(Clone)]
struct Subscriber {
    connection: u64,
    id: u64,
    sink: Arc<dyn FrameSink>,
}

impl Subscribers {
    fn with(&self, subscriber: Subscriber) -> Self {
        let mut list = self.list.clone();
        list.push(subscriber);
        Self::counted(list)
    }

    fn without(&self, id: u64) -> Self {
        Self::counted(self.list.iter().filter(|s| s.id != id).cloned().collect())
    }

    fn counted(list: Vec<Subscriber>) -> Self {
        let mut connections: Vec<u64> = list.iter().map(|s| s.connection).collect();
        connections.sort_unstable();
        connections.dedup();
        Subscribers {
            connections: connections.len(),
            list,
        }
    }
}

/// Ends a subscription when dropped (closed or not).
struct SubscriptionGuard {
    state: Arc<BrokerState>,
    key: ChannelKey,
    id: u64,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        let mut channels = lock(&self.state.channels);
        if let Some(subscribers) = channels.get(&self.key) {
            let remaining = subscribers.without(self.id);
            if remaining.list.is_empty() {
                channels.remove(&self.key);
            } else {
                channels.insert(self.key.clone(), Arc::new(remaining));
            }
        }
    }
}

/// A registry member or a lease: who holds it, until when.
struct Entry {
    holder: String,
    expires: Instant,
}

/// `now + ttl`, or a century from now for a TTL too long to add (`Duration::MAX`).
fn expires_after(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires > now
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves no half-made update behind (every
    // critical section is a single map operation), so a poisoned lock is safe to reuse.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryBroker {
    /// A new, empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new connection to this broker with no prefix.
    pub fn backend(&self) -> Backend {
        self.backend_with_prefix("")
    }

    /// A new connection whose every name (channels, registry sets, lock keys) starts with
    /// `prefix`; connections with different prefixes do not see each other.
    pub fn backend_with_prefix(&self, prefix: &str) -> Backend {
        let connection = Arc::new(MemoryConnection {
            state: self.state.clone(),
            id: self.state.next_connection.fetch_add(1, Ordering::Relaxed),
            prefix: Arc::from(prefix),
        });
        Backend::new(NAME, connection.clone(), connection.clone(), connection)
    }

    /// The number of live subscriptions to `channel` under `prefix`, for tests that check
    /// what a node subscribed to and that it cleans up after itself.
    pub fn subscriptions(&self, prefix: &str, channel: &Channel) -> usize {
        lock(&self.state.channels)
            .get(&(Arc::from(prefix), channel.clone()))
            .map_or(0, |subscribers| subscribers.list.len())
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

/// One connection to a [`MemoryBroker`]; implements the three backend traits.
struct MemoryConnection {
    state: Arc<BrokerState>,
    id: u64,
    prefix: Arc<str>,
}

impl MemoryConnection {
    fn channel_key(&self, channel: &Channel) -> ChannelKey {
        (self.prefix.clone(), channel.clone())
    }

    fn group_name(&self, group: Group<'_>) -> String {
        match group {
            Group::Actors => format!("{}actors", self.prefix),
            Group::Members(channel) => format!("{}members:{channel}", self.prefix),
            other => format!("{}{other:?}", self.prefix),
        }
    }

    fn lock_name(&self, key: &LockKey) -> String {
        format!("{}{}", self.prefix, key.default_name())
    }
}

#[async_trait]
impl Transport for MemoryConnection {
    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery, BackendError> {
        let subscribers = lock(&self.state.channels)
            .get(&self.channel_key(channel))
            .cloned();
        let Some(subscribers) = subscribers else {
            return Ok(Delivery::Exact(0));
        };
        for subscriber in &subscribers.list {
            subscriber.sink.deliver(frame.clone());
        }
        Ok(Delivery::Exact(subscribers.connections))
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        let key = self.channel_key(channel);
        let id = self.state.next_connection.fetch_add(1, Ordering::Relaxed);
        {
            let mut channels = lock(&self.state.channels);
            let subscribers = channels
                .get(&key)
                .map_or_else(Subscribers::default, |s| Subscribers::clone(s));
            let subscriber = Subscriber {
                connection: self.id,
                id,
                sink,
            };
            channels.insert(key.clone(), Arc::new(subscribers.with(subscriber)));
        }
        let guard = SubscriptionGuard {
            state: self.state.clone(),
            key,
            id,
        };
        Ok(Subscription::new(async move { drop(guard) }))
    }

    fn counts_receivers(&self) -> bool {
        true
    }
}

#[async_trait]
impl Presence for MemoryConnection {
    async fn insert(
        &self,
        group: Group<'_>,
        member: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        check_ttl(NAME, ttl)?;
        let now = Instant::now();
        let mut groups = lock(&self.state.groups);
        let entries = groups.entry(self.group_name(group)).or_default();
        if entries.get(member).is_some_and(|e| e.live(now)) {
            return Ok(false);
        }
        entries.insert(
            member.to_owned(),
            Entry {
                holder: owner.to_owned(),
                expires: expires_after(now, ttl),
            },
        );
        Ok(true)
    }

    async fn renew(
        &self,
        group: Group<'_>,
        members: &[&str],
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>, BackendError> {
        check_ttl(NAME, ttl)?;
        let now = Instant::now();
        let mut groups = lock(&self.state.groups);
        let entries = groups.entry(self.group_name(group)).or_default();
        Ok(members
            .iter()
            .map(|member| match entries.get_mut(*member) {
                Some(entry) if entry.holder == owner && entry.live(now) => {
                    entry.expires = expires_after(now, ttl);
                    true
                }
                _ => false,
            })
            .collect())
    }

    async fn remove(
        &self,
        group: Group<'_>,
        member: &str,
        owner: Option<&str>,
    ) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut groups = lock(&self.state.groups);
        let Some(entries) = groups.get_mut(&self.group_name(group)) else {
            return Ok(false);
        };
        let held = entries
            .get(member)
            .is_some_and(|e| e.live(now) && owner.is_none_or(|o| o == e.holder));
        if held {
            entries.remove(member);
        }
        Ok(held)
    }

    async fn contains(&self, group: Group<'_>, member: &str) -> Result<bool, BackendError> {
        let now = Instant::now();
        Ok(lock(&self.state.groups)
            .get(&self.group_name(group))
            .and_then(|entries| entries.get(member))
            .is_some_and(|e| e.live(now)))
    }

    async fn members(&self, group: Group<'_>) -> Result<BTreeSet<String>, BackendError> {
        let now = Instant::now();
        let mut groups = lock(&self.state.groups);
        let Some(entries) = groups.get_mut(&self.group_name(group)) else {
            return Ok(BTreeSet::new());
        };
        entries.retain(|_, e| e.live(now));
        Ok(entries.keys().cloned().collect())
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
        let mut leases = lock(&self.state.locks);
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
        let mut leases = lock(&self.state.locks);
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
        let mut leases = lock(&self.state.locks);
        match leases.entries.get_mut(&self.lock_name(key)) {
            Some(entry) if entry.live(now) && entry.holder == token => {
                entry.expires = expires_after(now, ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
