//! The node's caller side: sending calls, and routing the replies that come back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{watch, OnceCell};
use tokio::time::Instant;

use super::calls::{sweep_deadlines, watch_targets, Answer, CallTable, PendingSlot, SlotGuard};
use crate::backend::{Channel, ConnectionState, Delivery, FrameSink, Subscription, Undelivered};
use crate::error::{BackendError, BackendErrorKind, Error, Result};
use crate::frame::{decode_frame, encode_call, TraceContext, ValueReply};
use crate::shared::{connection_change, Shared};
use crate::sync::locked;
use crate::telemetry;

/// How often per liveness TTL a node checks that the actors its calls wait on are still
/// registered: a call to an actor whose process died fails within about a TTL and a fifth
/// (its registration lapses within a TTL of the death).
const LOST_ACTOR_CHECKS_PER_TTL: u32 = 5;

/// A node's caller side: the calls it waits on and the reply channel they come back on.
pub(crate) struct Client {
    shared: Arc<Shared>,
    next_call: AtomicU64,
    calls: Arc<CallTable>,
    /// The node's reply subscription, made before its first call.
    reply_channel: OnceCell<Mutex<Option<Subscription>>>,
}

/// A call that was published: its reply slot, and what the broker knows of its receivers.
pub(crate) struct SentCall {
    pub(crate) slot: SlotGuard,
    pub(crate) delivery: Delivery,
    /// The broker's later word that nobody received a call to one actor, if it gives one.
    pub(crate) undelivered: Option<Undelivered>,
}

impl Client {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Client {
            shared,
            next_call: AtomicU64::new(1),
            calls: Arc::new(CallTable::default()),
            reply_channel: OnceCell::new(),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Makes the node ready to send a call: fails at once while the connection is down,
    /// and subscribes the reply channel before the node's first call (ready at once after
    /// that). Call it, bounded by the call's deadline, before [`Client::send_call`].
    pub(crate) async fn prepare(self: &Arc<Self>) -> Result<()> {
        self.shared.check_connected()?;
        self.ensure_reply_channel().await
    }

    /// Whether the node is ready to send at once: its reply channel is up (the connection
    /// is checked by [`Client::prepare`] still). The common case, tested without awaiting.
    pub(crate) fn reply_channel_ready(&self) -> bool {
        self.reply_channel.initialized()
    }

    /// Publishes a call of `method` on `channel`, its replies going to `slot` until the
    /// deadline (`timeout` from now, at `deadline`), once [`Client::prepare`] succeeded.
    /// The slot is registered before publishing, so the deadline sweeper fails it at the
    /// deadline even while the publish stalls: the caller bounds the publish by the slot.
    pub(crate) async fn send_call(
        self: &Arc<Self>,
        channel: &Channel,
        method: &str,
        args: Vec<u8>,
        (timeout, deadline): (Duration, Instant),
        slot: PendingSlot,
        trace: Option<&TraceContext>,
    ) -> Result<SentCall> {
        let target = match channel {
            Channel::Actor(actor) => Some(actor.clone()),
            _ => None,
        };
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let frame = encode_call(
            id,
            self.shared.id.as_str(),
            method,
            &args,
            self.shared.deadline_ms(timeout),
            (trace, false),
            self.shared.config.max_frame,
        )?;
        self.calls
            .add(id, slot, (deadline - timeout, deadline), target);
        // Registered before publishing: a reply can arrive before `publish` returns, and a
        // failed (or abandoned) publish removes the slot again when this is dropped.
        let slot = SlotGuard::new(self.calls.clone(), id);
        let (delivery, undelivered) = match channel {
            Channel::Actor(_) => self.shared.publish_call(channel, frame).await?,
            _ => (self.shared.publish(channel, frame).await?, None),
        };
        Ok(SentCall {
            slot,
            delivery,
            undelivered,
        })
    }

    /// Publishes a one-way call of `method` on `channel`: no reply channel, no slot, nothing
    /// to wait for but the publish. Receivers skip it once `timeout` has passed.
    pub(crate) async fn send_one_way(
        &self,
        channel: &Channel,
        method: &str,
        args: &[u8],
        timeout: Duration,
    ) -> Result<Delivery> {
        self.shared.check_connected()?;
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let frame = encode_call(
            id,
            self.shared.id.as_str(),
            method,
            args,
            self.shared.deadline_ms(timeout),
            (None, true),
            self.shared.config.max_frame,
        )?;
        self.shared.publish(channel, frame).await
    }

    /// Subscribes the node's reply channel once, before its first call is published, and
    /// starts the deadline sweeper and the connection watch.
    async fn ensure_reply_channel(self: &Arc<Self>) -> Result<()> {
        if self.shared.is_shut_down() {
            return Err(Error::Closed("the node was shut down"));
        }
        self.reply_channel
            .get_or_try_init(|| async {
                let sink = Arc::new(ReplySink {
                    client: Arc::downgrade(self),
                });
                let subscription = self
                    .shared
                    .backend
                    .transport()
                    .subscribe(&Channel::Reply(self.shared.id.clone()), sink)
                    .await?;
                tokio::spawn(sweep_deadlines(
                    self.calls.clone(),
                    self.shared.shutdown_signal(),
                ));
                tokio::spawn(watch_targets(
                    self.calls.clone(),
                    Arc::downgrade(&self.shared),
                    self.shared.config.liveness_ttl / LOST_ACTOR_CHECKS_PER_TTL,
                    self.shared.shutdown_signal(),
                ));
                if let Some(connection) = self.shared.connection_state() {
                    tokio::spawn(watch_connection(
                        Arc::downgrade(self),
                        self.shared.shutdown_signal(),
                        connection,
                    ));
                }
                Ok::<Mutex<Option<Subscription>>, Error>(Mutex::new(Some(subscription)))
            })
            .await?;
        Ok(())
    }

    /// Fails every call waiting for a reply: the connection dropped, so their replies are
    /// lost (pub/sub does not keep messages for a disconnected subscriber).
    fn fail_calls_on_disconnect(&self) {
        let backend = self.shared.backend.name();
        let failed = self.calls.fail_all(|| {
            Error::Backend(BackendError::new(
                backend,
                BackendErrorKind::Connection,
                "the connection to the broker dropped while the call waited for its reply; \
                 the actor may or may not have run it",
            ))
        });
        if failed > 0 {
            tracing::warn!(
                calls = failed,
                "connection lost: failed the calls in flight"
            );
        }
    }

    /// Closes the reply channel and forgets the calls in flight (they fail as closed).
    pub(crate) async fn close(&self) {
        let reply = self.reply_channel.get().and_then(|s| locked(s).take());
        if let Some(subscription) = reply {
            subscription.close().await;
        }
        self.calls.clear();
    }

    /// Drops the reply channel without unsubscribing, as a crashed process would.
    #[cfg(feature = "testkit")]
    pub(crate) fn crash(&self) {
        if let Some(reply) = self.reply_channel.get() {
            drop(locked(reply).take());
        }
    }
}

/// Routes frames on the node's reply channel to the calls waiting for them, right where the
/// backend reads them.
struct ReplySink {
    client: Weak<Client>,
}

impl FrameSink for ReplySink {
    fn deliver(&self, bytes: Bytes) {
        let Some(client) = self.client.upgrade() else {
            return;
        };
        let max_frame = client.shared.config.max_frame;
        // A value (every successful call's reply) stays in its frame until its caller
        // decodes it; the rest is decoded here.
        let bytes = match ValueReply::read(bytes, max_frame) {
            Ok(value) => return client.calls.answer(value.id(), Answer::Value(value)),
            Err(bytes) => bytes,
        };
        match decode_frame(&bytes, max_frame) {
            Ok(frame) => client.calls.route(frame),
            Err(e) => {
                telemetry::frame_dropped("malformed");
                tracing::warn!(error = %e, "dropped a malformed frame on the reply channel");
            }
        }
    }
}

/// Fails the calls in flight whenever the backend reports its connection dropped.
async fn watch_connection(
    client: Weak<Client>,
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
                match client.upgrade() {
                    Some(client) => client.fail_calls_on_disconnect(),
                    None => break,
                }
            }
        }
    }
}
