//! The host's leg of a call: the actors a node runs and everything that serves them.
//!
//! A call arrives on an actor's channel, where its [`ActorSink`](inbox::ActorSink) decodes
//! it and queues it in the actor's mailbox (or sheds it when the mailbox is full); on a
//! cluster channel, where [`Clusters`](cluster::Clusters) fans it out to the local
//! members' mailboxes. The actor's worker runs one call at a time through the method's
//! [`HookChain`](crate::hooks::HookChain) and hands the reply to its outbox. [`Liveness`]
//! keeps the node's registrations and memberships alive in the broker.
//!
//! | file | what it owns |
//! |---|---|
//! | `running.rs` | a running actor: starting, joining, parting, stopping it |
//! | `actor_type.rs` | what the actors of one type share: their methods, described once |
//! | `inbox.rs` | decoding calls, the actor's channel sink and mailbox |
//! | `worker.rs` | the loop that handles an actor's calls one by one |
//! | `outbox.rs` | reply frames, and publishing them without waiting |
//! | `cluster.rs` | cluster channels: members, subscriptions, fan-out |
//! | `handler.rs` | [`ClusterHandler`], a custom handler for an actor's cluster calls |
//! | `liveness.rs` | registrations and memberships, the heartbeat |

mod actor_type;
mod cluster;
mod handler;
mod inbox;
mod liveness;
mod outbox;
mod running;
mod worker;

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;

pub use handler::ClusterHandler;
pub(crate) use running::ActorEntry;

use crate::actor::Actor;
use crate::error::Result;
use crate::locks::Locks;
use crate::name::ActorId;
use crate::shared::Shared;
use crate::sync::locked;
use actor_type::ActorType;
use cluster::Clusters;
pub(crate) use liveness::Liveness;

/// A node's host side: its running actors, their cluster channels and their liveness.
pub(crate) struct Host {
    shared: Arc<Shared>,
    locks: Locks,
    actors: Mutex<HashMap<ActorId, Arc<ActorEntry>>>,
    /// The method tables of the actor types started here, built once per type.
    types: Mutex<HashMap<TypeId, Arc<ActorType>>>,
    clusters: Clusters,
    pub(crate) liveness: Arc<Liveness>,
}

impl Host {
    pub(crate) fn new(shared: Arc<Shared>, locks: Locks) -> Self {
        let liveness = Arc::new(Liveness::new(shared.clone()));
        Host {
            clusters: Clusters::new(shared.clone(), liveness.clone(), locks.clone()),
            shared,
            locks,
            actors: Mutex::new(HashMap::new()),
            types: Mutex::new(HashMap::new()),
            liveness,
        }
    }

    /// The method table of actor type `A`, built at its first actor on this node.
    pub(crate) fn actor_type<A: Actor>(&self) -> Result<Arc<ActorType>> {
        if let Some(kind) = locked(&self.types).get(&TypeId::of::<A>()) {
            return Ok(kind.clone());
        }
        let kind = Arc::new(ActorType::of::<A>()?);
        Ok(locked(&self.types)
            .entry(TypeId::of::<A>())
            .or_insert(kind)
            .clone())
    }

    pub(crate) fn locks(&self) -> &Locks {
        &self.locks
    }

    /// The actors running here, with their methods' use.
    pub(crate) fn local_actors(&self) -> Vec<crate::observe::LocalActor> {
        let actors: Vec<Arc<ActorEntry>> = locked(&self.actors).values().cloned().collect();
        actors.iter().map(|actor| actor.local()).collect()
    }

    fn track(&self, entry: Arc<ActorEntry>) {
        locked(&self.actors).insert(entry.id.clone(), entry);
    }

    fn untrack(&self, id: &ActorId) {
        locked(&self.actors).remove(id);
    }

    /// Stops every actor (several at a time) and removes every registration this node
    /// holds, then ends its lease.
    pub(crate) async fn shutdown(&self) {
        let actors: Vec<Arc<ActorEntry>> = locked(&self.actors).values().cloned().collect();
        futures_util::stream::iter(actors.iter().map(|actor| actor.stop()))
            .buffer_unordered(liveness::SHUTDOWN_CONCURRENCY)
            .for_each(|()| async {})
            .await;
        self.liveness.unregister_all().await;
    }

    /// Ends every actor's tasks without unregistering anything, as a crash would.
    #[cfg(feature = "testkit")]
    pub(crate) async fn crash(&self) {
        let actors: Vec<Arc<ActorEntry>> = locked(&self.actors).drain().map(|(_, a)| a).collect();
        for actor in actors {
            actor.abort();
        }
        self.clusters.crash().await;
    }
}
