//! Starting an actor on a node, and the handle to a running one.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::actor::Actor;
use crate::client::{ActorProxy, Client, TypedProxy};
use crate::error::Result;
use crate::host::{ActorEntry, ClusterHandler, Host};
use crate::name::{ActorId, ClusterName};

/// An actor ready to start; made by [`Node::spawn`](crate::Node::spawn).
#[must_use = "an actor does nothing until started"]
pub struct ActorBuilder<A: Actor> {
    host: Arc<Host>,
    client: Arc<Client>,
    actor: A,
    uuid: Option<String>,
}

impl<A: Actor> ActorBuilder<A> {
    pub(crate) fn new(host: Arc<Host>, client: Arc<Client>, actor: A) -> Self {
        ActorBuilder {
            host,
            client,
            actor,
            uuid: None,
        }
    }

    /// Gives the actor this UUID (any valid name) instead of a random v4 UUID.
    pub fn uuid(mut self, uuid: impl Into<String>) -> Self {
        self.uuid = Some(uuid.into());
        self
    }

    /// Registers the actor, subscribes it to its channel and starts handling calls.
    ///
    /// Fails with [`Error::UuidInUse`](crate::Error::UuidInUse) if a live actor holds the
    /// UUID, with [`Error::InvalidName`](crate::Error::InvalidName) if the UUID is not valid,
    /// and with [`Error::Registration`](crate::Error::Registration) or
    /// [`Error::Backend`](crate::Error::Backend) if the broker fails.
    pub async fn start(self) -> Result<ActorHandle<A>> {
        let id = match self.uuid {
            Some(uuid) => ActorId::new(uuid)?,
            None => ActorId::generate(),
        };
        let entry = ActorEntry::start(&self.host, self.actor, id).await?;
        Ok(ActorHandle {
            entry,
            client: self.client,
            _actor: PhantomData,
        })
    }
}

/// A running actor: its UUID, liveness, cluster membership, and proxies to it.
///
/// Dropping the handle does not stop the actor (as a dropped `JoinHandle` does not stop a
/// task): it runs until [`ActorHandle::stop`] or [`Node::shutdown`](crate::Node::shutdown).
pub struct ActorHandle<A: Actor> {
    entry: Arc<ActorEntry>,
    client: Arc<Client>,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Actor> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        ActorHandle {
            entry: self.entry.clone(),
            client: self.client.clone(),
            _actor: PhantomData,
        }
    }
}

impl<A: Actor> fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorHandle")
            .field("uuid", &self.entry.id)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl<A: Actor> ActorHandle<A> {
    /// The actor's UUID.
    pub fn uuid(&self) -> &ActorId {
        &self.entry.id
    }

    /// Whether the actor is still handling calls.
    pub fn is_alive(&self) -> bool {
        self.entry.is_alive()
    }

    /// A typed proxy to this actor; no round trip, the methods are known here.
    pub fn proxy(&self) -> A::Proxy {
        let names = A::methods().iter().map(|m| m.name().to_owned()).collect();
        A::Proxy::from_proxy(
            ActorProxy::new(self.client.clone(), self.entry.id.clone(), names)
                .declared_by::<A::Proxy>(),
        )
    }

    /// Joins the cluster `channel`: its calls are dispatched to this actor's methods.
    pub async fn join(&self, channel: &str) -> Result<()> {
        self.join_cluster(channel, None).await
    }

    /// Joins the cluster `channel` with a custom handler for its calls instead of the
    /// actor's methods (the Python library's `join(channel, func)`). The handler runs on the
    /// actor's task, one call at a time with the actor's other calls.
    pub async fn join_with(&self, channel: &str, handler: impl ClusterHandler) -> Result<()> {
        self.join_cluster(channel, Some(Arc::new(handler))).await
    }

    async fn join_cluster(
        &self,
        channel: &str,
        handler: Option<Arc<dyn ClusterHandler>>,
    ) -> Result<()> {
        let channel = ClusterName::new(channel)?;
        self.entry.join(channel, handler).await
    }

    /// Leaves the cluster `channel`; returns whether the actor had joined it.
    pub async fn part(&self, channel: &str) -> Result<bool> {
        let channel = ClusterName::new(channel)?;
        self.entry.part(&channel).await
    }

    /// Stops the actor: unregisters it, parts its channels, lets the call being handled
    /// finish, and answers queued calls with "stopped" (callers see
    /// [`Error::InvalidActor`](crate::Error::InvalidActor)). Stopping a stopped actor does nothing.
    pub async fn stop(&self) {
        self.entry.stop().await;
    }
}
