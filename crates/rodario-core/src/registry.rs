//! The user-facing registry: which actors exist, and proxies to them by UUID.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::actor::{MethodInfo, METHODS_METHOD};
use crate::backend::Group;
use crate::client::{ActorProxy, Client, TypedProxy};
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
}

impl fmt::Debug for ActorRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorRegistry")
            .field("backend", &self.client.shared().backend.name())
            .finish_non_exhaustive()
    }
}

fn invalid_proxy(error: Error) -> Error {
    Error::InvalidProxy {
        reason: error.to_string(),
    }
}

impl ActorRegistry {
    pub(crate) fn new(client: Arc<Client>, liveness: Arc<Liveness>) -> Self {
        ActorRegistry { client, liveness }
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
    /// node holds comes back at that node's next renewal (the same mechanism that restores
    /// registrations after a broker restart): stop an actor to remove it for good.
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
        Ok(P::from_proxy(ActorProxy::new(
            self.client.clone(),
            id,
            methods,
        )))
    }

    /// A proxy to the actor `uuid`, typed (`GreeterProxy`) or untyped ([`ActorProxy`]).
    ///
    /// As in the Python library, it first asks the actor for its public methods. Fails with
    /// [`Error::InvalidProxy`] if `uuid` is not a valid name or the actor lacks a method the
    /// proxy type calls, and with [`Error::InvalidActor`] if no actor answers.
    pub async fn get_proxy<P: TypedProxy>(&self, uuid: &str) -> Result<P> {
        let id = ActorId::new(uuid).map_err(invalid_proxy)?;
        let probe = ActorProxy::new(self.client.clone(), id.clone(), Vec::new());
        let infos: Vec<MethodInfo> = probe.call(METHODS_METHOD, ()).await?.await?;
        let names: Vec<String> = infos.into_iter().map(|m| m.name).collect();
        let missing: Vec<&str> = P::METHODS
            .iter()
            .copied()
            .filter(|m| !names.iter().any(|n| n == m))
            .collect();
        if !missing.is_empty() {
            return Err(Error::InvalidProxy {
                reason: format!(
                    "actor {id} does not serve {} that {} calls",
                    missing.join(", "),
                    std::any::type_name::<P>()
                ),
            });
        }
        Ok(P::from_proxy(ActorProxy::new(
            self.client.clone(),
            id,
            names,
        )))
    }
}
