//! The broker: the state every connection shares, as a server's would be.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rodario_core::backend::{Backend, Channel, LocalKeys};

use crate::locks::Leases;
use crate::names::ChannelKey;
use crate::presence::Registry;
use crate::transport::Subscribers;
use crate::{locked, MemoryConnection, NAME};

/// An in-memory broker shared by the backends made from it. Cloning it shares the broker.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<BrokerState>,
}

#[derive(Default)]
pub(crate) struct BrokerState {
    pub(crate) next_connection: AtomicU64,
    /// Hashed with `LocalKeys`: a publish hashes its channel's name, and every name comes
    /// from the process itself.
    pub(crate) channels: Mutex<HashMap<ChannelKey, Arc<Subscribers>, LocalKeys>>,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) locks: Mutex<Leases>,
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
        locked(&self.state.channels)
            .get(&(Arc::from(prefix), channel.clone()))
            .map_or(0, |subscribers| subscribers.list.len())
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}
