//! Sending replies: the reply frames themselves, and the [`Outbox`] that lets a task go on
//! while its replies travel.

use std::sync::Arc;
use std::task::Poll;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use crate::backend::Channel;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::frame::{encode_reply, Outcome};
use crate::name::{ActorId, NodeId};
use crate::shared::Shared;

/// Sends `outcome` for call `id` on behalf of `from` to node `to`; failures are logged,
/// since the caller will time out either way.
pub(crate) async fn reply(shared: &Shared, to: &NodeId, id: u64, from: &ActorId, outcome: Outcome) {
    let limit = shared.config.max_frame;
    let sent = match encode_reply(id, from.as_str(), &outcome, limit) {
        Ok(bytes) => shared.publish(&Channel::Reply(to.clone()), bytes).await,
        Err(Error::Frame(too_large)) => {
            // Tell the caller why instead of letting it time out.
            let message = format!("the reply could not be sent: {too_large}");
            let fallback = Outcome::Err(RemoteError::new(RemoteErrorKind::Handler, message));
            match encode_reply(id, from.as_str(), &fallback, limit) {
                Ok(bytes) => shared.publish(&Channel::Reply(to.clone()), bytes).await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = sent {
        tracing::warn!(actor = %from, call = id, error = %e, "could not send a reply");
    }
}

/// [`reply`] as an owned future, for an [`Outbox`].
pub(crate) fn reply_later(
    shared: &Arc<Shared>,
    to: NodeId,
    id: u64,
    from: ActorId,
    outcome: Outcome,
) -> BoxFuture<'static, ()> {
    let shared = shared.clone();
    Box::pin(async move { reply(&shared, &to, id, &from, outcome).await })
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
