//! Sending replies: the reply frames themselves, and the [`Outbox`] that lets a task go on
//! while its replies travel.

use std::sync::Arc;
use std::task::{Context, Waker};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use crate::backend::Channel;
use crate::error::{Error, RemoteError, RemoteErrorKind, Result};
use crate::frame::{encode_reply, Outcome};
use crate::name::{ActorId, NodeId};
use crate::shared::Shared;

/// The frame of `outcome` for call `id` from `from`; when it is too large, one that says
/// so instead, so that the caller learns why rather than timing out.
fn reply_frame(limit: usize, id: u64, from: &ActorId, outcome: &Outcome) -> Result<Bytes> {
    match encode_reply(id, from.as_str(), outcome, limit) {
        Err(Error::Frame(too_large)) => {
            let message = format!("the reply could not be sent: {too_large}");
            let fallback = Outcome::Err(RemoteError::new(RemoteErrorKind::Handler, message));
            encode_reply(id, from.as_str(), &fallback, limit)
        }
        encoded => encoded,
    }
}

/// Logs a reply that could not be sent: the caller will time out either way.
fn unsent(from: &ActorId, id: u64, error: &Error) {
    tracing::warn!(actor = %from, call = id, error = %error, "could not send a reply");
}

/// Sends `outcome` for call `id` on behalf of `from` to node `to`; failures are logged.
pub(crate) async fn reply(shared: &Shared, to: &NodeId, id: u64, from: &ActorId, outcome: Outcome) {
    let sent = match reply_frame(shared.config.max_frame, id, from, &outcome) {
        Ok(frame) => shared.publish(&Channel::Reply(to.clone()), frame).await,
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        unsent(from, id, &e);
    }
}

/// Publishes that have started but not finished, so a task can go on with its next message
/// while its replies travel (a Redis `PUBLISH` waits for the server's answer). Each publish
/// is polled once when it is queued, which sends it on every backend; publishes that finish
/// at once are never stored, and a backend that publishes without waiting (memory) makes
/// no future at all.
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

    /// Sends `outcome` for call `id` on behalf of `from` to node `to`; failures are logged.
    /// Call [`Outbox::make_room`] after it.
    pub(crate) fn reply(
        &mut self,
        shared: &Arc<Shared>,
        to: NodeId,
        id: u64,
        from: ActorId,
        outcome: Outcome,
    ) {
        match reply_frame(shared.config.max_frame, id, &from, &outcome) {
            Ok(frame) => {
                let failed = move |e: Error| unsent(&from, id, &e);
                self.publish(shared, Channel::Reply(to), frame, failed);
            }
            Err(e) => unsent(&from, id, &e),
        }
    }

    /// Publishes `frame` on `channel`; `failed` hears why it could not be sent. Call
    /// [`Outbox::make_room`] after it.
    ///
    /// Neither this nor [`Outbox::reply`] is async: a task awaits only
    /// [`Outbox::make_room`], and only when too many publishes are in flight.
    pub(crate) fn publish(
        &mut self,
        shared: &Arc<Shared>,
        channel: Channel,
        frame: Bytes,
        failed: impl FnOnce(Error) + Send + 'static,
    ) {
        let transport = shared.backend.transport();
        // Published at once where the backend can (memory): no future to keep.
        let frame = match transport.try_publish(&channel, frame) {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => return failed(e.into()),
            Err(frame) => frame,
        };
        let shared = shared.clone();
        let mut publish: BoxFuture<'static, ()> = Box::pin(async move {
            let transport = shared.backend.transport();
            if let Err(e) = transport.publish(&channel, frame).await {
                failed(e.into());
            }
        });
        // Polled once now, so that the publish is on its way (written to the connection in
        // the order of the calls); the set polls it again, with the task's waker, the next
        // time the task drives it.
        let mut started = Context::from_waker(Waker::noop());
        if publish.as_mut().poll(&mut started).is_pending() {
            self.sending.push(publish);
        }
    }

    /// Waits while too many publishes are in flight.
    pub(crate) async fn make_room(&mut self) {
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
