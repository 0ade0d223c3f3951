//! Calls coming in: decoding them, and queueing an actor's direct calls in its mailbox.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::actor_type::ActorType;
use super::handler::ClusterHandler;
use super::outbox::reply;
use crate::actor::METHODS_METHOD;
use crate::backend::FrameSink;
use crate::error::{RemoteError, RemoteErrorKind};
use crate::frame::{decode_frame, Call, Frame, Outcome};
use crate::name::{ActorId, ClusterName, NodeId};
use crate::shared::Shared;
use crate::sync::locked;
use crate::telemetry;

/// A call queued for an actor: two pointers, since every mailbox allocates its first block
/// of 32 slots when it is made (an idle actor's memory).
pub(crate) struct Envelope {
    pub(crate) incoming: Arc<Incoming>,
    pub(crate) via: Via,
}

/// A decoded call and the node its reply goes to: one for all the members a cluster call
/// reaches on a node.
pub(crate) struct Incoming {
    pub(crate) call: Call,
    pub(crate) reply_to: NodeId,
}

/// How a call reached the actor. (A cluster call's details are boxed: an envelope stays
/// small.)
pub(crate) enum Via {
    Direct,
    Cluster(Box<ViaCluster>),
}

/// A call that reached the actor on a cluster channel.
pub(crate) struct ViaCluster {
    pub(crate) channel: ClusterName,
    pub(crate) handler: Option<Arc<dyn ClusterHandler>>,
    /// The node took the call's `singular` lease for this member.
    pub(crate) singular_claimed: bool,
}

/// Decodes a frame that must be a call, logging (not failing) on anything else.
/// `last_caller` keeps the previous caller's validated id: most calls on a channel come from
/// the same few nodes, so this skips re-validating and re-allocating it.
pub(crate) fn decode_call(
    max_frame: usize,
    bytes: &[u8],
    channel: &dyn fmt::Display,
    last_caller: &mut Option<NodeId>,
) -> Option<(Call, NodeId)> {
    match decode_frame(bytes, max_frame) {
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
                    telemetry::frame_dropped("no_caller");
                    tracing::warn!(%channel, error = %e, "dropped a call with an invalid reply channel");
                    None
                }
            },
        },
        Ok(other) => {
            telemetry::frame_dropped("not_a_call");
            tracing::warn!(%channel, kind = other.kind(), "dropped a frame that is not a call");
            None
        }
        Err(e) => {
            telemetry::frame_dropped("malformed");
            tracing::warn!(%channel, error = %e, "dropped a malformed frame");
            None
        }
    }
}

/// Queues the calls on an actor's own channel in its mailbox as the backend reads them,
/// shedding them with an "overloaded" reply when the mailbox is full, so the broker never
/// sees a slow subscriber.
///
/// It also answers discovery ([`METHODS_METHOD`]) itself, from the description it was
/// given: the actor's mailbox and whatever the actor is busy with never delay it.
pub(crate) struct ActorSink {
    shared: Weak<Shared>,
    id: ActorId,
    mailbox: mpsc::Sender<Envelope>,
    last_caller: Mutex<Option<NodeId>>,
    /// The actor's type: the description discovery answers with, the names of its methods
    /// and of itself for metrics.
    kind: Arc<ActorType>,
}

impl ActorSink {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        id: ActorId,
        mailbox: mpsc::Sender<Envelope>,
        kind: Arc<ActorType>,
    ) -> Self {
        ActorSink {
            shared: Arc::downgrade(shared),
            id,
            mailbox,
            last_caller: Mutex::new(None),
            kind,
        }
    }

    /// Sends `outcome` for `call` from a task of its own: a sink must not wait.
    fn reply_from_task(&self, shared: Arc<Shared>, to: NodeId, call: u64, outcome: Outcome) {
        let id = self.id.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { reply(&shared, &to, call, &id, outcome).await });
            }
            Err(_) => tracing::warn!(actor = %id, "no runtime to send a reply from"),
        }
    }
}

impl FrameSink for ActorSink {
    fn deliver(&self, bytes: Bytes) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let max_frame = shared.config.max_frame;
        let decoded = decode_call(max_frame, &bytes, &self.id, &mut locked(&self.last_caller));
        let Some((call, reply_to)) = decoded else {
            return;
        };
        if call.method == METHODS_METHOD && !call.one_way {
            let description = Outcome::Ok(self.kind.description.to_vec());
            self.reply_from_task(shared, reply_to, call.id, description);
            return;
        }
        let envelope = Envelope {
            incoming: Arc::new(Incoming { call, reply_to }),
            via: Via::Direct,
        };
        if let Err(mpsc::error::TrySendError::Full(envelope)) = self.mailbox.try_send(envelope) {
            tracing::warn!(actor = %self.id, "mailbox full: shedding a call");
            let Incoming { call, reply_to } = &*envelope.incoming;
            self.kind.count_handled(&call.method, "shed", None);
            if call.one_way {
                return;
            }
            let error = RemoteError::new(RemoteErrorKind::Overloaded, "mailbox full");
            self.reply_from_task(shared, reply_to.clone(), call.id, Outcome::Err(error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mailbox allocates room for 32 envelopes when it is made, so an envelope's size
    /// is part of every idle actor's memory (`benches/idle.rs`).
    #[test]
    fn an_envelope_is_two_pointers() {
        assert_eq!(
            std::mem::size_of::<Envelope>(),
            2 * std::mem::size_of::<usize>()
        );
    }
}
