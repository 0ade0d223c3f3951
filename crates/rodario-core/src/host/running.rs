//! A running actor as its host keeps it: starting it (registration, subscription,
//! worker), its cluster memberships, and stopping it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::actor_type::ActorType;
use super::cluster::ClusterMember;
use super::handler::ClusterHandler;
use super::inbox::{ActorSink, Envelope};
use super::worker::{run_worker, Worker};
use super::Host;
use crate::actor::Actor;
use crate::backend::Subscription;
use crate::error::{Error, Result};
use crate::name::{ActorId, ClusterName};
use crate::observe::{ActorCounters, LocalActor};
use crate::sync::locked;

/// What a host keeps about a running actor, whatever its type.
pub(crate) struct ActorEntry {
    pub(crate) id: ActorId,
    host: Arc<Host>,
    mailbox: mpsc::Sender<Envelope>,
    alive: Arc<AtomicBool>,
    busy: Arc<AtomicBool>,
    /// Its type's methods, shared with the other actors of its type on this node.
    kind: Arc<ActorType>,
    joined: Mutex<Vec<ClusterName>>,
    /// Its methods' counters, in the order of its type's method descriptions.
    counters: Arc<ActorCounters>,
    /// The actor's subscription and worker task, until it stops.
    running: tokio::sync::Mutex<Option<Running>>,
}

/// What runs an actor until it stops.
struct Running {
    subscription: Subscription,
    worker: JoinHandle<()>,
    /// Tells the worker to stop (dropped unsent, it stops it too). A oneshot: an idle
    /// actor's memory counts, and a `watch` channel's is six times the size.
    stop: oneshot::Sender<()>,
}

impl ActorEntry {
    /// Registers `actor` as `id`, subscribes it to its channel and starts its worker.
    pub(crate) async fn start<A: Actor>(
        host: &Arc<Host>,
        actor: A,
        id: ActorId,
    ) -> Result<Arc<Self>> {
        let shared = &host.shared;
        let kind = host.actor_type::<A>()?;
        host.liveness.register(&id).await?;
        let (mailbox, inbox) = mpsc::channel(shared.config.mailbox);
        let sink = Arc::new(ActorSink::new(
            shared,
            id.clone(),
            mailbox.clone(),
            kind.clone(),
        ));
        let subscribed = shared
            .backend
            .transport()
            .subscribe_actor(&id, &shared.id, sink)
            .await;
        let subscription = match subscribed {
            Ok(subscription) => subscription,
            Err(e) => {
                let _ = host.liveness.unregister(&id, false).await;
                return Err(e.into());
            }
        };
        let counters = kind.new_counters();
        let (stop, stopped) = oneshot::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let busy = Arc::new(AtomicBool::new(false));
        let worker = tokio::spawn(run_worker(
            Worker::new(
                actor,
                id.clone(),
                (kind.clone(), counters.clone()),
                shared,
                &host.locks,
                busy.clone(),
            ),
            inbox,
            stopped,
            alive.clone(),
        ));
        let entry = Arc::new(ActorEntry {
            id,
            host: host.clone(),
            mailbox,
            alive,
            busy,
            kind,
            joined: Mutex::new(Vec::new()),
            counters,
            running: tokio::sync::Mutex::new(Some(Running {
                subscription,
                worker,
                stop,
            })),
        });
        host.track(entry.clone());
        Ok(entry)
    }

    /// The actor and its methods' use, for [`crate::observe`].
    pub(crate) fn local(&self) -> LocalActor {
        LocalActor {
            uuid: self.id.to_string(),
            type_name: self.kind.type_name.to_owned(),
            methods: self
                .kind
                .infos()
                .iter()
                .enumerate()
                .map(|(method, info)| self.counters.snapshot(method, info))
                .collect(),
        }
    }

    /// Whether the actor is still handling calls.
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Joins the cluster `channel`, with `handler` for its calls instead of the methods.
    pub(crate) async fn join(
        &self,
        channel: ClusterName,
        handler: Option<Arc<dyn ClusterHandler>>,
    ) -> Result<()> {
        if !self.is_alive() {
            return Err(Error::Closed("the actor was stopped"));
        }
        let member = ClusterMember {
            actor: self.id.clone(),
            mailbox: self.mailbox.clone(),
            handler,
            busy: self.busy.clone(),
            type_name: self.kind.type_name,
            singular: self.kind.singular.clone(),
        };
        self.host.clusters.join(&channel, member).await?;
        let mut joined = locked(&self.joined);
        if !joined.contains(&channel) {
            joined.push(channel);
        }
        Ok(())
    }

    /// Leaves the cluster `channel`; returns whether the actor had joined it.
    pub(crate) async fn part(&self, channel: &ClusterName) -> Result<bool> {
        locked(&self.joined).retain(|c| c != channel);
        self.host.clusters.part(channel, &self.id).await
    }

    /// Unregisters, parts every channel, stops reading, and waits for the call being handled
    /// (if any) to finish; calls still queued are answered "stopped".
    pub(crate) async fn stop(&self) {
        let Some(Running {
            subscription,
            worker,
            stop,
        }) = self.running.lock().await.take()
        else {
            return;
        };
        if let Err(e) = self.host.liveness.unregister(&self.id, false).await {
            tracing::warn!(actor = %self.id, error = %e, "could not unregister a stopping actor");
        }
        let joined: Vec<ClusterName> = std::mem::take(&mut *locked(&self.joined));
        for channel in joined {
            if let Err(e) = self.host.clusters.part(&channel, &self.id).await {
                tracing::warn!(actor = %self.id, %channel, error = %e, "could not part a channel");
            }
        }
        subscription.close().await;
        let _ = stop.send(());
        // An actor stopping itself from one of its own methods must not wait for that
        // method to end: the worker ends right after it.
        if tokio::task::try_id() != Some(worker.id()) {
            let _ = worker.await;
        }
        self.host.untrack(&self.id);
    }

    /// Ends the actor's tasks at once, leaving its registrations to expire.
    #[cfg(feature = "testkit")]
    pub(crate) fn abort(&self) {
        if let Ok(mut running) = self.running.try_lock() {
            if let Some(Running {
                subscription,
                worker,
                ..
            }) = running.take()
            {
                drop(subscription);
                worker.abort();
            }
        }
        self.alive.store(false, Ordering::Release);
    }
}
