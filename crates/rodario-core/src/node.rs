//! A node: one process's connection to a broker, hosting actors and proxies.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch, Notify, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::actor::{Actor, ActorBuilder, ActorShared, Envelope, Via};
use crate::backend::{Backend, Channel, ConnectionState, Delivery, FrameSink, Group, Subscription};
use crate::cluster::{ClusterProxy, TypedCluster};
use crate::error::{BackendError, BackendErrorKind, Error, RemoteError, RemoteErrorKind, Result};
use crate::frame::{
    decode_frame, encode_frame, encode_reply, Call, Expect, Frame, Outcome, Reply,
    DEFAULT_MAX_FRAME,
};
use crate::lock::Locks;
use crate::name::{ActorId, ClusterName, NodeId};
use crate::registry::ActorRegistry;

/// The default deadline of a call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The default liveness TTL: a process that stops renewing its registrations for this long
/// (because it crashed) loses them. Renewals run every third of it.
pub const DEFAULT_LIVENESS_TTL: Duration = Duration::from_secs(10);

/// The longest call deadline or liveness TTL a node uses; longer ones (say `Duration::MAX`
/// for "no deadline") are cut to it rather than overflowing the clock.
pub const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The default number of calls an actor may have queued before new ones are shed.
pub const DEFAULT_MAILBOX: usize = 1024;

/// A process's connection to a broker: it hosts actors, makes proxies, and holds the
/// settings they share. Cheap to clone; clones share everything.
///
/// A node owns no global state: two nodes in one process (on different backends or
/// prefixes) are as isolated as two processes.
///
/// ```
/// # async fn demo(backend: rodario_core::backend::Backend) -> rodario_core::Result<()> {
/// use std::time::Duration;
/// use rodario_core::Node;
/// let node = Node::builder(backend).call_timeout(Duration::from_secs(2)).build();
/// println!("{} actors registered", node.registry().actors().await?.len());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

/// Settings for a [`Node`]; start with [`Node::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct NodeBuilder {
    backend: Backend,
    config: NodeConfig,
}

#[derive(Clone, Debug)]
pub(crate) struct NodeConfig {
    pub(crate) call_timeout: Duration,
    pub(crate) liveness_ttl: Duration,
    pub(crate) max_frame: usize,
    pub(crate) mailbox: usize,
}

impl NodeBuilder {
    /// The default deadline of every call made through this node's proxies (default 10 s).
    /// A proxy can override it with `with_timeout`.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// How long this node's registrations outlive it if it dies without stopping its actors
    /// (default 10 s). They are renewed every third of it.
    pub fn liveness_ttl(mut self, ttl: Duration) -> Self {
        self.config.liveness_ttl = ttl.clamp(Duration::from_millis(30), MAX_WAIT);
        self
    }

    /// The largest frame this node sends or accepts, in bytes (default 1 MiB, the smallest
    /// default limit of the supported brokers). Lowered to the broker's own limit if smaller.
    pub fn max_frame_bytes(mut self, limit: usize) -> Self {
        self.config.max_frame = limit;
        self
    }

    /// How many calls each actor may have queued before further ones are shed with
    /// [`Error::Overloaded`] (default 1024).
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.config.mailbox = capacity.max(1);
        self
    }

    /// Builds the node. Nothing is sent to the broker until an actor starts or a call is made.
    pub fn build(self) -> Node {
        let mut config = self.config;
        if let Some(broker_limit) = self.backend.transport().max_payload() {
            config.max_frame = config.max_frame.min(broker_limit);
        }
        let (shutdown, _) = watch::channel(false);
        Node {
            inner: Arc::new(NodeInner {
                id: NodeId::generate(),
                locks: Locks::new(
                    self.backend.locks().clone(),
                    self.backend.name(),
                    config.call_timeout,
                ),
                connection: self.backend.transport().connection_state(),
                backend: self.backend,
                config,
                next_call: AtomicU64::new(1),
                pending: Mutex::new(PendingCalls::default()),
                sweeper: Arc::new(Notify::new()),
                reply_channel: OnceCell::new(),
                heartbeat: OnceCell::new(),
                owned: Mutex::new(Owned::default()),
                actors: Mutex::new(HashMap::new()),
                clusters: tokio::sync::Mutex::new(HashMap::new()),
                shutdown,
            }),
        }
    }
}

pub(crate) struct NodeInner {
    pub(crate) id: NodeId,
    pub(crate) backend: Backend,
    pub(crate) config: NodeConfig,
    pub(crate) locks: Locks,
    /// The backend's connection state, when it reports one: calls made while it is down
    /// fail at once instead of waiting on a connection that is not there.
    connection: Option<watch::Receiver<ConnectionState>>,
    next_call: AtomicU64,
    pending: Mutex<PendingCalls>,
    /// Wakes the deadline sweeper when a call with an earlier deadline comes in.
    sweeper: Arc<Notify>,
    /// The node's reply subscription, made before its first call.
    reply_channel: OnceCell<Mutex<Option<Subscription>>>,
    heartbeat: OnceCell<()>,
    owned: Mutex<Owned>,
    actors: Mutex<HashMap<ActorId, Arc<ActorShared>>>,
    clusters: tokio::sync::Mutex<HashMap<ClusterName, ClusterEntry>>,
    shutdown: watch::Sender<bool>,
}

/// What this node keeps alive in the registry.
#[derive(Default)]
struct Owned {
    actors: BTreeSet<ActorId>,
    memberships: BTreeSet<ClusterName>,
}

/// Where a reply to one of this node's calls goes.
pub(crate) enum PendingSlot {
    Single(oneshot::Sender<Result<Reply, Failure>>),
    Gather(mpsc::UnboundedSender<GatherEvent>),
}

/// Why a call ended without a reply.
pub(crate) enum Failure {
    /// Its deadline passed.
    TimedOut,
    /// Something else ended it (the connection dropped).
    Lost(Error),
}

/// The calls waiting for replies, with their deadlines, and when the sweeper next looks.
#[derive(Default)]
pub(crate) struct PendingCalls {
    calls: HashMap<u64, Waiting>,
    /// The earliest deadline the sweeper knows of.
    sweep_at: Option<Instant>,
}

pub(crate) struct Waiting {
    slot: PendingSlot,
    deadline: Instant,
}

/// What a cluster call's gatherer receives.
pub(crate) enum GatherEvent {
    TimedOut,
    Expect(u32),
    Reply(Reply),
    Failed(Error),
}

/// One cluster channel this node subscribed to, and its local members.
struct ClusterEntry {
    members: Arc<Mutex<Vec<ClusterMember>>>,
    subscription: Subscription,
    reader: JoinHandle<()>,
}

/// Cluster calls a node may have queued for fanning out before further ones are dropped.
const CLUSTER_QUEUE: usize = 4096;

/// Queues a cluster channel's frames for its fan-out task (which publishes, so cannot run
/// inside a sink).
struct ClusterSink {
    channel: ClusterName,
    frames: mpsc::Sender<Bytes>,
}

impl FrameSink for ClusterSink {
    fn deliver(&self, frame: Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.frames.try_send(frame) {
            tracing::warn!(channel = %self.channel, "cluster queue full: dropped a cluster call");
        }
    }
}

/// Routes frames on the node's reply channel to the calls waiting for them, right where the
/// backend reads them.
struct ReplySink {
    node: Weak<NodeInner>,
}

impl FrameSink for ReplySink {
    fn deliver(&self, bytes: Bytes) {
        let Some(node) = self.node.upgrade() else {
            return;
        };
        let frame = match decode_frame(&bytes, node.config.max_frame) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(error = %e, "dropped a malformed frame on the reply channel");
                return;
            }
        };
        let mut pending = lock(&node.pending);
        let calls = &mut pending.calls;
        match frame {
            Frame::Reply(reply) => match calls.get(&reply.id).map(|w| &w.slot) {
                Some(PendingSlot::Single(_)) => {
                    if let Some(Waiting {
                        slot: PendingSlot::Single(tx),
                        ..
                    }) = calls.remove(&reply.id)
                    {
                        let _ = tx.send(Ok(reply));
                    }
                }
                Some(PendingSlot::Gather(tx)) => {
                    let _ = tx.send(GatherEvent::Reply(reply));
                }
                None => tracing::debug!(call = reply.id, "reply for a call nobody awaits"),
            },
            Frame::Expect(Expect { id, count }) => {
                if let Some(PendingSlot::Gather(tx)) = calls.get(&id).map(|w| &w.slot) {
                    let _ = tx.send(GatherEvent::Expect(count));
                }
            }
            Frame::Call(_) => tracing::warn!("dropped a call frame sent to a reply channel"),
        }
    }
}

#[derive(Clone)]
pub(crate) struct ClusterMember {
    pub(crate) actor: ActorId,
    pub(crate) mailbox: mpsc::Sender<Envelope>,
    pub(crate) handler: Option<Arc<dyn ClusterHandler>>,
}

/// A custom handler for an actor's cluster messages (the Python library's
/// `join(channel, func)`): it gets every call on the channel instead of the actor's methods.
#[async_trait::async_trait]
pub trait ClusterHandler: Send + Sync + 'static {
    /// Handles a call of `method` with encoded `args`; returns the encoded reply.
    async fn handle(&self, method: &str, args: &[u8]) -> Result<Vec<u8>, RemoteError>;
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single map or set operation, so a poisoned lock
    // holds consistent data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Node {
    /// Starts configuring a node on `backend`.
    pub fn builder(backend: Backend) -> NodeBuilder {
        NodeBuilder {
            backend,
            config: NodeConfig {
                call_timeout: DEFAULT_CALL_TIMEOUT,
                liveness_ttl: DEFAULT_LIVENESS_TTL,
                max_frame: DEFAULT_MAX_FRAME,
                mailbox: DEFAULT_MAILBOX,
            },
        }
    }

    /// A node on `backend` with the default settings.
    pub fn new(backend: Backend) -> Node {
        Node::builder(backend).build()
    }

    /// This node's id: the `proxyid` of its reply channel, shared by all its proxies.
    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    /// The backend this node runs on.
    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// The registry: which actors exist, and proxies to them.
    pub fn registry(&self) -> ActorRegistry {
        ActorRegistry::new(self.clone())
    }

    /// The broker's leases.
    pub fn locks(&self) -> &Locks {
        &self.inner.locks
    }

    /// Prepares `actor` to run on this node; set its UUID and start it.
    pub fn spawn<A: Actor>(&self, actor: A) -> ActorBuilder<A> {
        ActorBuilder::new(self.clone(), actor)
    }

    /// A cluster proxy (typed, as generated by `#[actor]`, or [`ClusterProxy`]) that
    /// broadcasts calls to the actors that joined `channel`.
    pub fn cluster<C: TypedCluster>(&self, channel: &str) -> Result<C> {
        Ok(C::from_cluster(ClusterProxy::new(self.clone(), channel)?))
    }

    /// The default call deadline of this node's proxies.
    pub fn call_timeout(&self) -> Duration {
        self.inner.config.call_timeout
    }

    /// The largest frame this node sends or accepts, in bytes.
    pub fn max_frame_bytes(&self) -> usize {
        self.inner.config.max_frame
    }

    /// Stops every actor started on this node, removes every registration it holds, and
    /// ends its background tasks. Calls still waiting for replies fail with
    /// [`Error::Closed`].
    pub async fn shutdown(&self) {
        let actors: Vec<Arc<ActorShared>> = lock(&self.inner.actors).values().cloned().collect();
        for actor in actors {
            actor.stop().await;
        }
        let registered: Vec<ActorId> = std::mem::take(&mut lock(&self.inner.owned).actors)
            .into_iter()
            .collect();
        for id in registered {
            if let Err(e) = self.inner.unregister_actor(&id, false).await {
                tracing::warn!(uuid = %id, error = %e, "could not unregister at shutdown");
            }
        }
        let _ = self.inner.shutdown.send(true);
        let reply = self.inner.reply_channel.get().and_then(|s| lock(s).take());
        if let Some(subscription) = reply {
            subscription.close().await;
        }
        lock(&self.inner.pending).calls.clear();
    }

    /// Ends this node's tasks without unregistering anything, as if its process crashed: its
    /// registrations stay until their liveness TTL runs out. For tests of liveness.
    #[cfg(feature = "testkit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
    pub async fn simulate_crash(&self) {
        let actors: Vec<Arc<ActorShared>> =
            lock(&self.inner.actors).drain().map(|(_, a)| a).collect();
        for actor in actors {
            actor.abort();
        }
        for (_, entry) in self.inner.clusters.lock().await.drain() {
            entry.reader.abort();
        }
        if let Some(reply) = self.inner.reply_channel.get() {
            drop(lock(reply).take());
        }
        let _ = self.inner.shutdown.send(true);
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.inner.id)
            .field("backend", &self.inner.backend.name())
            .finish_non_exhaustive()
    }
}

impl NodeInner {
    pub(crate) fn next_call_id(&self) -> u64 {
        self.next_call.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn deadline_ms(&self, timeout: Duration) -> u64 {
        unix_ms(SystemTime::now() + timeout.min(MAX_WAIT))
    }

    /// Fails at once when the backend reports its connection down: a call published now
    /// would wait on a connection that is not there, so it is not sent at all (and is safe
    /// to retry once the backend has reconnected).
    pub(crate) fn check_connected(&self) -> Result<()> {
        match &self.connection {
            Some(state) if *state.borrow() == ConnectionState::Disconnected => {
                Err(Error::Backend(BackendError::new(
                    self.backend.name(),
                    BackendErrorKind::Connection,
                    "not connected to the broker (the backend is reconnecting): \
                     the call was not sent; retry once the connection is back",
                )))
            }
            _ => Ok(()),
        }
    }

    /// Runs a registry `operation` with the node's call timeout; past it, fails with a
    /// connection error naming `what`.
    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        operation: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        broker_within(
            self.backend.name(),
            what,
            self.config.call_timeout,
            operation,
        )
        .await
    }

    /// Waits for a reply to call `id` in `slot` until `deadline`.
    pub(crate) fn add_pending(&self, id: u64, slot: PendingSlot, deadline: Instant) {
        let mut pending = lock(&self.pending);
        pending.calls.insert(id, Waiting { slot, deadline });
        if pending.sweep_at.is_none_or(|at| deadline < at) {
            pending.sweep_at = Some(deadline);
            self.sweeper.notify_one();
        }
    }

    pub(crate) fn remove_pending(&self, id: u64) {
        lock(&self.pending).calls.remove(&id);
    }

    /// Fails the calls whose deadline has passed; returns the next deadline to look at.
    fn sweep(&self) -> Option<Instant> {
        let now = Instant::now();
        let (expired, next) = {
            let mut pending = lock(&self.pending);
            let expired: Vec<u64> = pending
                .calls
                .iter()
                .filter(|(_, waiting)| waiting.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            let expired: Vec<PendingSlot> = expired
                .iter()
                .filter_map(|id| pending.calls.remove(id))
                .map(|waiting| waiting.slot)
                .collect();
            let next = pending.calls.values().map(|waiting| waiting.deadline).min();
            pending.sweep_at = next;
            (expired, next)
        };
        for slot in expired {
            match slot {
                PendingSlot::Single(tx) => {
                    let _ = tx.send(Err(Failure::TimedOut));
                }
                PendingSlot::Gather(tx) => {
                    let _ = tx.send(GatherEvent::TimedOut);
                }
            }
        }
        next
    }

    /// Fails every call waiting for a reply: the connection dropped, so their replies are
    /// lost (pub/sub does not keep messages for a disconnected subscriber).
    fn fail_pending_on_disconnect(&self) {
        let drained: Vec<PendingSlot> = lock(&self.pending)
            .calls
            .drain()
            .map(|(_, waiting)| waiting.slot)
            .collect();
        if drained.is_empty() {
            return;
        }
        tracing::warn!(
            calls = drained.len(),
            "connection lost: failing the calls in flight"
        );
        let lost = || {
            Error::Backend(BackendError::new(
                self.backend.name(),
                BackendErrorKind::Connection,
                "the connection to the broker dropped while the call waited for its reply; \
                 the actor may or may not have run it",
            ))
        };
        for slot in drained {
            match slot {
                PendingSlot::Single(tx) => {
                    let _ = tx.send(Err(Failure::Lost(lost())));
                }
                PendingSlot::Gather(tx) => {
                    let _ = tx.send(GatherEvent::Failed(lost()));
                }
            }
        }
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Subscribes this node's reply channel once, before its first call is published.
    pub(crate) async fn ensure_reply_channel(self: &Arc<Self>) -> Result<()> {
        if self.is_shut_down() {
            return Err(Error::Closed("the node was shut down"));
        }
        self.reply_channel
            .get_or_try_init(|| async {
                let sink = Arc::new(ReplySink {
                    node: Arc::downgrade(self),
                });
                let subscription = self
                    .backend
                    .transport()
                    .subscribe(&Channel::Reply(self.id.clone()), sink)
                    .await?;
                tokio::spawn(sweep_deadlines(
                    Arc::downgrade(self),
                    self.sweeper.clone(),
                    self.shutdown_signal(),
                ));
                if let Some(connection) = self.backend.transport().connection_state() {
                    tokio::spawn(watch_connection(
                        Arc::downgrade(self),
                        self.shutdown_signal(),
                        connection,
                    ));
                }
                Ok::<Mutex<Option<Subscription>>, Error>(Mutex::new(Some(subscription)))
            })
            .await?;
        Ok(())
    }

    /// Starts renewing this node's registrations, once.
    async fn ensure_heartbeat(self: &Arc<Self>) {
        self.heartbeat
            .get_or_init(|| async {
                tokio::spawn(heartbeat(
                    Arc::downgrade(self),
                    self.shutdown_signal(),
                    self.connection.clone(),
                ));
            })
            .await;
    }

    pub(crate) fn encode(&self, frame: &Frame) -> Result<Bytes> {
        encode_frame(frame, self.config.max_frame)
    }

    pub(crate) async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery> {
        Ok(self.backend.transport().publish(channel, frame).await?)
    }

    /// The publish of `outcome` for call `id` on behalf of `from`, as an owned future for an
    /// [`Outbox`].
    pub(crate) fn reply_later(
        self: &Arc<Self>,
        to: NodeId,
        id: u64,
        from: ActorId,
        outcome: Outcome,
    ) -> BoxFuture<'static, ()> {
        let node = self.clone();
        Box::pin(async move { node.reply(&to, id, &from, outcome).await })
    }

    /// Sends `outcome` for `call` on behalf of `from`; failures are logged, since the caller
    /// will time out either way.
    pub(crate) async fn reply(&self, to: &NodeId, id: u64, from: &ActorId, outcome: Outcome) {
        let limit = self.config.max_frame;
        let sent = match encode_reply(id, from.as_str(), &outcome, limit) {
            Ok(bytes) => self.publish(&Channel::Reply(to.clone()), bytes).await,
            Err(Error::Frame(too_large)) => {
                // Tell the caller why instead of letting it time out.
                let message = format!("the reply could not be sent: {too_large}");
                let fallback = Outcome::Err(RemoteError::new(RemoteErrorKind::Handler, message));
                match encode_reply(id, from.as_str(), &fallback, limit) {
                    Ok(bytes) => self.publish(&Channel::Reply(to.clone()), bytes).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(actor = %from, call = id, error = %e, "could not send a reply");
        }
    }

    /// Registers `id` as an actor held by this node and keeps it alive.
    pub(crate) async fn register_actor(self: &Arc<Self>, id: &ActorId) -> Result<()> {
        let insert = async {
            self.backend
                .presence()
                .insert(
                    Group::Actors,
                    id.as_str(),
                    self.id.as_str(),
                    self.config.liveness_ttl,
                )
                .await
                .map_err(|source| Error::Registration {
                    uuid: id.to_string(),
                    source,
                })
        };
        let inserted = self.bounded("registering an actor", insert).await?;
        if !inserted {
            return Err(Error::UuidInUse {
                uuid: id.to_string(),
            });
        }
        lock(&self.owned).actors.insert(id.clone());
        self.ensure_heartbeat().await;
        Ok(())
    }

    /// Unregisters `id` if this node holds it (or anyone does, when `any_owner`).
    pub(crate) async fn unregister_actor(&self, id: &ActorId, any_owner: bool) -> Result<bool> {
        lock(&self.owned).actors.remove(id);
        let owner = (!any_owner).then_some(self.id.as_str());
        let remove = async {
            Ok(self
                .backend
                .presence()
                .remove(Group::Actors, id.as_str(), owner)
                .await?)
        };
        self.bounded("unregistering an actor", remove).await
    }

    pub(crate) fn track_actor(&self, shared: Arc<ActorShared>) {
        lock(&self.actors).insert(shared.id.clone(), shared);
    }

    pub(crate) fn untrack_actor(&self, id: &ActorId) {
        lock(&self.actors).remove(id);
    }

    /// Adds `member` to this node's local members of `channel`, subscribing the node to the
    /// channel if it is the first.
    pub(crate) async fn join_cluster(
        self: &Arc<Self>,
        channel: &ClusterName,
        member: ClusterMember,
    ) -> Result<()> {
        let mut clusters = self.clusters.lock().await;
        if let Some(entry) = clusters.get(channel) {
            let mut members = lock(&entry.members);
            members.retain(|m| m.actor != member.actor);
            members.push(member);
            return Ok(());
        }
        let transport = self.backend.transport();
        if !transport.counts_receivers() {
            let insert = async {
                Ok(self
                    .backend
                    .presence()
                    .insert(
                        Group::Members(channel),
                        self.id.as_str(),
                        self.id.as_str(),
                        self.config.liveness_ttl,
                    )
                    .await?)
            };
            self.bounded("joining a cluster channel", insert).await?;
            lock(&self.owned).memberships.insert(channel.clone());
            self.ensure_heartbeat().await;
        }
        let (frames, queued) = mpsc::channel(CLUSTER_QUEUE);
        let sink = Arc::new(ClusterSink {
            channel: channel.clone(),
            frames,
        });
        let subscription = transport
            .subscribe(&Channel::Cluster(channel.clone()), sink)
            .await?;
        let members = Arc::new(Mutex::new(vec![member]));
        let reader = tokio::spawn(fan_out_cluster(
            Arc::downgrade(self),
            channel.clone(),
            queued,
            members.clone(),
        ));
        clusters.insert(
            channel.clone(),
            ClusterEntry {
                members,
                subscription,
                reader,
            },
        );
        Ok(())
    }

    /// Removes `actor` from this node's members of `channel`, unsubscribing when it was the
    /// last. Returns whether it was a member.
    pub(crate) async fn part_cluster(
        &self,
        channel: &ClusterName,
        actor: &ActorId,
    ) -> Result<bool> {
        let mut clusters = self.clusters.lock().await;
        let Some(entry) = clusters.get(channel) else {
            return Ok(false);
        };
        let (was_member, now_empty) = {
            let mut members = lock(&entry.members);
            let before = members.len();
            members.retain(|m| &m.actor != actor);
            (members.len() != before, members.is_empty())
        };
        if now_empty {
            if let Some(entry) = clusters.remove(channel) {
                // Closing the subscription drops the sink, which ends the fan-out task once
                // it has handled the calls already queued.
                entry.subscription.close().await;
                let _ = entry.reader.await;
            }
            if lock(&self.owned).memberships.remove(channel) {
                self.backend
                    .presence()
                    .remove(
                        Group::Members(channel),
                        self.id.as_str(),
                        Some(self.id.as_str()),
                    )
                    .await?;
            }
        }
        Ok(was_member)
    }
}

/// Runs `operation` until `deadline` (`timeout` after it started); past it, fails with
/// [`Error::Timeout`] naming `what`. Dropping the operation there is safe: every step of a
/// call cleans up after itself when dropped (its pending slot, a half-made subscription).
pub(crate) async fn within<T>(
    what: &str,
    timeout: Duration,
    deadline: Instant,
    operation: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout_at(deadline, operation).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            method: what.to_owned(),
            after: timeout,
        }),
    }
}

/// Runs a broker `operation` (a registry or lease operation, not a call) for at most
/// `timeout`; past it, fails with a [`BackendErrorKind::Connection`] error naming `what`.
pub(crate) async fn broker_within<T>(
    backend: &'static str,
    what: &str,
    timeout: Duration,
    operation: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let timeout = timeout.min(MAX_WAIT);
    match tokio::time::timeout(timeout, operation).await {
        Ok(result) => result,
        Err(_) => Err(Error::Backend(BackendError::new(
            backend,
            BackendErrorKind::Connection,
            format!(
                "{what}: no answer from the broker within {timeout:?} (it may or may not \
                 have been done)"
            ),
        ))),
    }
}

/// Fails the node's calls in flight whenever the backend reports its connection dropped.
async fn watch_connection(
    node: Weak<NodeInner>,
    mut shutdown: watch::Receiver<bool>,
    connection: watch::Receiver<ConnectionState>,
) {
    let mut connection = Some(connection);
    let stopped = shutdown.wait_for(|down| *down);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            Some(state) = connection_change(&mut connection) => {
                if state != ConnectionState::Disconnected {
                    continue;
                }
                match node.upgrade() {
                    Some(node) => node.fail_pending_on_disconnect(),
                    None => break,
                }
            }
        }
    }
}

/// Fails each call when its deadline passes. One task per node, asleep until the earliest
/// deadline (or until a call with an earlier one comes in), instead of a timer per call.
async fn sweep_deadlines(
    node: Weak<NodeInner>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let stopped = shutdown.wait_for(|down| *down);
    tokio::pin!(stopped);
    while let Some(next) = node.upgrade().map(|node| node.sweep()) {
        let notified = wake.notified();
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            () = notified => {}
            () = sleep_until_or_forever(next) => {}
        }
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next connection state, or never when the backend cannot tell (or stopped telling).
async fn connection_change(
    connection: &mut Option<watch::Receiver<ConnectionState>>,
) -> Option<ConnectionState> {
    match connection {
        Some(receiver) => match receiver.changed().await {
            Ok(()) => Some(*receiver.borrow_and_update()),
            Err(_) => {
                *connection = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Renews the node's registrations every third of the liveness TTL, and re-registers what
/// the broker lost (a restarted Redis forgets everything). When the backend reports its
/// connection back after an outage, a pass runs at once rather than at the next tick, so a
/// registration the broker lost meanwhile is back as soon as the broker answers; a pass
/// that fails (the broker still recovering) is retried soon, with a backoff.
async fn heartbeat(
    node: Weak<NodeInner>,
    mut shutdown: watch::Receiver<bool>,
    mut connection: Option<watch::Receiver<ConnectionState>>,
) {
    let period = match node.upgrade() {
        Some(node) => node.config.liveness_ttl / 3,
        None => return,
    };
    let mut next = Instant::now() + period;
    let mut retry = RENEWAL_RETRY_MIN;
    let stopped = shutdown.wait_for(|down| *down);
    tokio::pin!(stopped);
    loop {
        let reconnected = tokio::select! {
            biased;
            _ = &mut stopped => break,
            () = tokio::time::sleep_until(next) => false,
            Some(state) = connection_change(&mut connection) => {
                if state != ConnectionState::Connected {
                    continue;
                }
                true
            }
        };
        let Some(node) = node.upgrade() else { break };
        let renewed = node.renew_registrations().await;
        if reconnected && renewed {
            tracing::info!(
                node = %node.id,
                "connection to the broker restored: registrations and memberships renewed"
            );
        }
        if renewed {
            next = Instant::now() + period;
            retry = RENEWAL_RETRY_MIN;
        } else {
            next = Instant::now() + retry.min(period);
            retry = (retry * 2).min(period);
        }
    }
}

/// The first pause before retrying a renewal pass that failed.
const RENEWAL_RETRY_MIN: Duration = Duration::from_millis(100);

impl NodeInner {
    /// One renewal pass over everything this node keeps alive; false when some renewal
    /// failed and the pass should be retried.
    async fn renew_registrations(&self) -> bool {
        let (actors, memberships) = {
            let owned = lock(&self.owned);
            (
                owned.actors.iter().cloned().collect::<Vec<_>>(),
                owned.memberships.iter().cloned().collect::<Vec<_>>(),
            )
        };
        let mut renewed = renew_group(self, Group::Actors, &actors).await;
        for channel in &memberships {
            renewed &= renew_group(
                self,
                Group::Members(channel),
                std::slice::from_ref(&self.id),
            )
            .await;
        }
        renewed
    }
}

/// Renews `members` of `group`, re-inserting those the broker lost; false when the broker
/// failed (the pass is retried), true when every member is held (or lost to another owner,
/// which retrying cannot mend).
async fn renew_group<N: AsRef<str>>(node: &NodeInner, group: Group<'_>, members: &[N]) -> bool {
    if members.is_empty() {
        return true;
    }
    let registry = node.backend.presence();
    let ttl = node.config.liveness_ttl;
    let owner = node.id.as_str();
    let names: Vec<&str> = members.iter().map(AsRef::as_ref).collect();
    let held = match registry.renew(group, &names, owner, ttl).await {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(error = %e, ?group, "could not renew registrations; will retry");
            return false;
        }
    };
    let mut renewed = true;
    for (name, held) in names.iter().zip(held) {
        if held {
            continue;
        }
        match registry.insert(group, name, owner, ttl).await {
            Ok(true) => {
                tracing::info!(?group, member = %name, "re-registered after the broker lost it")
            }
            Ok(false) => tracing::error!(
                ?group,
                member = %name,
                "registration lost to another process; calls may reach that process instead"
            ),
            Err(e) => {
                tracing::warn!(error = %e, ?group, member = %name, "could not re-register; will retry");
                renewed = false;
            }
        }
    }
    renewed
}

/// Reads a cluster channel, tells each caller how many local members got its call, and
/// hands the call to each member's mailbox (shedding with an error when one is full).
async fn fan_out_cluster(
    node: Weak<NodeInner>,
    channel: ClusterName,
    mut queued: mpsc::Receiver<Bytes>,
    members: Arc<Mutex<Vec<ClusterMember>>>,
) {
    let mut last_caller = None;
    let mut outbox = Outbox::new();
    loop {
        let bytes = tokio::select! {
            biased;
            () = outbox.progress(), if outbox.is_busy() => continue,
            next = queued.recv() => match next {
                Some(bytes) => bytes,
                None => break,
            },
        };
        let Some(node) = node.upgrade() else { break };
        let Some((call, reply_to)) = decode_call(&node, &bytes, &channel, &mut last_caller) else {
            continue;
        };
        if node.deadline_ms(Duration::ZERO) > call.deadline_ms {
            tracing::debug!(
                call = call.id,
                "skipped a cluster call whose caller gave up"
            );
            continue;
        }
        let members: Vec<ClusterMember> = lock(&members).clone();
        let expect = Frame::Expect(Expect {
            id: call.id,
            count: members.len() as u32,
        });
        match node.encode(&expect) {
            Ok(bytes) => {
                let to = Channel::Reply(reply_to.clone());
                let sender = node.clone();
                outbox
                    .send(Box::pin(async move {
                        if let Err(e) = sender.publish(&to, bytes).await {
                            tracing::warn!(error = %e, "could not tell a cluster caller what to expect");
                        }
                    }))
                    .await;
            }
            Err(e) => tracing::warn!(error = %e, "could not encode an expect frame"),
        }
        let call = Arc::new(call);
        for member in members {
            let envelope = Envelope {
                call: call.clone(),
                reply_to: reply_to.clone(),
                via: Via::Cluster {
                    channel: channel.clone(),
                    handler: member.handler.clone(),
                },
            };
            if let Err(refused) = member.mailbox.try_send(envelope) {
                let kind = match refused {
                    mpsc::error::TrySendError::Full(_) => RemoteErrorKind::Overloaded,
                    mpsc::error::TrySendError::Closed(_) => RemoteErrorKind::Stopped,
                };
                let error = RemoteError::new(kind, "the call was not queued");
                let reply =
                    node.reply_later(reply_to.clone(), call.id, member.actor, Outcome::Err(error));
                outbox.send(reply).await;
            }
        }
    }
    outbox.flush().await;
}

/// Decodes a frame that must be a call, logging (not failing) on anything else.
/// `last_caller` keeps the previous caller's validated id: most calls on a channel come from
/// the same few nodes, so this skips re-validating and re-allocating it.
pub(crate) fn decode_call(
    node: &NodeInner,
    bytes: &[u8],
    channel: &dyn fmt::Display,
    last_caller: &mut Option<NodeId>,
) -> Option<(Call, NodeId)> {
    match decode_frame(bytes, node.config.max_frame) {
        Ok(Frame::Call(call)) => match last_caller {
            Some(caller) if caller.as_str() == call.reply_to => {
                let caller = caller.clone();
                Some((call, caller))
            }
            _ => match NodeId::new(&call.reply_to) {
                Ok(reply_to) => {
                    *last_caller = Some(reply_to.clone());
                    Some((call, reply_to))
                }
                Err(e) => {
                    tracing::warn!(%channel, error = %e, "dropped a call with an invalid reply channel");
                    None
                }
            },
        },
        Ok(other) => {
            tracing::warn!(%channel, kind = other.kind(), "dropped a frame that is not a call");
            None
        }
        Err(e) => {
            tracing::warn!(%channel, error = %e, "dropped a malformed frame");
            None
        }
    }
}

/// Publishes that have started but not finished, so a task can go on with its next message
/// while its replies travel (a Redis `PUBLISH` waits for the server's answer). Each publish
/// is polled once when it is queued, which sends it on every backend; publishes that finish
/// at once (the memory backend) are never stored.
pub(crate) struct Outbox {
    sending: FuturesUnordered<BoxFuture<'static, ()>>,
}

/// Publishes a task may have in flight before it waits for one to finish.
const OUTBOX_LIMIT: usize = 256;

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            sending: FuturesUnordered::new(),
        }
    }

    /// Starts `publish`, waiting only if too many are already in flight.
    pub(crate) async fn send(&mut self, mut publish: BoxFuture<'static, ()>) {
        let finished =
            std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx).is_ready())).await;
        if !finished {
            self.sending.push(publish);
        }
        while self.sending.len() > OUTBOX_LIMIT {
            self.sending.next().await;
        }
    }

    /// Whether publishes are in flight.
    pub(crate) fn is_busy(&self) -> bool {
        !self.sending.is_empty()
    }

    /// Drives the publishes in flight; resolves when one finishes.
    pub(crate) async fn progress(&mut self) {
        self.sending.next().await;
    }

    /// Waits for every publish in flight.
    pub(crate) async fn flush(&mut self) {
        while self.sending.next().await.is_some() {}
    }
}
