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
//! | `inbox.rs` | decoding calls, the actor's channel sink and mailbox |
//! | `worker.rs` | the loop that handles an actor's calls one by one |
//! | `outbox.rs` | reply frames, and publishing them without waiting |
//! | `cluster.rs` | cluster channels: members, subscriptions, fan-out |
//! | `handler.rs` | [`ClusterHandler`], a custom handler for an actor's cluster calls |
//! | `liveness.rs` | registrations and memberships, the heartbeat |

mod cluster;
mod handler;
mod inbox;
mod liveness;
mod outbox;
mod running;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use handler::ClusterHandler;
pub(crate) use running::ActorEntry;

use crate::locks::Locks;
use crate::name::ActorId;
use crate::shared::Shared;
use crate::sync::locked;
use cluster::Clusters;
pub(crate) use liveness::Liveness;

/// A node's host side: its running actors, their cluster channels and their liveness.
pub(crate) struct Host {
    shared: Arc<Shared>,
    locks: Locks,
    actors: Mutex<HashMap<ActorId, Arc<ActorEntry>>>,
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
            liveness,
        }
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

    /// Stops every actor and removes every registration this node holds.
    pub(crate) async fn shutdown(&self) {
        let actors: Vec<Arc<ActorEntry>> = locked(&self.actors).values().cloned().collect();
        for actor in actors {
            actor.stop().await;
        }
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
