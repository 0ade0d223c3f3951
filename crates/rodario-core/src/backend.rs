//! The three traits a backend implements, and the [`Backend`] bundle a node runs on.
//!
//! A backend is an adapter: it moves bytes ([`Transport`]), keeps expiring sets
//! ([`Presence`]) and leases ([`LockStore`]). It holds no actor logic; all of that is in
//! this crate, written once over these traits.
//!
//! The traits are object safe (`async_trait`) and held as `Arc<dyn ..>`, so user-facing
//! types stay simple (`ActorProxy`, not `ActorProxy<RedisTransport, ..>`). A virtual call
//! costs nothing next to a network hop, and nothing measurable next to encoding a frame.
//!
//! Every backend must pass the conformance suite in `testkit` (feature `testkit`).

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use crate::error::{BackendError, BackendErrorKind};
use crate::name::{ActorId, ClusterName, NodeId};
use crate::observe::Discovery;
pub use crate::sync::{LocalHasher, LocalKeys};

/// A logical channel. Backends map it to their own names; [`Channel::default_name`] is the
/// Python library's layout (`actor:{uuid}`, `proxy:{proxyid}`, `cluster:{channel}`), which
/// the memory and Redis backends use behind their prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Channel {
    /// An actor's own channel: calls to that actor.
    Actor(ActorId),
    /// A node's reply channel: replies to calls made by that node's proxies.
    Reply(NodeId),
    /// A cluster channel: broadcast calls to the actors that joined it.
    Cluster(ClusterName),
}

impl Channel {
    /// The Python library's name for this channel, without any prefix.
    pub fn default_name(&self) -> String {
        let (kind, id) = self.name_parts();
        [kind, id].concat()
    }

    /// [`Channel::default_name`] in its two parts: the kind (`actor:`, `proxy:` or
    /// `cluster:`) and the id, for a backend that puts a prefix before them: joining them
    /// costs one allocation and no formatting, and every publish names its channel.
    pub fn name_parts(&self) -> (&'static str, &str) {
        match self {
            Channel::Actor(id) => ("actor:", id.as_str()),
            Channel::Reply(id) => ("proxy:", id.as_str()),
            Channel::Cluster(name) => ("cluster:", name.as_str()),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, id) = self.name_parts();
        f.write_str(kind)?;
        f.write_str(id)
    }
}

/// What a broker knows about who received a published message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The broker counted exactly this many subscribing connections (Redis `PUBLISH`
    /// replies with it). A connection that subscribed to the channel counts once, however
    /// many local actors it serves.
    Exact(usize),
    /// At least one connection received it, but the broker cannot say how many.
    AtLeastOne,
    /// The broker cannot tell whether anyone received it (core NATS publish).
    Unknown,
}

/// Where a subscription's frames go: the backend calls [`FrameSink::deliver`] for each frame,
/// in the order the broker delivered them, straight from the task that reads the
/// connection (for the memory backend, from the publisher's task).
///
/// A sink must never block or wait: it queues the frame with a bound, or drops it. That
/// keeps the connection read continuously, so a slow subscriber never makes the broker
/// disconnect it (Redis's `client-output-buffer-limit pubsub`) and no frame waits in an
/// extra queue between the connection and its consumer.
pub trait FrameSink: Send + Sync + 'static {
    /// Takes one frame.
    fn deliver(&self, frame: Bytes);
}

/// A live subscription: frames published to its channel go to its [`FrameSink`] until it
/// is closed or dropped.
///
/// A backend that reconnects keeps subscriptions alive across an outage (frames published
/// meanwhile are lost: pub/sub is at most once).
#[must_use = "dropping a subscription ends it"]
pub struct Subscription {
    close: Option<BoxFuture<'static, ()>>,
}

impl Subscription {
    /// A subscription that `close` unsubscribes at the broker when [`Subscription::close`]
    /// awaits it. A subscription dropped without `close` drops that future unpolled: the
    /// backend must then still stop delivery (keep a guard inside the future whose `Drop`
    /// does it, lazily if need be).
    pub fn new(close: impl Future<Output = ()> + Send + 'static) -> Self {
        Subscription {
            close: Some(Box::pin(close)),
        }
    }

    /// Unsubscribes and waits until the broker has been told: after this returns the broker
    /// sends no more frames to the sink (one already on its way may still arrive).
    pub async fn close(mut self) {
        if let Some(close) = self.close.take() {
            close.await;
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// The default queue of a [`FrameStream`], in frames.
pub const FRAME_STREAM_QUEUE: usize = 8192;

/// A subscription read as a [`Stream`] of frames: for tests, tools and backends' own
/// checks (nodes use sinks). Frames beyond [`FRAME_STREAM_QUEUE`] unread ones are dropped
/// with a warning.
pub struct FrameStream {
    frames: mpsc::Receiver<Bytes>,
    subscription: Subscription,
}

struct QueueSink(mpsc::Sender<Bytes>);

impl FrameSink for QueueSink {
    fn deliver(&self, frame: Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.0.try_send(frame) {
            tracing::warn!("a frame stream's queue is full: dropped a frame");
        }
    }
}

impl FrameStream {
    /// Unsubscribes and waits until the broker has been told.
    pub async fn close(mut self) {
        self.frames.close();
        self.subscription.close().await;
    }
}

impl Stream for FrameStream {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.frames.poll_recv(cx)
    }
}

impl fmt::Debug for FrameStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameStream").finish_non_exhaustive()
    }
}

/// Subscriptions as streams, for every [`Transport`].
#[async_trait]
pub trait TransportExt {
    /// Subscribes to `channel` and returns its frames as a stream.
    async fn subscribe_stream(&self, channel: &Channel) -> Result<FrameStream, BackendError>;
}

#[async_trait]
impl<T: Transport + ?Sized> TransportExt for T {
    async fn subscribe_stream(&self, channel: &Channel) -> Result<FrameStream, BackendError> {
        let (tx, frames) = mpsc::channel(FRAME_STREAM_QUEUE);
        let subscription = self.subscribe(channel, Arc::new(QueueSink(tx))).await?;
        Ok(FrameStream {
            frames,
            subscription,
        })
    }
}

/// The broker's later word that nobody received a call published with
/// [`Transport::publish_call`]: it resolves when the broker reports that nobody received
/// the call, and never otherwise. Dropping it ends the watch.
#[must_use = "dropping it ends the watch"]
pub struct Undelivered {
    report: BoxFuture<'static, ()>,
}

impl Undelivered {
    /// A watch that resolves when `report` does: when the broker reported that nobody
    /// received the call (a report that can no longer come should never resolve).
    pub fn new(report: impl Future<Output = ()> + Send + 'static) -> Self {
        Undelivered {
            report: Box::pin(report),
        }
    }
}

impl Future for Undelivered {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.report.as_mut().poll(cx)
    }
}

impl fmt::Debug for Undelivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Undelivered").finish_non_exhaustive()
    }
}

/// Publish/subscribe of raw frames on [`Channel`]s.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Publishes `frame` on `channel` and says what the broker knows of its receivers.
    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery, BackendError>;

    /// Publishes `frame` on `channel` now if this backend can without waiting (an
    /// in-process broker), or hands the frame back (`Err`) for [`Transport::publish`].
    /// Nodes try it first on every publish: it spares a publish the boxed future of an
    /// async trait method, and a reply the future that waits for it. The default hands
    /// every frame back.
    #[allow(clippy::type_complexity)]
    fn try_publish(
        &self,
        _channel: &Channel,
        frame: Bytes,
    ) -> Result<Result<Delivery, BackendError>, Bytes> {
        Err(frame)
    }

    /// Publishes a call to one actor, whose caller waits for its reply anyway. A broker that
    /// learns only later whether anyone received it (NATS's "no responders" status) may
    /// return at once, with [`Delivery::Unknown`] and an [`Undelivered`] watch the caller
    /// races against the reply, instead of waiting for a round trip here. The default is
    /// [`Transport::publish`] with no watch. Nodes use it only where
    /// [`Transport::reports_undelivered`] says the backend has its own.
    async fn publish_call(
        &self,
        channel: &Channel,
        frame: Bytes,
    ) -> Result<(Delivery, Option<Undelivered>), BackendError> {
        Ok((self.publish(channel, frame).await?, None))
    }

    /// Whether this backend implements [`Transport::publish_call`] itself. When it does
    /// not (the default), nodes publish calls with [`Transport::publish`], sparing each call
    /// the default's extra future.
    fn reports_undelivered(&self) -> bool {
        false
    }

    /// Subscribes to `channel`, handing each frame to `sink`. When this returns, the
    /// subscription is active at the broker: a frame published afterwards is delivered.
    /// (For a stream of frames, use [`TransportExt::subscribe_stream`].)
    async fn subscribe(
        &self,
        channel: &Channel,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError>;

    /// Subscribes the calls to actor `actor`, which node `node` runs: as [`Transport::subscribe`]
    /// on [`Channel::Actor`], which is the default. A backend whose callers can address the
    /// node an actor runs on may serve all of a node's actors through one subscription of
    /// its own (NATS: one per node instead of one per actor), handing each actor's calls to
    /// its sink; closing the returned subscription stops that actor's delivery only.
    async fn subscribe_actor(
        &self,
        actor: &ActorId,
        node: &NodeId,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        let _ = node;
        self.subscribe(&Channel::Actor(actor.clone()), sink).await
    }

    /// Whether [`Transport::publish`] on a cluster channel reports [`Delivery::Exact`].
    /// When it does not, nodes record their cluster memberships in the [`Presence`] under
    /// [`Group::Members`] so that a cluster proxy can count them.
    fn counts_receivers(&self) -> bool;

    /// The largest payload the broker accepts, when it has a limit of its own (NATS
    /// `max_payload`). Nodes refuse to build a larger frame and say which limit it broke.
    fn max_payload(&self) -> Option<usize> {
        None
    }

    /// The state of the connection, for backends that can watch it. When it turns to
    /// [`ConnectionState::Disconnected`], nodes fail the calls waiting for replies with a
    /// connection error at once (a reply published while the connection is down is lost)
    /// instead of letting them run to their deadline. `None`: the backend cannot tell.
    fn connection_state(&self) -> Option<watch::Receiver<ConnectionState>> {
        None
    }
}

/// Whether a backend's connection to its broker is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected (or reconnected).
    Connected,
    /// The connection dropped; the backend is trying to reconnect.
    Disconnected,
}

/// A set whose members expire unless renewed: who is alive, and who joined a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Group<'a> {
    /// The registered actors (Python: the SET `{prefix}actors`).
    Actors,
    /// The nodes subscribed to a cluster channel (kept only for transports that cannot
    /// count receivers).
    Members(&'a ClusterName),
}

impl Group<'_> {
    /// The Python library's set name of this group, without any prefix: `actors` for
    /// [`Group::Actors`], `members:{channel}` for [`Group::Members`]. The memory and Redis
    /// backends name their sets with it, behind their prefix.
    pub fn default_name(&self) -> String {
        match self {
            Group::Actors => "actors".to_owned(),
            Group::Members(channel) => format!("members:{channel}"),
        }
    }
}

/// What renewing an owner's lease found (see [`Presence::keep_alive`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseRenewal {
    /// The lease was live and nothing of the owner's was removed by another process since the
    /// last renewal: its entries are as it left them.
    Held,
    /// The lease was live, but another process removed an entry the owner held since the last
    /// renewal (the Python library's `unregister`, or an operator): the owner should check its
    /// entries with [`Presence::held`] and insert again those it still wants.
    Disturbed,
    /// The lease had run out or the broker lost it (a restarted server forgets everything);
    /// a new one starts now. The owner's entries may be gone or taken by others: it should
    /// check them with [`Presence::held`] and insert again the missing ones.
    Lost,
}

/// Registered names with liveness. Each owner (a node) holds one lease that expires unless
/// renewed; its entries are live while that lease is, so a crashed process's actors
/// disappear on their own, and renewing costs the broker one operation per node whatever
/// the number of actors.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Starts or extends `owner`'s lease to `ttl` from now, and says what it found (a
    /// renewal also clears the [`LeaseRenewal::Disturbed`] mark). A zero `ttl` is refused
    /// (see [`check_ttl`]).
    async fn keep_alive(&self, owner: &str, ttl: Duration) -> Result<LeaseRenewal, BackendError>;

    /// Ends `owner`'s lease at once: its entries are no longer live (they stay in the broker
    /// until removed or replaced). Returns whether a live lease ended.
    async fn release(&self, owner: &str) -> Result<bool, BackendError>;

    /// Adds `member` to `group`, held by `owner`, live while `owner`'s lease is (an owner
    /// inserts after [`Presence::keep_alive`]). Atomic: of two racing inserts of one member,
    /// exactly one returns `true`. Returns `false` when a live entry exists (even one held by
    /// the same owner); an entry whose owner's lease ended is replaced.
    async fn insert(
        &self,
        group: Group<'_>,
        member: &str,
        owner: &str,
    ) -> Result<bool, BackendError>;

    /// For each of `members` in order, whether its entry in `group` is held by `owner` (an
    /// entry replaced by another owner's, or removed, is not); an entry held is live again
    /// once `owner`'s lease is. What an owner asks after [`LeaseRenewal::Disturbed`] or
    /// [`LeaseRenewal::Lost`], and every [`Presence::refresh_every`]: a broker whose
    /// entries age out rewrites here the entries it finds held, so that they last.
    async fn held(
        &self,
        group: Group<'_>,
        members: &[&str],
        owner: &str,
    ) -> Result<Vec<bool>, BackendError>;

    /// Removes `member` if `owner` holds it live; returns whether it did. With `owner`
    /// `None`, removes it whoever holds it (the Python library's `unregister`), and marks the
    /// holder's lease [`LeaseRenewal::Disturbed`].
    async fn remove(
        &self,
        group: Group<'_>,
        member: &str,
        owner: Option<&str>,
    ) -> Result<bool, BackendError>;

    /// Whether `member` is in `group` and its owner's lease is live.
    async fn contains(&self, group: Group<'_>, member: &str) -> Result<bool, BackendError>;

    /// The live members of `group`.
    async fn members(&self, group: Group<'_>) -> Result<BTreeSet<String>, BackendError>;

    /// How often an owner checks its entries with [`Presence::held`] (which rewrites them)
    /// for them to last, on a broker that deletes entries older than an age (a NATS KV
    /// bucket's `max_age`); `None`, the default, when entries last as long as their
    /// owner's lease.
    fn refresh_every(&self) -> Option<Duration> {
        None
    }
}

/// A lock's name within its context; backends store it as `{context}:{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockKey {
    /// The context (the Python library's default is `global.lock`).
    pub context: String,
    /// The lock's name.
    pub name: String,
}

impl LockKey {
    /// The Python library's key, `{context}:{name}`, without any prefix.
    pub fn default_name(&self) -> String {
        format!("{}:{}", self.context, self.name)
    }
}

/// Leases: a named lock held by whoever presents its token, until it expires.
#[async_trait]
pub trait LockStore: Send + Sync + 'static {
    /// Takes `key` with `token` for `ttl` if nobody holds it (an expired lease counts as
    /// free). Atomic: of racing acquirers exactly one gets `true`. A zero `ttl` is refused
    /// (see [`check_ttl`]).
    async fn acquire(
        &self,
        key: &LockKey,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError>;

    /// Releases `key` if `token` holds it; returns whether it did.
    async fn release(&self, key: &LockKey, token: &str) -> Result<bool, BackendError>;

    /// Extends `key` to `ttl` from now if `token` holds it; returns whether it did. A zero
    /// `ttl` is refused (see [`check_ttl`]) and leaves the lease as it was.
    async fn renew(&self, key: &LockKey, token: &str, ttl: Duration) -> Result<bool, BackendError>;
}

/// Refuses a zero `ttl` given to [`Presence::keep_alive`],
/// [`LockStore::acquire`] or [`LockStore::renew`] with a [`BackendErrorKind::InvalidInput`]
/// error from `backend`. Every backend calls it first in those methods, so that they agree:
/// an entry that expires as it is written holds nothing, so answering `Ok(true)` would tell
/// the caller it holds what it does not (and brokers round a zero expiry differently).
pub fn check_ttl(backend: &'static str, ttl: Duration) -> Result<(), BackendError> {
    if ttl.is_zero() {
        return Err(BackendError::new(
            backend,
            BackendErrorKind::InvalidInput,
            "a TTL of zero was given: entries and leases must last longer than zero",
        ));
    }
    Ok(())
}

/// One connection's worth of backend: the three traits a [`crate::Node`] runs on.
///
/// Each backend crate builds one (for example `MemoryBroker::backend`, `RedisBackend::connect`).
/// Give every node its own `Backend`: receiver counts are per connection.
#[derive(Clone)]
pub struct Backend {
    name: &'static str,
    transport: Arc<dyn Transport>,
    presence: Arc<dyn Presence>,
    locks: Arc<dyn LockStore>,
    discovery: Option<Arc<dyn Discovery>>,
}

impl Backend {
    /// Bundles a backend's three parts under its `name` (used in diagnostics).
    pub fn new(
        name: &'static str,
        transport: Arc<dyn Transport>,
        presence: Arc<dyn Presence>,
        locks: Arc<dyn LockStore>,
    ) -> Self {
        Backend {
            name,
            transport,
            presence,
            locks,
            discovery: None,
        }
    }

    /// Adds the part that answers the broker's own discovery requests about each node on
    /// this backend (see [`crate::observe`]).
    pub fn with_discovery(mut self, discovery: Arc<dyn Discovery>) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// The part that answers the broker's discovery requests, if the backend has one.
    pub fn discovery(&self) -> Option<&Arc<dyn Discovery>> {
        self.discovery.as_ref()
    }

    /// The backend's name, such as `"memory"` or `"redis"`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The pub/sub transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Who is present: the registered actors and the members of cluster channels.
    pub fn presence(&self) -> &Arc<dyn Presence> {
        &self.presence
    }

    /// The lease store.
    pub fn locks(&self) -> &Arc<dyn LockStore> {
        &self.locks
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
