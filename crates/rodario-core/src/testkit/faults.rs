//! A backend wrapper that injects faults: a connection a test can cut and restore, slow
//! down, or make lose frames, reporting its [`ConnectionState`] as a real backend does.
//!
//! It wraps any [`Backend`] (the memory broker for tests that run in milliseconds, or a real
//! Redis or NATS connection), so the guarantees that depend on faults (every call ends by its
//! deadline, calls in flight fail when the connection drops, registrations come back after
//! an outage) are checked the same way on every backend.
//!
//! One [`Faults`] controls every connection it wrapped: wrap all the nodes' backends with
//! one to take "the broker" away from everybody, or each with its own to cut one process off.
//!
//! ```
//! # async fn demo() {
//! use std::time::Duration;
//! use rodario_core::testkit::faults::{Faults, Operation};
//! # let backend: rodario_core::backend::Backend = unimplemented!();
//! let faults = Faults::new();
//! let backend = faults.wrap(backend);
//! faults.delay(Operation::Publish, Duration::from_secs(30)); // a broker that stalls
//! faults.cut(); // the connection drops: operations fail, frames are lost
//! faults.restore(); // and comes back
//! # drop(backend);
//! # }
//! ```

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use crate::backend::{
    Backend, Channel, ConnectionState, Delivery, FrameSink, Group, LeaseRenewal, LockKey,
    LockStore, Presence, Subscription, Transport,
};
use crate::error::{BackendError, BackendErrorKind};
use crate::name::{ActorId, NodeId};

/// What operations do while the connection is cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outage {
    /// They fail at once with a connection error, as the NATS client does.
    #[default]
    FailFast,
    /// They wait until the connection is restored, then run, as a client that queues its
    /// commands during a reconnect does (redis-rs's connection manager, up to its timeout).
    Hang,
}

/// A kind of backend operation, for [`Faults::delay`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`Transport::publish`].
    Publish,
    /// [`Transport::subscribe`].
    Subscribe,
    /// Every [`Presence`] operation.
    Presence,
    /// Every [`LockStore`] operation.
    Locks,
}

const OPERATIONS: usize = 4;

impl Operation {
    fn index(self) -> usize {
        match self {
            Operation::Publish => 0,
            Operation::Subscribe => 1,
            Operation::Presence => 2,
            Operation::Locks => 3,
        }
    }
}

/// The remote control of the connections it wrapped. Cheap to clone; clones control the
/// same connections.
#[derive(Clone)]
pub struct Faults {
    state: Arc<FaultState>,
}

struct FaultState {
    connection: watch::Sender<ConnectionState>,
    outage: Mutex<Outage>,
    delays: Mutex<[Duration; OPERATIONS]>,
    /// Frames still to be lost on their way to a subscriber.
    to_drop: AtomicUsize,
    /// Frames lost so far (while cut, or by [`Faults::drop_next_frames`]).
    dropped: AtomicUsize,
}

impl Default for Faults {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("cut", &self.is_cut())
            .field("outage", &self.outage_mode())
            .field("frames_dropped", &self.frames_dropped())
            .finish_non_exhaustive()
    }
}

impl Faults {
    /// A control with the connection up, no delays and no frames to drop.
    pub fn new() -> Self {
        Faults {
            state: Arc::new(FaultState {
                connection: watch::Sender::new(ConnectionState::Connected),
                outage: Mutex::new(Outage::default()),
                delays: Mutex::new([Duration::ZERO; OPERATIONS]),
                to_drop: AtomicUsize::new(0),
                dropped: AtomicUsize::new(0),
            }),
        }
    }

    /// `backend` behind this control. The wrapper keeps the backend's name, receiver counts
    /// and payload limit, and reports this control's connection state (not the wrapped
    /// backend's own).
    pub fn wrap(&self, backend: Backend) -> Backend {
        let name = backend.name();
        let connection = Arc::new(FaultyConnection {
            inner: backend,
            state: self.state.clone(),
        });
        Backend::new(name, connection.clone(), connection.clone(), connection)
    }

    /// Cuts the connection: it reports [`ConnectionState::Disconnected`], operations fail or
    /// wait (see [`Faults::outage`]), and frames on their way to its subscribers are lost.
    pub fn cut(&self) {
        self.state
            .connection
            .send_replace(ConnectionState::Disconnected);
    }

    /// Restores the connection: it reports [`ConnectionState::Connected`], waiting
    /// operations go on, and subscriptions deliver again (they survived, as a reconnecting
    /// backend restores them).
    pub fn restore(&self) {
        self.state
            .connection
            .send_replace(ConnectionState::Connected);
    }

    /// Whether the connection is cut.
    pub fn is_cut(&self) -> bool {
        *self.state.connection.borrow() == ConnectionState::Disconnected
    }

    /// Sets what operations do while the connection is cut (default [`Outage::FailFast`]).
    pub fn outage(&self, outage: Outage) {
        *lock(&self.state.outage) = outage;
    }

    fn outage_mode(&self) -> Outage {
        *lock(&self.state.outage)
    }

    /// Makes every `operation` wait `delay` before it starts (a slow or stalled broker);
    /// zero removes the delay. Waits on tokio's clock, so paused-time tests can use it.
    pub fn delay(&self, operation: Operation, delay: Duration) {
        lock(&self.state.delays)[operation.index()] = delay;
    }

    /// Loses the next `count` frames on their way to the wrapped connections' subscribers
    /// (a reply or a call that never arrives), counting from now.
    pub fn drop_next_frames(&self, count: usize) {
        self.state.to_drop.store(count, Ordering::SeqCst);
    }

    /// How many frames were lost so far, while cut or by [`Faults::drop_next_frames`].
    pub fn frames_dropped(&self) -> usize {
        self.state.dropped.load(Ordering::SeqCst)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One wrapped connection; implements the three backend traits over the wrapped ones.
struct FaultyConnection {
    inner: Backend,
    state: Arc<FaultState>,
}

impl FaultyConnection {
    /// Applies the faults in force before an operation of kind `operation` starts.
    async fn gate(&self, operation: Operation) -> Result<(), BackendError> {
        let delay = lock(&self.state.delays)[operation.index()];
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if *self.state.connection.borrow() == ConnectionState::Connected {
            return Ok(());
        }
        let outage = *lock(&self.state.outage);
        match outage {
            Outage::FailFast => Err(BackendError::new(
                self.inner.name(),
                BackendErrorKind::Connection,
                "the connection is cut (a fault injected by a test)",
            )),
            Outage::Hang => {
                let mut connection = self.state.connection.subscribe();
                // The sender lives in `self.state`, so this ends only when restored.
                let _ = connection
                    .wait_for(|state| *state == ConnectionState::Connected)
                    .await;
                Ok(())
            }
        }
    }

    /// `sink` behind this connection's faults.
    fn faulty(&self, sink: Arc<dyn FrameSink>) -> Arc<dyn FrameSink> {
        Arc::new(FaultySink {
            inner: sink,
            state: self.state.clone(),
        })
    }
}

/// Delivers to the wrapped sink unless the connection is cut or a frame is to be lost.
struct FaultySink {
    inner: Arc<dyn FrameSink>,
    state: Arc<FaultState>,
}

impl FrameSink for FaultySink {
    fn deliver(&self, frame: Bytes) {
        let cut = *self.state.connection.borrow() == ConnectionState::Disconnected;
        let lost = cut
            || self
                .state
                .to_drop
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if lost {
            self.state.dropped.fetch_add(1, Ordering::SeqCst);
        } else {
            self.inner.deliver(frame);
        }
    }
}

#[async_trait]
impl Transport for FaultyConnection {
    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery, BackendError> {
        self.gate(Operation::Publish).await?;
        self.inner.transport().publish(channel, frame).await
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        self.gate(Operation::Subscribe).await?;
        let sink = self.faulty(sink);
        self.inner.transport().subscribe(channel, sink).await
    }

    async fn subscribe_actor(
        &self,
        actor: &ActorId,
        node: &NodeId,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        self.gate(Operation::Subscribe).await?;
        let sink = self.faulty(sink);
        self.inner
            .transport()
            .subscribe_actor(actor, node, sink)
            .await
    }

    fn counts_receivers(&self) -> bool {
        self.inner.transport().counts_receivers()
    }

    fn max_payload(&self) -> Option<usize> {
        self.inner.transport().max_payload()
    }

    fn connection_state(&self) -> Option<watch::Receiver<ConnectionState>> {
        Some(self.state.connection.subscribe())
    }
}

#[async_trait]
impl Presence for FaultyConnection {
    async fn keep_alive(&self, owner: &str, ttl: Duration) -> Result<LeaseRenewal, BackendError> {
        self.gate(Operation::Presence).await?;
        self.inner.presence().keep_alive(owner, ttl).await
    }

    async fn release(&self, owner: &str) -> Result<bool, BackendError> {
        self.gate(Operation::Presence).await?;
        self.inner.presence().release(owner).await
    }

    async fn insert(
        &self,
        group: Group<'_>,
        member: &str,
        owner: &str,
    ) -> Result<bool, BackendError> {
        self.gate(Operation::Presence).await?;
        self.inner.presence().insert(group, member, owner).await
    }

    async fn held(
        &self,
        group: Group<'_>,
        members: &[&str],
        owner: &str,
    ) -> Result<Vec<bool>, BackendError> {
        self.gate(Operation::Presence).await?;
        self.inner.presence().held(group, members, owner).await
    }

    async fn remove(
        &self,
        group: Group<'_>,
        member: &str,
        owner: Option<&str>,
    ) -> Result<bool, BackendError> {
        self.gate(Operation::Presence).await?;
        self.inner.presence().remove(group, member, owner).await
    }

    async fn contains(&self, group: Group<'_>, member: &str) -> Result<bool, BackendError> {
        self.gate(Operation::Presence).await?;
        self.inner.presence().contains(group, member).await
    }

    async fn members(&self, group: Group<'_>) -> Result<BTreeSet<String>, BackendError> {
        self.gate(Operation::Presence).await?;
        self.inner.presence().members(group).await
    }

    fn refresh_every(&self) -> Option<Duration> {
        self.inner.presence().refresh_every()
    }
}

#[async_trait]
impl LockStore for FaultyConnection {
    async fn acquire(
        &self,
        key: &LockKey,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.gate(Operation::Locks).await?;
        self.inner.locks().acquire(key, token, ttl).await
    }

    async fn release(&self, key: &LockKey, token: &str) -> Result<bool, BackendError> {
        self.gate(Operation::Locks).await?;
        self.inner.locks().release(key, token).await
    }

    async fn renew(&self, key: &LockKey, token: &str, ttl: Duration) -> Result<bool, BackendError> {
        self.gate(Operation::Locks).await?;
        self.inner.locks().renew(key, token, ttl).await
    }
}
