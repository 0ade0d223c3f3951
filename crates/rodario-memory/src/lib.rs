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
//!
//! # Layout
//!
//! The files are those of every rodario backend, less the two that would be empty: there
//! is no `config.rs` (a connection's only setting is its prefix, an argument of
//! [`MemoryBroker::backend_with_prefix`]) and no `error.rs` (nothing here fails but a zero
//! TTL, which `rodario_core` refuses). `broker.rs` holds the broker's state, which every
//! connection shares; `transport.rs`, `presence.rs` and `locks.rs` implement the three
//! backend traits on a connection; `names.rs` maps channels, groups and lock keys to the
//! broker's names, the Python library's behind the prefix.

#![warn(missing_docs)]

mod broker;
mod locks;
mod names;
mod presence;
mod transport;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

pub use broker::MemoryBroker;

use crate::broker::BrokerState;

const NAME: &str = "memory";

/// One connection to a [`MemoryBroker`]; implements the three backend traits.
struct MemoryConnection {
    state: Arc<BrokerState>,
    id: u64,
    prefix: Arc<str>,
}

/// A lock's lease: who holds it, until when.
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

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves no half-made update behind (every
    // critical section checks before it changes anything), so a poisoned lock is safe to reuse.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
