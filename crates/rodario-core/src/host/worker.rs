//! The loop that handles an actor's calls one at a time, in arrival order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::actor_type::ActorType;
use super::inbox::{Envelope, Incoming, IncomingCall, Via, ViaCluster};
use super::outbox::Outbox;
use crate::actor::Actor;
use crate::error::quote_name;
use crate::error::{RemoteError, RemoteErrorKind};
use crate::frame::Outcome;
use crate::hooks::{guarded, CallContext};
use crate::locks::Locks;
use crate::name::{ActorId, NodeId};
use crate::named_args::{merge_named, names_arguments};
use crate::observe::ActorCounters;
use crate::shared::Shared;
use crate::telemetry::{handler_outcome, handler_span};
use tracing::Instrument;

/// An actor with what it needs to handle its calls.
pub(crate) struct Worker<A> {
    actor: A,
    id: ActorId,
    /// The actor type's public methods (one lookup per call finds a method's spec and the
    /// index of its counters).
    kind: Arc<ActorType>,
    /// This actor's counters of its methods.
    counters: Arc<ActorCounters>,
    shared: Arc<Shared>,
    locks: Locks,
    /// Set while a call is being handled, so that a node choosing a member to run a
    /// `singular` call prefers an idle one.
    busy: Arc<AtomicBool>,
    /// The key of this actor's `rodario_mailbox_depth`, made at its first call (an idle
    /// actor's memory counts).
    #[cfg(feature = "metrics")]
    depth_key: Option<Box<metrics::Key>>,
}

/// The reply to one call: what to send, to which node.
struct Answer {
    to: NodeId,
    id: u64,
    outcome: Outcome,
}

impl<A: Actor> Worker<A> {
    pub(crate) fn new(
        actor: A,
        id: ActorId,
        (kind, counters): (Arc<ActorType>, Arc<ActorCounters>),
        shared: &Arc<Shared>,
        locks: &Locks,
        busy: Arc<AtomicBool>,
    ) -> Self {
        Worker {
            actor,
            id,
            kind,
            counters,
            shared: shared.clone(),
            locks: locks.clone(),
            busy,
            #[cfg(feature = "metrics")]
            depth_key: None,
        }
    }

    /// Sets this actor's `rodario_mailbox_depth` to `depth`.
    #[cfg(feature = "metrics")]
    fn record_depth(&mut self, depth: usize) {
        let (type_name, id) = (self.kind.type_name, &self.id);
        let key = self
            .depth_key
            .get_or_insert_with(|| Box::new(crate::telemetry::mailbox_depth_key(type_name, id)));
        crate::telemetry::mailbox_depth(key, depth);
    }
}

/// Marks the actor dead when the worker ends, however it ends.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Handles the calls in `inbox` one by one until `stop`, then answers the calls still
/// queued with "stopped".
pub(crate) async fn run_worker<A: Actor>(
    mut worker: Worker<A>,
    mut inbox: mpsc::Receiver<Envelope>,
    mut stop: oneshot::Receiver<()>,
    alive: Arc<AtomicBool>,
) {
    let _alive = AliveGuard(alive);
    let mut outbox = Outbox::new();
    loop {
        let envelope = tokio::select! {
            biased;
            _ = &mut stop => break,
            () = outbox.progress(), if outbox.is_busy() => continue,
            next = inbox.recv() => match next {
                Some(envelope) => envelope,
                None => break,
            },
        };
        #[cfg(feature = "metrics")]
        worker.record_depth(inbox.len());
        worker.busy.store(true, Ordering::Release);
        let answer = worker.handle(envelope).await;
        worker.busy.store(false, Ordering::Release);
        if let Some(Answer { to, id, outcome }) = answer {
            let from = worker.id.clone();
            outbox.reply(&worker.shared, to, id, from, outcome);
            outbox.make_room().await;
        }
    }
    inbox.close();
    while let Ok(envelope) = inbox.try_recv() {
        let Incoming { call, reply_to } = &*envelope.incoming;
        if call.one_way {
            continue;
        }
        let error = RemoteError::new(RemoteErrorKind::Stopped, "the actor stopped");
        let (to, id, from) = (reply_to.clone(), call.id, worker.id.clone());
        outbox.reply(&worker.shared, to, id, from, Outcome::Err(error));
        outbox.make_room().await;
    }
    outbox.flush().await;
}

impl<A: Actor> Worker<A> {
    /// Runs one call; returns its reply (none for a one-way call or one whose caller gave
    /// up).
    async fn handle(&mut self, envelope: Envelope) -> Option<Answer> {
        let Envelope { incoming, via } = envelope;
        let Incoming { call, reply_to } = &*incoming;
        if self.shared.caller_gave_up(call.deadline_ms) {
            tracing::debug!(actor = %self.id, call = call.id, "skipped a call whose caller gave up");
            return None;
        }
        let started = Instant::now();
        let span = handler_span(
            self.kind.type_name,
            call.method.as_str(),
            &self.id,
            self.shared.backend.name(),
            call.trace.as_deref(),
        );
        // Instrumenting moves the call's future: only when a subscriber records the span.
        let (outcome, method) = if span.is_disabled() {
            self.run(call, reply_to, via, started).await
        } else {
            self.run(call, reply_to, via, started)
                .instrument(span.clone())
                .await
        };
        let label = handler_outcome(&outcome);
        span.record("outcome", label);
        #[cfg(feature = "metrics")]
        match method {
            Some((index, elapsed)) => self
                .kind
                .count_handled_at(Some(index), label, Some(elapsed)),
            // A cluster handler's call: counted under its method's name if the type has one.
            None => self
                .kind
                .count_handled(call.method.as_str(), label, Some(started.elapsed())),
        }
        #[cfg(not(feature = "metrics"))]
        let _ = method;
        if call.one_way {
            return None;
        }
        Some(Answer {
            to: reply_to.clone(),
            id: call.id,
            outcome,
        })
    }

    /// Runs a call the way it came: through the cluster's handler, or as the actor's method.
    /// Returns its outcome and, when it ran as one of the type's methods, the method's index
    /// in [`ActorType::method`] and how long since `started` it took (so that counting it
    /// needs no second lookup and no second clock read).
    async fn run(
        &mut self,
        call: &IncomingCall,
        caller: &NodeId,
        via: Via,
        started: Instant,
    ) -> (Outcome, Option<(usize, Duration)>) {
        let cluster =
            match via {
                Via::Cluster(cluster) => {
                    let ViaCluster {
                        channel,
                        handler,
                        singular_claimed,
                    } = *cluster;
                    if let Some(handler) = handler {
                        if call.kwargs.as_deref().is_some_and(names_arguments) {
                            let error = RemoteError::new(
                                RemoteErrorKind::BadArguments,
                                "a cluster handler takes its arguments by position only",
                            );
                            return (Outcome::Err(error), None);
                        }
                        let outcome =
                            match guarded("", handler.handle(call.method.as_str(), call.args()))
                                .await
                            {
                                Ok(value) => Outcome::Ok(value),
                                Err(error) => Outcome::Err(error),
                            };
                        return (outcome, None);
                    }
                    Some((channel, singular_claimed))
                }
                Via::Direct => None,
            };
        let Worker {
            actor,
            id,
            kind,
            counters,
            locks,
            ..
        } = self;
        let Some((spec, method)) = kind.method_of(&call.method) else {
            let error = RemoteError::new(
                RemoteErrorKind::UnknownMethod,
                format!("no method named {}", quote_name(call.method.as_str())),
            );
            return (Outcome::Err(error), None);
        };
        let merged;
        let args = match &call.kwargs {
            None => call.args(),
            Some(kwargs) => match merge_named(call.args(), kwargs, spec.params()) {
                Ok(args) => {
                    merged = args;
                    &merged
                }
                Err(error) => return (Outcome::Err(error), Some((method, started.elapsed()))),
            },
        };
        let context = CallContext {
            actor: id,
            method: call.method.as_str(),
            tags: spec.tags(),
            args,
            call_id: call.id,
            caller,
            cluster: cluster.as_ref().map(|(channel, _)| channel),
            deadline_ms: call.deadline_ms,
            locks,
            singular_claimed: cluster.as_ref().is_some_and(|(_, claimed)| *claimed),
        };
        let outcome = spec
            .chain()
            .run(&context, actor.dispatch(call.method.as_str(), args))
            .await;
        let error = match &outcome {
            Outcome::Err(error) => Some(error.message.as_str()),
            _ => None,
        };
        let elapsed = started.elapsed();
        counters.record(method, elapsed, error);
        (outcome, Some((method, elapsed)))
    }
}
