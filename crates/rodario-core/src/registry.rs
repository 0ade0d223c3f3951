//! The user-facing registry: which actors exist, and proxies to them by UUID.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::actor::{ActorInfo, ChannelMember, MEMBERS_METHOD, METHODS_METHOD};
use crate::backend::Group;
use crate::client::{ActorProxy, Client, ClusterProxy, TypedProxy};
use crate::error::{Error, Result};
use crate::host::Liveness;
use crate::name::ActorId;

/// The actor registry of a node's backend (the Python library's `Registry`), scoped by the
/// backend's prefix. Get one with [`Node::registry`](crate::Node::registry).
///
/// Every operation is bounded by the node's call timeout: a broker that does not answer in
/// time ends it with a connection error ([`Error::Backend`]).
#[derive(Clone)]
pub struct ActorRegistry {
    client: Arc<Client>,
    liveness: Arc<Liveness>,
    timeout: Duration,
}

impl fmt::Debug for ActorRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorRegistry")
            .field("backend", &self.client.shared().backend.name())
            .finish_non_exhaustive()
    }
}

impl ActorRegistry {
    pub(crate) fn new(client: Arc<Client>, liveness: Arc<Liveness>) -> Self {
        let timeout = client.shared().config.call_timeout;
        ActorRegistry {
            client,
            liveness,
            timeout,
        }
    }

    /// The same registry with another deadline for discovery ([`ActorRegistry::describe`],
    /// [`ActorRegistry::get_proxy`]) and for the proxies it makes (default: the node's call
    /// timeout).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The UUIDs of the live registered actors.
    pub async fn actors(&self) -> Result<BTreeSet<String>> {
        let shared = self.client.shared();
        let list = async { Ok(shared.backend.presence().members(Group::Actors).await?) };
        shared.bounded("listing the actors", list).await
    }

    /// Whether a live actor is registered under `uuid`.
    pub async fn exists(&self, uuid: &str) -> Result<bool> {
        let shared = self.client.shared();
        let lookup = async {
            Ok(shared
                .backend
                .presence()
                .contains(Group::Actors, uuid)
                .await?)
        };
        shared.bounded("looking up an actor", lookup).await
    }

    /// Registers `uuid` without starting an actor (starting an actor does this itself). The
    /// node keeps the registration alive until [`ActorRegistry::unregister`] or shutdown.
    /// Fails with [`Error::UuidInUse`] if it is taken.
    pub async fn register(&self, uuid: &str) -> Result<()> {
        let id = ActorId::new(uuid)?;
        self.liveness.register(&id).await
    }

    /// Removes `uuid` from the registry, whichever process registered it; returns whether it
    /// was registered. A registration this node holds stays removed; one that another live
    /// node holds comes back at that node's next renewal (the broker tells that node one of
    /// its entries was removed, and it registers again what it still serves, as after a
    /// broker restart): stop an actor to remove it for good.
    pub async fn unregister(&self, uuid: &str) -> Result<bool> {
        let id = ActorId::new(uuid)?;
        self.liveness.unregister(&id, true).await
    }

    /// A proxy to the actor `uuid`, typed (`GreeterProxy`) or untyped ([`ActorProxy`]),
    /// made here without asking the actor anything: no round trip, no wait. A missing actor
    /// shows at the first call ([`Error::InvalidActor`]), a method it does not serve as
    /// [`Error::UnknownMethod`]. [`ActorRegistry::get_proxy`] checks both first.
    ///
    /// Fails only with [`Error::InvalidName`] when `uuid` is not a valid actor name.
    pub fn proxy<P: TypedProxy>(&self, uuid: &str) -> Result<P> {
        let id = ActorId::new(uuid)?;
        let methods = P::METHODS.iter().map(|m| (*m).to_owned()).collect();
        Ok(P::from_proxy(
            ActorProxy::new(self.client.clone(), id, methods).declared_by::<P>(),
        ))
    }

    /// Resolves when the actor `uuid` is gone: stopped, or its process died and its
    /// registration lapsed (within the liveness TTL of its death). It watches the registry
    /// (a fifth of this node's liveness TTL between looks) and keeps watching through broker
    /// outages; an actor that is not registered now resolves at once.
    ///
    /// Fails only with [`Error::InvalidName`] when `uuid` is not a valid actor name. Drop the
    /// future to stop watching.
    pub async fn monitor(&self, uuid: &str) -> Result<()> {
        let id = ActorId::new(uuid)?;
        let shared = self.client.shared();
        let period = shared.config.liveness_ttl / 5;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let lookup = async {
                Ok(shared
                    .backend
                    .presence()
                    .contains(Group::Actors, id.as_str())
                    .await?)
            };
            match shared.bounded("watching an actor", lookup).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => {
                    tracing::debug!(actor = %id, error = %e, "could not look up a monitored actor; will retry")
                }
            }
        }
    }

    /// The actors that joined the cluster channel `channel`, with their type names, sorted
    /// by UUID (empty when nobody has joined). Each member's node answers for it, without
    /// entering its mailbox, within the registry's deadline ([`Error::Timeout`] past it).
    pub async fn members(&self, channel: &str) -> Result<Vec<ChannelMember>> {
        let cluster = ClusterProxy::new(self.client.clone(), channel)?.with_timeout(self.timeout);
        let gather = match cluster.call::<ChannelMember>(MEMBERS_METHOD, ()).await {
            Ok(gather) => gather,
            Err(Error::EmptyCluster { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut members = match gather.all().await {
            Ok(members) => members,
            Err(Error::EmptyCluster { .. }) => Vec::new(),
            Err(Error::Timeout { after, .. }) => {
                return Err(Error::Timeout {
                    method: format!("listing the members of {channel}"),
                    after,
                })
            }
            Err(e) => return Err(e),
        };
        members.sort();
        Ok(members)
    }

    /// What the actor `uuid` is: its type name and its public methods.
    ///
    /// Its node answers at once, however busy the actor is, within the registry's deadline
    /// ([`ActorRegistry::with_timeout`]). Fails with [`Error::InvalidName`] if `uuid` is not a
    /// valid actor name, [`Error::InvalidActor`] if no actor answers, and
    /// [`Error::Timeout`] at the deadline.
    pub async fn describe(&self, uuid: &str) -> Result<ActorInfo> {
        let id = ActorId::new(uuid)?;
        let probe = ActorProxy::new(self.client.clone(), id, Vec::new()).with_timeout(self.timeout);
        let described = async { probe.call(METHODS_METHOD, ()).await?.await }.await;
        described.map_err(|e| match e {
            Error::Timeout { after, .. } => Error::Timeout {
                method: format!("describing actor {uuid}"),
                after,
            },
            other => other,
        })
    }

    /// A proxy to the actor `uuid`, typed (`GreeterProxy`) or untyped ([`ActorProxy`]),
    /// checked first: as in the Python library, it asks the actor's node for its methods
    /// ([`ActorRegistry::describe`], answered at once however busy the actor is). The
    /// proxy's calls get the registry's deadline.
    ///
    /// Fails with [`Error::InvalidName`] if `uuid` is not a valid actor name,
    /// [`Error::InvalidActor`] if no actor answers, [`Error::InvalidProxy`] if the actor
    /// lacks a method the proxy type calls, and [`Error::Timeout`] at the deadline. For a
    /// proxy with no round trip at all, use [`ActorRegistry::proxy`].
    pub async fn get_proxy<P: TypedProxy>(&self, uuid: &str) -> Result<P> {
        let info = self.describe(uuid).await?;
        let id = ActorId::new(uuid)?;
        let names: Vec<String> = info.methods.into_iter().map(|m| m.name).collect();
        let missing: Vec<&str> = P::METHODS
            .iter()
            .copied()
            .filter(|m| !names.iter().any(|n| n == m))
            .collect();
        if !missing.is_empty() {
            return Err(Error::InvalidProxy {
                reason: format!(
                    "actor {id} ({}) does not serve {} that {} calls",
                    info.type_name,
                    missing.join(", "),
                    std::any::type_name::<P>()
                ),
            });
        }
        let proxy = ActorProxy::new(self.client.clone(), id, names)
            .declared_by::<P>()
            .with_timeout(self.timeout)
            .of_type(&info.type_name);
        Ok(P::from_proxy(proxy))
    }
}
