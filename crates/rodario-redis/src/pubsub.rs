//! Subscriptions multiplexed over the backend's subscriptions connection (on a cluster,
//! its connection to each node, all feeding one handler).
//!
//! The connection's reader hands every push message to [`Dispatch::on_push`], which hands
//! the frame to the [`FrameSink`] of each local subscription to that channel. Sinks never
//! wait (they queue with a bound or drop), so the socket is read continuously and a slow
//! subscriber cannot make Redis's output buffer for this client grow.
//!
//! Redis keeps one subscription per channel per connection, so several local
//! subscriptions to one channel share it: the first sends `SUBSCRIBE`, the last to leave
//! sends `UNSUBSCRIBE`. Both run under a per-channel lock so they reach the server in order.
//! A subscription dropped without [`Subscription::close`](rodario_core::backend::Subscription::close)
//! is unsubscribed by a background task, as is a channel the server still delivers but
//! nobody here listens to.
//!
//! On a cluster the same background task restores sharded subscriptions the cluster lost:
//! after a node's connection dropped (a primary died and a replica takes over), every
//! channel is subscribed anew, one `SSUBSCRIBE` per channel, before the connection is
//! reported [`ConnectionState::Connected`] again; a channel the server unsubscribed by
//! itself (`SUNSUBSCRIBE` push: its slot moved to another node) while someone here still
//! listens is subscribed again at once. redis-rs resubscribes on its own too, but with one
//! `SSUBSCRIBE` naming every channel of a node, which a cluster refuses when they span
//! slots (`CROSSSLOT`), and not after a server's `SUNSUBSCRIBE`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use rodario_core::backend::{ConnectionState, FrameSink, LocalKeys};
use tokio::sync::{mpsc, watch};

use crate::Inner;

/// Pause between pings while the connection is down.
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// One local subscription: where its frames go, and whether it is still wanted (cleared
/// when it is dropped without being closed).
struct Local {
    id: u64,
    sink: Arc<dyn FrameSink>,
    open: Arc<AtomicBool>,
}

/// Work for the background task.
pub(crate) enum Chore {
    /// Check whether `channel` should be unsubscribed.
    Reap(String),
    /// The connection dropped: report [`ConnectionState::Connected`] once commands work again.
    Probe,
    /// The cluster unsubscribed `channel` by itself: subscribe it again if still wanted.
    Resubscribe(String),
}

/// Why a channel should be checked for unsubscribing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reap {
    /// A local subscription was dropped without being closed.
    Dropped,
    /// The server delivered a frame on a channel nobody here subscribes to.
    Stray,
}

#[derive(Default)]
struct Table {
    /// Local subscriptions per channel name (prefix included). A channel is in this map
    /// exactly while this connection is subscribed to it at the server. Every message looks
    /// its channel up here, and only this process's subscriptions insert: `LocalKeys`.
    channels: HashMap<String, Vec<Local>, LocalKeys>,
    /// Channels waiting for the reaper, so that a burst of stray frames asks once.
    pending: HashMap<String, Reap>,
}

/// Routes push messages from the connection to local subscriptions.
pub(crate) struct Dispatch {
    table: Mutex<Table>,
    reaper: mpsc::UnboundedSender<Chore>,
    state: watch::Sender<ConnectionState>,
    next_id: AtomicU64,
    /// Connection losses so far: a probe that saw another loss while it restored the
    /// connection restores it again (on a cluster, a second node may have dropped).
    losses: AtomicU64,
    addr: String,
    /// A cluster's connection: sharded pub/sub, restored by this crate after failovers.
    cluster: bool,
}

fn locked(mutex: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // Every critical section is a handful of map operations that cannot leave the table
    // half updated, so a poisoned lock is safe to keep using.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Dispatch {
    /// A dispatch table whose chores go to `reaper`; `cluster` for a cluster's connection.
    pub(crate) fn new(reaper: mpsc::UnboundedSender<Chore>, addr: String, cluster: bool) -> Self {
        Dispatch {
            table: Mutex::new(Table::default()),
            reaper,
            state: watch::Sender::new(ConnectionState::Connected),
            next_id: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            addr,
            cluster,
        }
    }

    /// The server's (or the cluster seeds') `host:port`, for messages.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Handles one push message from the connection. Never blocks.
    pub(crate) fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => self.on_message(push.data),
            PushKind::Disconnection => self.on_disconnected(),
            PushKind::Subscribe | PushKind::SSubscribe => self.on_subscribed(push.data),
            PushKind::SUnsubscribe if self.cluster => self.on_unsubscribed(push.data),
            _ => {}
        }
    }

    /// A `SUNSUBSCRIBE` on a cluster: ours (nobody here listens to the channel any more), or
    /// the server's own when the channel's slot left the node, which is undone at once.
    fn on_unsubscribed(&self, data: Vec<Value>) {
        let Some(channel) = data.into_iter().next().and_then(channel_name) else {
            return;
        };
        if self.wants(&channel) {
            tracing::info!(addr = %self.addr, %channel, "the cluster unsubscribed a channel (its slot moved); subscribing again");
            let _ = self.reaper.send(Chore::Resubscribe(channel));
        }
    }

    /// Whether someone here listens to `channel`.
    pub(crate) fn wants(&self, channel: &str) -> bool {
        locked(&self.table)
            .channels
            .get(channel)
            .is_some_and(|locals| {
                locals
                    .iter()
                    .any(|local| local.open.load(Ordering::Acquire))
            })
    }

    /// The channels someone here listens to.
    pub(crate) fn wanted(&self) -> Vec<String> {
        locked(&self.table)
            .channels
            .iter()
            .filter(|(_, locals)| {
                locals
                    .iter()
                    .any(|local| local.open.load(Ordering::Acquire))
            })
            .map(|(channel, _)| channel.clone())
            .collect()
    }

    /// The connection dropped (the connection manager, or the cluster client, is already
    /// reconnecting), or a cluster subscription could not be restored.
    fn on_disconnected(&self) {
        self.losses.fetch_add(1, Ordering::AcqRel);
        let changed = self.state.send_if_modified(|state| {
            let was_connected = *state == ConnectionState::Connected;
            *state = ConnectionState::Disconnected;
            was_connected
        });
        if changed {
            tracing::warn!(
                addr = %self.addr,
                "redis connection lost; reconnecting (subscriptions are restored on reconnect, \
                 frames published meanwhile are lost)"
            );
            let _ = self.reaper.send(Chore::Probe);
        }
    }

    /// Watches the connection's state.
    pub(crate) fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    /// A `SUBSCRIBE` confirmation: ours (the channel is in the table from before the command
    /// was sent), or the resubscription after a reconnect of a channel that was closed
    /// while the server was unreachable, which is unsubscribed now.
    fn on_subscribed(&self, data: Vec<Value>) {
        let Some(channel) = data.into_iter().next().and_then(channel_name) else {
            return;
        };
        tracing::trace!(addr = %self.addr, %channel, "subscription confirmed");
        let mut table = locked(&self.table);
        if !table.channels.contains_key(&channel) {
            Self::request(&mut table, &self.reaper, channel, Reap::Stray);
        }
    }

    fn on_message(&self, data: Vec<Value>) {
        let mut data = data.into_iter();
        let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
            tracing::debug!(addr = %self.addr, "ignoring a pub/sub message without channel and payload");
            return;
        };
        let Some(channel) = channel_name(channel) else {
            return;
        };
        let payload = match payload {
            Value::BulkString(bytes) => Bytes::from(bytes),
            Value::SimpleString(text) => Bytes::from(text),
            other => {
                tracing::debug!(addr = %self.addr, %channel, reply = ?other, "ignoring a pub/sub message with a non-string payload");
                return;
            }
        };
        // The first sink apart from the others: a channel has one sink nearly always (an
        // actor's, a node's replies), and then no list is allocated for the others.
        let (first, others) = {
            let mut table = locked(&self.table);
            let (sinks, reap) = match table.channels.get_mut(&channel) {
                None => ((None, Vec::new()), Some(Reap::Stray)),
                Some(locals) => {
                    locals.retain(|local| local.open.load(Ordering::Acquire));
                    let mut sinks = locals.iter().map(|local| local.sink.clone());
                    let first = sinks.next();
                    let others: Vec<_> = sinks.collect();
                    ((first, others), locals.is_empty().then_some(Reap::Dropped))
                }
            };
            if let Some(reason) = reap {
                Self::request(&mut table, &self.reaper, channel, reason);
            }
            sinks
        };
        // Delivered outside the table's lock: a sink may drop the last reference to what
        // owns a subscription, whose guard then takes the lock. Sinks take frames without
        // waiting (they queue with a bound or drop), so the connection keeps being read
        // however slow a consumer is. The first sink (the only one, for a call) takes the
        // payload itself, after the others' copies: cloning it would cost an allocation.
        if let Some(first) = first {
            for sink in others {
                sink.deliver(payload.clone());
            }
            first.deliver(payload);
        }
    }

    fn request(
        table: &mut Table,
        reaper: &mpsc::UnboundedSender<Chore>,
        channel: String,
        reason: Reap,
    ) {
        match table.pending.entry(channel) {
            Entry::Occupied(mut pending) => {
                if reason > *pending.get() {
                    pending.insert(reason);
                }
            }
            Entry::Vacant(vacant) => {
                // The reaper is gone only when the backend is; then nothing needs reaping.
                let _ = reaper.send(Chore::Reap(vacant.key().clone()));
                vacant.insert(reason);
            }
        }
    }

    /// Asks the reaper to unsubscribe `channel` if nobody here listens to it any more.
    pub(crate) fn request_reap(&self, channel: &str, reason: Reap) {
        let mut table = locked(&self.table);
        Self::request(&mut table, &self.reaper, channel.to_owned(), reason);
    }

    /// Adds a local subscription to `channel` delivering to `sink`. Returns its id, the flag
    /// that keeps it open, and whether the connection must subscribe at the server (nobody
    /// here was subscribed yet). Call with the channel's lock held.
    pub(crate) fn add(
        &self,
        channel: &str,
        sink: Arc<dyn FrameSink>,
    ) -> (u64, Arc<AtomicBool>, bool) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let open = Arc::new(AtomicBool::new(true));
        let mut table = locked(&self.table);
        let locals = table.channels.entry(channel.to_owned()).or_default();
        let first = locals.is_empty();
        locals.push(Local {
            id,
            sink,
            open: open.clone(),
        });
        (id, open, first)
    }

    /// Removes local subscription `id` (when given) and the dropped ones from `channel`.
    /// Returns whether the connection should unsubscribe at the server: nobody here listens
    /// any more, and either the channel is known as subscribed or `stray` says the server
    /// may still deliver it. The channel's entry stays until [`Dispatch::forget`], so frames
    /// still in flight are not taken for stray ones. Call with the channel's lock held.
    pub(crate) fn remove(&self, channel: &str, id: Option<u64>, stray: bool) -> bool {
        let mut table = locked(&self.table);
        match table.channels.get_mut(channel) {
            Some(locals) => {
                locals.retain(|local| Some(local.id) != id && local.open.load(Ordering::Acquire));
                locals.is_empty()
            }
            None => stray,
        }
    }

    /// Forgets `channel` if nobody here listens to it (after unsubscribing, or after a
    /// failed subscribe). Call with the channel's lock held.
    pub(crate) fn forget(&self, channel: &str) {
        let mut table = locked(&self.table);
        if table.channels.get(channel).is_some_and(Vec::is_empty) {
            table.channels.remove(channel);
        }
    }

    /// Takes `channel`'s pending reap request, if any.
    fn take_pending(&self, channel: &str) -> Option<Reap> {
        locked(&self.table).pending.remove(channel)
    }
}

/// The channel name in a push message (every channel this backend uses is UTF-8).
fn channel_name(value: Value) -> Option<String> {
    match value {
        Value::BulkString(name) => String::from_utf8(name).ok(),
        Value::SimpleString(name) => Some(name),
        _ => None,
    }
}

/// Stops delivery and asks for a reap when a subscription is dropped without being closed.
pub(crate) struct CloseGuard {
    pub(crate) dispatch: Arc<Dispatch>,
    pub(crate) channel: String,
    pub(crate) open: Arc<AtomicBool>,
    pub(crate) closed: bool,
}

impl CloseGuard {
    /// The subscription was closed: nothing left to reap.
    pub(crate) fn disarm(&mut self) {
        self.closed = true;
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        if !self.closed {
            self.open.store(false, Ordering::Release);
            self.dispatch.request_reap(&self.channel, Reap::Dropped);
        }
    }
}

/// Unsubscribes channels that nobody here listens to any more, and tells when a lost
/// connection works again, until the backend is gone.
pub(crate) async fn reaper(inner: Weak<Inner>, mut chores: mpsc::UnboundedReceiver<Chore>) {
    while let Some(chore) = chores.recv().await {
        match chore {
            Chore::Reap(channel) => {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let Some(reason) = inner.dispatch.take_pending(&channel) else {
                    continue;
                };
                inner
                    .unsubscribe_local(&channel, None, reason == Reap::Stray)
                    .await;
            }
            Chore::Probe => {
                if !probe(&inner).await {
                    return;
                }
            }
            Chore::Resubscribe(channel) => {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                if let Err(e) = inner.resubscribe(&channel).await {
                    // Treated as a lost connection: calls fail fast, and the probe
                    // subscribes every channel anew until it works.
                    tracing::warn!(%channel, error = %e, "could not subscribe a channel again");
                    inner.dispatch.on_disconnected();
                }
            }
        }
    }
}

/// Checks the connection until it answers ([`Inner::restore`]) with no loss reported
/// meanwhile, then reports it connected. False when the backend is gone.
async fn probe(inner: &Weak<Inner>) -> bool {
    loop {
        let Some(strong) = inner.upgrade() else {
            return false;
        };
        let losses = strong.dispatch.losses.load(Ordering::Acquire);
        if strong.restore().await.is_ok() {
            if strong.dispatch.losses.load(Ordering::Acquire) != losses {
                // Lost again while restoring: what was restored may be gone already.
                continue;
            }
            if let Err(e) = strong.name_connection().await {
                tracing::debug!(error = %e, "could not name the restored redis connection");
            }
            strong
                .dispatch
                .state
                .send_replace(ConnectionState::Connected);
            tracing::info!(addr = %strong.addr, "redis connection restored");
            return true;
        }
        drop(strong);
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}
