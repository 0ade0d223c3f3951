//! Calls coming in: decoding them, and queueing an actor's direct calls in its mailbox.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::actor_type::{ActorType, MethodName};
use super::handler::ClusterHandler;
use super::outbox::reply;
use crate::actor::METHODS_METHOD;
use crate::backend::FrameSink;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::frame::{
    read_call, span, Call, CallFrame, CallView, Frame, FramePart, Outcome, TraceContext,
};
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
    pub(crate) call: IncomingCall,
    pub(crate) reply_to: NodeId,
}

/// A call as a host keeps it: its arguments still in the frame they came in (neither
/// copied out nor its caller's name, which [`Incoming::reply_to`] holds).
pub(crate) struct IncomingCall {
    pub(crate) id: u64,
    pub(crate) method: MethodName,
    /// The encoded argument tuple.
    args: FramePart,
    pub(crate) deadline_ms: u64,
    pub(crate) kwargs: Option<Vec<u8>>,
    pub(crate) trace: Option<Box<TraceContext>>,
    pub(crate) one_way: bool,
}

impl IncomingCall {
    /// The encoded argument tuple.
    pub(crate) fn args(&self) -> &[u8] {
        self.args.bytes()
    }

    /// The call in `view` but for its arguments, which it takes once `view` no longer
    /// borrows their frame.
    fn viewed(view: CallView<'_>, kind: Option<&ActorType>) -> impl FnOnce(FramePart) -> Self {
        let (id, method) = (view.id, given(view.method, kind));
        let (deadline_ms, one_way) = (view.deadline_ms, view.one_way);
        let (kwargs, trace) = (view.kwargs.map(<[u8]>::to_vec), view.trace());
        move |args| IncomingCall {
            id,
            method,
            args,
            deadline_ms,
            kwargs,
            trace,
            one_way,
        }
    }

    fn decoded(call: Call, kind: Option<&ActorType>) -> Self {
        IncomingCall {
            id: call.id,
            method: given(&call.method, kind),
            args: FramePart::from(call.args),
            deadline_ms: call.deadline_ms,
            kwargs: call.kwargs,
            trace: call.trace,
            one_way: call.one_way,
        }
    }
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

/// A call's method as `kind` names it, when the call is to an actor of that type.
fn given(method: &str, kind: Option<&ActorType>) -> MethodName {
    match kind {
        Some(kind) => kind.method_name(method),
        None => MethodName::Given(method.to_owned()),
    }
}

/// Decodes a frame that must be a call, logging (not failing) on anything else.
/// `last_caller` keeps the previous caller's validated id: most calls on a channel come from
/// the same few nodes, so this skips re-validating and re-allocating it. `kind` is the type
/// of the actor the call is to, for a call to one actor: its method is found here, once.
pub(crate) fn decode_call(
    max_frame: usize,
    frame: Bytes,
    (channel, kind): (&dyn fmt::Display, Option<&ActorType>),
    last_caller: &mut Option<NodeId>,
) -> Option<(IncomingCall, NodeId)> {
    let read = read_call(&frame, max_frame);
    let (call, caller) = match read {
        Ok(CallFrame::View(view)) => {
            let caller = known_caller(view.reply_to, last_caller);
            let args = span(&frame, view.args);
            let call = IncomingCall::viewed(view, kind);
            (call(FramePart::new(frame, args)), caller)
        }
        Ok(CallFrame::Decoded(Frame::Call(call))) => {
            let caller = known_caller(&call.reply_to, last_caller);
            (IncomingCall::decoded(call, kind), caller)
        }
        Ok(CallFrame::Decoded(other)) => {
            telemetry::frame_dropped("not_a_call");
            tracing::warn!(%channel, kind = other.kind(), "dropped a frame that is not a call");
            return None;
        }
        Err(e) => {
            telemetry::frame_dropped("malformed");
            tracing::warn!(%channel, error = %e, "dropped a malformed frame");
            return None;
        }
    };
    match caller {
        Ok(caller) => Some((call, caller)),
        Err(e) => {
            telemetry::frame_dropped("no_caller");
            tracing::warn!(%channel, error = %e, "dropped a call with an invalid reply channel");
            None
        }
    }
}

/// The node named `reply_to`, the last caller's id again when it is the same.
fn known_caller(reply_to: &str, last_caller: &mut Option<NodeId>) -> Result<NodeId, Error> {
    match last_caller {
        Some(caller) if caller.as_str() == reply_to => Ok(caller.clone()),
        _ => {
            let caller = NodeId::new(reply_to)?;
            *last_caller = Some(caller.clone());
            Ok(caller)
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
        let read_as = (&self.id as &dyn fmt::Display, Some(&*self.kind));
        let decoded = decode_call(max_frame, bytes, read_as, &mut locked(&self.last_caller));
        let Some((call, reply_to)) = decoded else {
            return;
        };
        if call.method.as_str() == METHODS_METHOD && !call.one_way {
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
            self.kind.count_handled(call.method.as_str(), "shed", None);
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

    /// A call reads the same whether the direct reader takes its frame or serde does (a
    /// call written as a map, as another MessagePack writer might): its arguments from the
    /// frame, its caller's id kept for the next call from the same node.
    #[test]
    fn calls_read_the_same_by_either_reader() {
        use crate::frame::{encode_frame, encode_value, DEFAULT_MAX_FRAME, FRAME_VERSION};

        let call = Call {
            id: 42,
            reply_to: "caller-node".into(),
            method: "greet".into(),
            args: encode_value(&("Ann", 3), "args").unwrap(),
            deadline_ms: 1_700_000_000_000,
            kwargs: Some(encode_value(&[("n", 1)], "kwargs").unwrap()),
            trace: None,
            one_way: true,
        };
        let direct = encode_frame(&Frame::Call(call.clone()), DEFAULT_MAX_FRAME).unwrap();
        let mut as_map = vec![FRAME_VERSION, 1];
        as_map.extend(rmp_serde::to_vec_named(&Frame::Call(call.clone())).unwrap());
        let mut last_caller = None;
        for frame in [direct, Bytes::from(as_map)] {
            let (read, caller) =
                decode_call(DEFAULT_MAX_FRAME, frame, (&"test", None), &mut last_caller).unwrap();
            assert_eq!(caller.as_str(), "caller-node");
            assert_eq!(
                (read.id, read.method.as_str(), read.args(), read.deadline_ms),
                (call.id, "greet", &call.args[..], call.deadline_ms)
            );
            assert_eq!((&read.kwargs, read.one_way), (&call.kwargs, true));
        }
        assert_eq!(
            last_caller.map(|c| c.to_string()).as_deref(),
            Some("caller-node")
        );
    }

    /// A call keeps the frame it came in only when nothing else shares the frame's memory,
    /// as a connection's read buffer would.
    #[test]
    fn calls_do_not_hold_shared_frames() {
        use crate::frame::{encode_frame, encode_value, DEFAULT_MAX_FRAME};

        let args = encode_value(&("Ann",), "args").unwrap();
        let frame = encode_frame(
            &Frame::Call(Call {
                id: 1,
                reply_to: "caller-node".into(),
                method: "greet".into(),
                args: args.clone(),
                deadline_ms: u64::MAX,
                kwargs: None,
                trace: None,
                one_way: false,
            }),
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        let read = |frame: Bytes| {
            let (call, _) =
                decode_call(DEFAULT_MAX_FRAME, frame, (&"test", None), &mut None).expect("a call");
            call
        };
        let shared = frame.clone();
        let call = read(frame);
        assert_eq!(call.args(), &args[..]);
        assert!(shared.is_unique(), "the call holds a frame it shares");
        let unique = Bytes::from(shared.to_vec());
        let memory = unique.as_ptr_range();
        let call = read(unique);
        assert_eq!(call.args(), &args[..]);
        assert!(
            memory.contains(&call.args().as_ptr()),
            "a frame of its own is kept whole"
        );
    }

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
