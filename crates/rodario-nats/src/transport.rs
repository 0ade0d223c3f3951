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
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use crate::error::{dropped, error, publish_error, timed_out};
use crate::{names, Inner, NatsConnection};

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single map operation: a poisoned map is still consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A round trip waiting for its marker to come back.
struct Waiter {
    /// The server answered the checked publish of this round trip with "no responders".
    no_responders: bool,
    done: Option<oneshot::Sender<bool>>,
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
    /// publish `n`, `b{n}` the echo of round trip `n`'s marker, `c{n}` the status of watched
    /// call `n`, `t{id}` the status of an unchecked publish to a subject found reachable.
    /// The server writes `r{n}` and `b{n}` to this connection in the order it handled the
    /// publishes, so `r{n}` is seen first.
    pub(crate) fn handle(&self, token: &str, status: Option<StatusCode>) {
        let Some((kind, n)) = token.split_at_checked(1) else {
            return;
        };
        let Ok(n) = n.parse::<u64>() else {
            return;
        };
        match kind {
            "c" if status == Some(StatusCode::NO_RESPONDERS) => {
                if let Some(told) = locked(&self.calls).remove(&n) {
                    let _ = told.send(());
                }
                return;
            }
            "t" if status == Some(StatusCode::NO_RESPONDERS) => {
                locked(&self.reachable).unreachable(n);
                return;
            }
            "c" | "t" => return,
            _ => {}
        }
        let mut waiters = locked(&self.waiters);
        match kind {
            "r" if status == Some(StatusCode::NO_RESPONDERS) => {
                if let Some(waiter) = waiters.get_mut(&n) {
                    waiter.no_responders = true;
                }
            }
            "b" => {
                if let Some(mut waiter) = waiters.remove(&n) {
                    if let Some(done) = waiter.done.take() {
                        let _ = done.send(waiter.no_responders);
                    }
                }
            }
            _ => {}
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
        match tokio::time::timeout(self.timeout, self.send_marker(checked)).await {
            Ok(result) => result,
            Err(_) => Err(timed_out("a round trip", self.timeout)),
        }
    }

    /// The body of [`Inner::round_trip`], without its bounds.
    async fn send_marker(&self, checked: Option<(String, Bytes)>) -> Result<bool, BackendError> {
        let n = self.next_probe.fetch_add(1, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        locked(&self.probes.waiters).insert(
            n,
            Waiter {
                no_responders: false,
                done: Some(done),
            },
        );
        let _guard = WaiterGuard {
            probes: &self.probes,
            n,
        };
        // A drop just before the waiter was in the table ended no round trip: check again.
        self.ensure_connected()?;
        if let Some((subject, frame)) = checked {
            self.client
                .publish_with_reply(subject, names::inbox_subject(&self.inbox, 'r', n), frame)
                .await
                .map_err(publish_error)?;
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

#[async_trait]
impl Transport for NatsConnection {
    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery, BackendError> {
        let subject = names::subject(&self.inner.prefix, channel)?;
        let checked = self.inner.check_delivery && !matches!(channel, Channel::Reply(_));
        if checked {
            let to_actor = matches!(channel, Channel::Actor(_));
            let presumed = to_actor
                .then(|| locked(&self.inner.probes.reachable).presumed(&subject))
                .flatten();
            if let Some(id) = presumed {
                let reply = names::inbox_subject(&self.inner.inbox, 't', id);
                self.inner
                    .while_connected("a publish", async {
                        self.inner
                            .client
                            .publish_with_reply(subject, reply, frame)
                            .await
                            .map_err(publish_error)
                    })
                    .await?;
                // Not checked: the server's word, if nobody received it, comes later.
                return Ok(Delivery::Unknown);
            }
            let no_responders = self
                .inner
                .round_trip(Some((subject.clone(), frame)))
                .await?;
            if no_responders {
                return Ok(Delivery::Exact(0));
            }
            if to_actor {
                let id = self.inner.next_probe.fetch_add(1, Ordering::Relaxed);
                locked(&self.inner.probes.reachable).found(subject, id);
            }
            return Ok(Delivery::AtLeastOne);
        }
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
            .await?;
        Ok(Delivery::Unknown)
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        let subject = names::subject(&self.inner.prefix, channel)?;
        let subscriber = self
            .inner
            .while_connected("a subscription", async {
                self.inner
                    .client
                    .subscribe(subject.clone())
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
        self.inner.round_trip(None).await?;
        // The client hands messages over through its own queue per subscription (bounded by
        // `subscription_capacity`; it drops for a slow consumer); this task empties it into
        // the sink, which never waits.
        let mut subscriber = subscriber;
        let open = Arc::new(AtomicBool::new(true));
        let delivering = open.clone();
        let reader = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                // Checked before each delivery: a frame the reader already holds when the
                // subscription is closed or dropped does not reach the sink. (No lock is held
                // while delivering: a sink may drop what owns this subscription.)
                if !delivering.load(Ordering::Acquire) {
                    break;
                }
                sink.deliver(message.payload);
            }
        });
        Ok(reader_subscription(
            self.inner.clone(),
            reader,
            open,
            subject,
        ))
    }

    /// With [`NatsConfig::check_delivery`](crate::NatsConfig::check_delivery) off, calls
    /// are plain publishes.
    fn reports_undelivered(&self) -> bool {
        self.inner.check_delivery
    }

    /// A call to one actor is published with a reply subject of this connection's probe
    /// inbox and returns at once: the server answers a call nobody is subscribed to with a
    /// "no responders" status there, which fails the call through the returned watch,
    /// while a received call's reply comes as usual. No round trip waits here.
    async fn publish_call(
        &self,
        channel: &Channel,
        frame: Bytes,
    ) -> Result<(Delivery, Option<Undelivered>), BackendError> {
        if !self.inner.check_delivery {
            return Ok((self.publish(channel, frame).await?, None));
        }
        let subject = names::subject(&self.inner.prefix, channel)?;
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
        let undelivered = Undelivered::new(async move {
            let _guard = guard;
            if report.await.is_err() {
                // The watch ended without a status (the connection dropped): no word comes.
                std::future::pending::<()>().await;
            }
        });
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
