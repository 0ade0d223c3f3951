//! [`Transport`]: core NATS publish and subscribe, and the round trips to the connection's
//! own inbox that confirm subscriptions and check delivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_nats::StatusCode;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use rodario_core::backend::{
    Channel, ConnectionState, Delivery, FrameSink, Subscription, Transport, Undelivered,
};
use rodario_core::error::{BackendError, BackendErrorKind};
use rodario_core::name::{ActorId, NodeId};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use crate::error::{dropped, error, publish_error, timed_out};
use crate::routes::{self, HERE, NOT_HERE};
use crate::{names, Inner, NatsConnection};

pub(crate) fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map operation: a poisoned map is still consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A round trip waiting for its marker to come back.
struct Waiter {
    /// The server answered the checked publish of this round trip with "no responders".
    no_responders: bool,
    /// The round trip ends with the receiving node's answer (a publish to a node subject)
    /// instead of its marker's echo.
    receipt: bool,
    done: oneshot::Sender<bool>,
}

/// Round trips in flight, and calls watched for a "no responders" status, shared with the
/// task that reads the probe inbox.
#[derive(Default)]
pub(crate) struct Probes {
    waiters: Mutex<HashMap<u64, Waiter>>,
    /// Calls published with reply subject `{inbox}.c{n}`: told if nobody received them.
    calls: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// Actor subjects a checked publish found received recently.
    reachable: Mutex<Reachable>,
}

/// How long a checked publish's finding that an actor's subject has a subscriber lets
/// later publishes there skip the check; each carries a reply subject still, and the first
/// that nobody receives ends the finding as soon as its "no responders" status comes.
const PRESUMED_FOR: Duration = Duration::from_secs(2);

/// The most subjects remembered at once; past it, all are forgotten (and checked again).
const MAX_REACHABLE: usize = 4096;

/// Actor subjects found received, each with the id of its reply subject `{inbox}.t{id}`.
#[derive(Default)]
struct Reachable {
    by_subject: HashMap<String, (u64, Instant)>,
    by_id: HashMap<u64, String>,
}

impl Reachable {
    /// The reply id of `subject` if a check found it received within [`PRESUMED_FOR`].
    fn presumed(&self, subject: &str) -> Option<u64> {
        let (id, found) = self.by_subject.get(subject)?;
        (found.elapsed() < PRESUMED_FOR).then_some(*id)
    }

    fn found(&mut self, subject: String, id: u64) {
        if self.by_subject.len() >= MAX_REACHABLE {
            self.by_subject.clear();
            self.by_id.clear();
        }
        if let Some((old, _)) = self
            .by_subject
            .insert(subject.clone(), (id, Instant::now()))
        {
            self.by_id.remove(&old);
        }
        self.by_id.insert(id, subject);
    }

    fn unreachable(&mut self, id: u64) {
        if let Some(subject) = self.by_id.remove(&id) {
            self.by_subject.remove(&subject);
        }
    }
}

impl Probes {
    /// Ends every round trip in flight: the connection dropped, so their markers will not
    /// come back (each then fails as dropped, at once rather than at its timeout). Watched
    /// calls stop being watched (their callers fail them for the dropped connection).
    pub(crate) fn fail_all(&self) {
        locked(&self.waiters).clear();
        locked(&self.calls).clear();
        *locked(&self.reachable) = Reachable::default();
    }

    /// Handles a message on `{inbox}.{token}`: `r{n}` is the server's status for the checked
    /// publish `n` (or, for a publish to a node subject, the node's answer), `b{n}` the echo
    /// of round trip `n`'s marker, `c{n}` the status of watched call `n`, `t{id}` the status
    /// of an unchecked publish to a subject found reachable. The server writes `r{n}` and
    /// `b{n}` to this connection in the order it handled the publishes, so `r{n}` is seen
    /// first. Nobody received a message when the server says "no responders" or the node it
    /// was addressed to answers [`NOT_HERE`].
    pub(crate) fn handle(&self, token: &str, status: Option<StatusCode>, payload: &[u8]) {
        let Some((kind, n)) = token.split_at_checked(1) else {
            return;
        };
        let Ok(n) = n.parse::<u64>() else {
            return;
        };
        let nobody = status == Some(StatusCode::NO_RESPONDERS) || payload == NOT_HERE;
        match kind {
            "c" if nobody => {
                let told = locked(&self.calls).remove(&n);
                if let Some(told) = told {
                    let _ = told.send(());
                }
                return;
            }
            "t" if nobody => {
                locked(&self.reachable).unreachable(n);
                return;
            }
            "c" | "t" => return,
            _ => {}
        }
        // The waiter is woken once the lock is released: it removes its entry when it
        // wakes, and would otherwise find the lock held.
        let answered = {
            let mut waiters = locked(&self.waiters);
            match kind {
                "r" => {
                    let Some(waiter) = waiters.get_mut(&n) else {
                        return;
                    };
                    waiter.no_responders |= nobody;
                    if waiter.receipt && (nobody || payload == HERE) {
                        waiters.remove(&n)
                    } else {
                        None
                    }
                }
                "b" => waiters.remove(&n),
                _ => None,
            }
        };
        if let Some(waiter) = answered {
            let _ = waiter.done.send(waiter.no_responders);
        }
    }
}

/// Stops watching a call when its watch is dropped (the call ended, however it ended).
struct CallWatchGuard {
    probes: Arc<Probes>,
    n: u64,
}

impl Drop for CallWatchGuard {
    fn drop(&mut self) {
        locked(&self.probes.calls).remove(&self.n);
    }
}

/// Removes a round trip's waiter when the round trip ends, however it ends.
struct WaiterGuard<'a> {
    probes: &'a Probes,
    n: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        locked(&self.probes.waiters).remove(&self.n);
    }
}

impl Inner {
    /// A round trip to the server: optionally publishes `frame` on `subject` with a reply
    /// subject, then publishes a marker to this connection's probe inbox and waits for it to
    /// come back. When it does, the server has handled everything this connection sent
    /// before (subscriptions are active, unsubscriptions done), and a "no responders" status
    /// for the frame, if any, has arrived. Returns whether it did.
    ///
    /// Fails at once while the connection is down and as soon as it drops (the probe task
    /// ends the round trips in flight then), else after [`NatsConfig::timeout`]. This is the
    /// hot path of every call, so it sets up one timer and no watch of its own.
    ///
    /// [`NatsConfig::timeout`]: crate::NatsConfig::timeout
    pub(crate) async fn round_trip(
        &self,
        checked: Option<(String, Bytes)>,
    ) -> Result<bool, BackendError> {
        self.ensure_connected()?;
        match tokio::time::timeout(self.timeout, self.send_marker(checked, false)).await {
            Ok(result) => result,
            Err(_) => Err(timed_out("a round trip", self.timeout)),
        }
    }

    /// A checked publish of `frame` to a node subject: waits, as [`Inner::round_trip`]
    /// does, for the node's answer (the actor got it, or the node does not run it) or the
    /// server's "no responders". Returns whether nobody received it.
    pub(crate) async fn receipt_trip(
        &self,
        subject: String,
        frame: Bytes,
    ) -> Result<bool, BackendError> {
        self.ensure_connected()?;
        let sent = self.send_marker(Some((subject, frame)), true);
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(result) => result,
            Err(_) => Err(timed_out("a round trip", self.timeout)),
        }
    }

    /// The body of [`Inner::round_trip`] (and with `receipt`, of [`Inner::receipt_trip`]),
    /// without its bounds.
    async fn send_marker(
        &self,
        checked: Option<(String, Bytes)>,
        receipt: bool,
    ) -> Result<bool, BackendError> {
        let n = self.next_probe.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        locked(&self.probes.waiters).insert(
            n,
            Waiter {
                no_responders: false,
                receipt,
                done,
            },
        );
        let _guard = WaiterGuard {
            probes: &self.probes,
            n,
        };
        // A drop just before the waiter was in the table ended no round trip: check again.
        self.ensure_connected()?;
        if let Some((subject, frame)) = checked {
            let reply = names::inbox_subject(&self.inbox, 'r', n);
            let published = if receipt {
                let headers = routes::receipt_headers();
                (self.client)
                    .publish_with_reply_and_headers(subject, reply, headers, frame)
                    .await
            } else {
                self.client.publish_with_reply(subject, reply, frame).await
            };
            published.map_err(publish_error)?;
        }
        if receipt {
            return answer.await.map_err(|_| dropped("a round trip"));
        }
        self.client
            .publish(names::inbox_subject(&self.inbox, 'b', n), Bytes::new())
            .await
            .map_err(publish_error)?;
        answer.await.map_err(|_| dropped("a round trip"))
    }
}

/// Ends a subscription's reader task (and with it the subscription) when dropped, closed or
/// not: no frame reaches the sink afterwards.
struct AbortOnDrop {
    reader: JoinHandle<()>,
    /// Whether the reader may still deliver; cleared before the abort.
    open: Arc<AtomicBool>,
}

impl AbortOnDrop {
    fn stop(&self) {
        self.open.store(false, Ordering::Release);
        self.reader.abort();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The [`Subscription`] of `reader`, a task that owns the client's subscriber(s) to
/// `subject` and reads them while `open` is set: closing or dropping it ends the task (so
/// the subscribers, which queue their UNSUBs); `close` then confirms with a round trip
/// that the server handled them.
pub(crate) fn reader_subscription(
    inner: Arc<Inner>,
    reader: JoinHandle<()>,
    open: Arc<AtomicBool>,
    subject: String,
) -> Subscription {
    let reader = AbortOnDrop { reader, open };
    Subscription::new(async move {
        let mut reader = reader;
        reader.stop();
        let _ = (&mut reader.reader).await;
        // Boxed only once it runs: a subscription keeps this future unpolled for its whole
        // life, at the size of its largest state (an idle actor's memory).
        if let Err(err) = Box::pin(inner.round_trip(None)).await {
            tracing::debug!(%err, %subject, "could not confirm the unsubscription");
        }
    })
}

/// Where a publish to an actor goes.
#[derive(Clone, PartialEq)]
enum Target {
    /// The subject of the node that runs it, `{prefix}.node.{node}.{uuid}`: the node
    /// answers a checked publish itself.
    Node(String),
    /// The actor's own subject, `{prefix}.actor.{uuid}` (an actor the registry does not
    /// know, a tap, or an actor of an older rodario): the server answers.
    Own(String),
}

impl Target {
    fn subject(&self) -> &str {
        match self {
            Target::Node(subject) | Target::Own(subject) => subject,
        }
    }

    fn into_subject(self) -> String {
        match self {
            Target::Node(subject) | Target::Own(subject) => subject,
        }
    }
}

/// How many subjects a publish to an actor tries before it reports that nobody received
/// it: the node it was known to run on, the node the registry names now, its own subject.
const MAX_TARGETS: usize = 3;

impl NatsConnection {
    /// Where calls to `actor` go: its node's subject, from an earlier call or its registry
    /// entry, else its own subject.
    async fn target(&self, actor: &ActorId) -> Result<Target, BackendError> {
        let prefix = &self.inner.prefix;
        if let Some(known) = self.inner.routes.known_subject(prefix, actor.as_str()) {
            return known.map(Target::Node);
        }
        // Boxed only when read: every publish's future would otherwise be the size of a KV
        // read's (7 KB), and most find the node known.
        match Box::pin(self.find_owner(actor)).await? {
            Some(owner) => Ok(Target::Node(names::node_subject(
                prefix,
                &owner,
                actor.as_str(),
            )?)),
            None => Ok(Target::Own(names::subject(
                prefix,
                &Channel::Actor(actor.clone()),
            )?)),
        }
    }

    /// Reads which node runs `actor` from the registry, and remembers it.
    async fn find_owner(&self, actor: &ActorId) -> Result<Option<String>, BackendError> {
        let owner = self.owner_of(actor.as_str()).await?;
        if let Some(owner) = &owner {
            self.inner.routes.remember(actor.as_str(), owner);
        }
        Ok(owner)
    }

    /// Where to try next after nobody received a publish to `actor` on `tried`: the node
    /// the registry names now, if another, else the actor's own subject, if not tried yet.
    /// The node known so far is kept unless the registry says otherwise: while JetStream
    /// cannot answer (a cluster electing a leader), core NATS still carries calls, and the
    /// actor's node, back from a reconnect, gets the next ones.
    async fn retarget(&self, actor: &ActorId, tried: &Target) -> Option<Target> {
        let Target::Node(_) = tried else {
            return None;
        };
        let prefix = &self.inner.prefix;
        // Boxed only when read, as in `target`.
        match Box::pin(self.find_owner(actor)).await {
            Ok(Some(owner)) => {
                let node = names::node_subject(prefix, &owner, actor.as_str());
                if let Ok(target) = node.map(Target::Node) {
                    if target != *tried {
                        return Some(target);
                    }
                }
            }
            Ok(None) => self.inner.routes.forget(actor.as_str()),
            Err(err) => tracing::debug!(%err, %actor, "could not read where an actor runs"),
        }
        let own = names::subject(prefix, &Channel::Actor(actor.clone()));
        own.ok().map(Target::Own)
    }

    /// A checked publish of `frame` to `target`: whether nobody received it.
    async fn checked_publish(&self, target: &Target, frame: Bytes) -> Result<bool, BackendError> {
        let subject = target.subject().to_owned();
        match target {
            Target::Node(_) => self.inner.receipt_trip(subject, frame).await,
            Target::Own(_) => self.inner.round_trip(Some((subject, frame))).await,
        }
    }

    /// Publishes on `channel` (not an actor's): checked where the config says so.
    async fn publish_to_channel(
        &self,
        channel: &Channel,
        frame: Bytes,
    ) -> Result<Delivery, BackendError> {
        let subject = names::subject(&self.inner.prefix, channel)?;
        let checked = self.inner.check_delivery && !matches!(channel, Channel::Reply(_));
        if checked {
            let no_responders = self.inner.round_trip(Some((subject, frame))).await?;
            return Ok(if no_responders {
                Delivery::Exact(0)
            } else {
                Delivery::AtLeastOne
            });
        }
        self.plain_publish(subject, frame).await?;
        Ok(Delivery::Unknown)
    }

    /// Publishes without a reply subject.
    async fn plain_publish(&self, subject: String, frame: Bytes) -> Result<(), BackendError> {
        // The client queues the frame for its connection task; that waits only when the
        // queue is full, which a drop must not turn into a wait for the reconnect.
        self.inner
            .while_connected("a publish", async {
                self.inner
                    .client
                    .publish(subject, frame)
                    .await
                    .map_err(publish_error)
            })
            .await
    }

    /// Publishes `frame` to actor `actor` (a one-way call): checked where the config says
    /// so, trying each place the actor may be until one receives it.
    async fn publish_to_actor(
        &self,
        actor: &ActorId,
        frame: Bytes,
    ) -> Result<Delivery, BackendError> {
        let mut target = self.target(actor).await?;
        if !self.inner.check_delivery {
            self.plain_publish(target.into_subject(), frame).await?;
            return Ok(Delivery::Unknown);
        }
        let presumed = locked(&self.inner.probes.reachable).presumed(target.subject());
        if let Some(id) = presumed {
            let reply = names::inbox_subject(&self.inner.inbox, 't', id);
            self.inner
                .while_connected("a publish", async {
                    self.inner
                        .client
                        .publish_with_reply(target.into_subject(), reply, frame)
                        .await
                        .map_err(publish_error)
                })
                .await?;
            // Not checked: the word that nobody received it, if so, comes later.
            return Ok(Delivery::Unknown);
        }
        let mut tried = 1;
        while self.checked_publish(&target, frame.clone()).await? {
            let next = match tried < MAX_TARGETS {
                true => self.retarget(actor, &target).await,
                false => None,
            };
            let Some(next) = next else {
                return Ok(Delivery::Exact(0));
            };
            (target, tried) = (next, tried + 1);
        }
        let id = self.inner.next_probe.fetch_add(1, Ordering::Relaxed);
        locked(&self.inner.probes.reachable).found(target.into_subject(), id);
        Ok(Delivery::AtLeastOne)
    }

    /// After nobody received a call to `actor` on `tried`: publishes it where else the
    /// actor may be ([`NatsConnection::retarget`]), up to [`MAX_TARGETS`] subjects in all;
    /// returns when nobody received it anywhere, and never while it may have been.
    async fn redeliver(&self, actor: &ActorId, tried: Target, frame: Bytes) {
        let mut tried = tried;
        for _ in 1..MAX_TARGETS {
            let Some(next) = self.retarget(actor, &tried).await else {
                return;
            };
            let subject = next.subject().to_owned();
            let Ok((guard, report)) = self.watched_publish(subject, frame.clone()).await else {
                // The connection dropped: the call fails with it.
                return std::future::pending().await;
            };
            if report.await.is_err() {
                return std::future::pending().await;
            }
            drop(guard);
            tried = next;
        }
    }

    /// Publishes a call with a reply subject that tells this connection if nobody received
    /// it; returns the watch of that word.
    async fn watched_publish(
        &self,
        subject: String,
        frame: Bytes,
    ) -> Result<(CallWatchGuard, oneshot::Receiver<()>), BackendError> {
        let inner = &self.inner;
        let n = inner.next_probe.fetch_add(1, Ordering::Relaxed);
        let (told, report) = oneshot::channel();
        // Watched before publishing: the status can come back before the publish returns.
        locked(&inner.probes.calls).insert(n, told);
        let guard = CallWatchGuard {
            probes: inner.probes.clone(),
            n,
        };
        inner
            .while_connected("a publish", async {
                inner
                    .client
                    .publish_with_reply(subject, names::inbox_subject(&inner.inbox, 'c', n), frame)
                    .await
                    .map_err(publish_error)
            })
            .await?;
        Ok((guard, report))
    }
}

/// Subscribes to `subject`, active at the server when this returns.
pub(crate) async fn subscribe_subject(
    inner: &Inner,
    subject: &str,
) -> Result<async_nats::Subscriber, BackendError> {
    let subscriber = inner
        .while_connected("a subscription", async {
            inner
                .client
                .subscribe(subject.to_owned())
                .await
                .map_err(|err| {
                    error(
                        BackendErrorKind::Connection,
                        format!("cannot subscribe to {subject}: {err}"),
                    )
                    .with_source(err)
                })
        })
        .await?;
    // Active at the server once a round trip sent after the SUB has come back. On error
    // the subscriber is dropped here, which unsubscribes.
    inner.round_trip(None).await?;
    Ok(subscriber)
}

#[async_trait]
impl Transport for NatsConnection {
    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery, BackendError> {
        match channel {
            Channel::Actor(actor) => self.publish_to_actor(actor, frame).await,
            _ => self.publish_to_channel(channel, frame).await,
        }
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        let subject = names::subject(&self.inner.prefix, channel)?;
        let subscriber = subscribe_subject(&self.inner, &subject).await?;
        // An actor's channel subscribed on its own (a tap: actors subscribe through
        // `subscribe_actor`) gets its calls on whichever node runs it too, and answers a
        // checked publish as that node would.
        let (messages, receipts) = match channel {
            Channel::Actor(actor) => {
                let nodes = names::any_node_subject(&self.inner.prefix, actor.as_str())?;
                let on_nodes = subscribe_subject(&self.inner, &nodes).await?;
                let both = futures_util::stream::select(subscriber, on_nodes);
                (both.left_stream(), Some(self.inner.client.clone()))
            }
            _ => (subscriber.right_stream(), None),
        };
        // The client hands messages over through its own queue per subscription (bounded by
        // `subscription_capacity`; it drops for a slow consumer); this task empties it into
        // the sink, which never waits.
        let mut messages = messages;
        let open = Arc::new(AtomicBool::new(true));
        let delivering = open.clone();
        let reader = tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                // Checked before each delivery: a frame the reader already holds when the
                // subscription is closed or dropped does not reach the sink. (No lock is held
                // while delivering: a sink may drop what owns this subscription.)
                if !delivering.load(Ordering::Acquire) {
                    break;
                }
                let receipt = receipts.as_ref().zip(routes::receipt_to(&message));
                sink.deliver(message.payload);
                if let Some((client, reply)) = receipt {
                    routes::answer(client, reply, HERE).await;
                }
            }
        });
        Ok(reader_subscription(
            self.inner.clone(),
            reader,
            open,
            subject,
        ))
    }

    /// One subscription per node, `{prefix}.node.{node}.*`, serves all of its actors.
    async fn subscribe_actor(
        &self,
        actor: &ActorId,
        node: &NodeId,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        routes::subscribe_actor(&self.inner, actor.as_str(), node.as_str(), sink).await
    }

    /// With [`NatsConfig::check_delivery`](crate::NatsConfig::check_delivery) off, calls
    /// are plain publishes.
    fn reports_undelivered(&self) -> bool {
        self.inner.check_delivery
    }

    /// A call to one actor is published with a reply subject of this connection's probe
    /// inbox and returns at once: the server answers a call nobody is subscribed to with a
    /// "no responders" status there, and a node answers one for an actor it does not run,
    /// which fails the call through the returned watch (after trying where else the actor
    /// may be), while a received call's reply comes as usual. No round trip waits here.
    async fn publish_call(
        &self,
        channel: &Channel,
        frame: Bytes,
    ) -> Result<(Delivery, Option<Undelivered>), BackendError> {
        let Channel::Actor(actor) = channel else {
            return Ok((self.publish(channel, frame).await?, None));
        };
        if !self.inner.check_delivery {
            return Ok((self.publish(channel, frame).await?, None));
        }
        let target = self.target(actor).await?;
        let (guard, report) = self
            .watched_publish(target.subject().to_owned(), frame.clone())
            .await?;
        let connection = NatsConnection {
            inner: self.inner.clone(),
        };
        let actor = actor.clone();
        let undelivered = async move {
            if report.await.is_err() {
                // The watch ended without a word (the connection dropped): none comes.
                return std::future::pending().await;
            }
            drop(guard);
            // Boxed only once nobody received the call: the watch lives as long as the call
            // waits, and its largest state (reading the registry) is 7 KB.
            Box::pin(connection.redeliver(&actor, target, frame)).await;
        };
        let undelivered = Undelivered::new(undelivered);
        Ok((Delivery::Unknown, Some(undelivered)))
    }

    fn counts_receivers(&self) -> bool {
        false
    }

    fn max_payload(&self) -> Option<usize> {
        Some(self.inner.client.max_payload())
    }

    fn connection_state(&self) -> Option<watch::Receiver<ConnectionState>> {
        Some(self.inner.state.subscribe())
    }
}
