//! Liveness: the registrations and cluster memberships a node holds in the broker, kept
//! alive by a heartbeat that renews them, restores what the broker lost, and catches up at
//! once when the connection comes back.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{watch, OnceCell};
use tokio::time::Instant;

use crate::backend::{ConnectionState, Group};
use crate::error::{Error, Result};
use crate::name::{ActorId, ClusterName};
use crate::shared::{connection_change, Shared};
use crate::sync::locked;

/// What this node keeps alive in the broker.
#[derive(Default)]
struct Owned {
    actors: BTreeSet<ActorId>,
    memberships: BTreeSet<ClusterName>,
}

/// The first pause before retrying a renewal pass that failed.
const RENEWAL_RETRY_MIN: Duration = Duration::from_millis(100);

/// A node's registrations and memberships, and the heartbeat that keeps them.
pub(crate) struct Liveness {
    shared: Arc<Shared>,
    owned: Mutex<Owned>,
    heartbeat: OnceCell<()>,
}

impl Liveness {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Liveness {
            shared,
            owned: Mutex::new(Owned::default()),
            heartbeat: OnceCell::new(),
        }
    }

    /// Registers `id` as an actor held by this node and keeps it alive.
    pub(crate) async fn register(self: &Arc<Self>, id: &ActorId) -> Result<()> {
        let shared = &self.shared;
        let insert = async {
            shared
                .backend
                .presence()
                .insert(
                    Group::Actors,
                    id.as_str(),
                    shared.id.as_str(),
                    shared.config.liveness_ttl,
                )
                .await
                .map_err(|source| Error::Registration {
                    uuid: id.to_string(),
                    source,
                })
        };
        if !shared.bounded("registering an actor", insert).await? {
            return Err(Error::UuidInUse {
                uuid: id.to_string(),
            });
        }
        locked(&self.owned).actors.insert(id.clone());
        self.ensure_heartbeat().await;
        Ok(())
    }

    /// Unregisters `id` if this node holds it (or anyone does, when `any_owner`).
    pub(crate) async fn unregister(&self, id: &ActorId, any_owner: bool) -> Result<bool> {
        locked(&self.owned).actors.remove(id);
        let shared = &self.shared;
        let owner = (!any_owner).then_some(shared.id.as_str());
        let remove = async {
            Ok(shared
                .backend
                .presence()
                .remove(Group::Actors, id.as_str(), owner)
                .await?)
        };
        shared.bounded("unregistering an actor", remove).await
    }

    /// Unregisters every actor this node holds (at shutdown).
    pub(crate) async fn unregister_all(&self) {
        let registered: Vec<ActorId> = std::mem::take(&mut locked(&self.owned).actors)
            .into_iter()
            .collect();
        for id in registered {
            if let Err(e) = self.unregister(&id, false).await {
                tracing::warn!(uuid = %id, error = %e, "could not unregister at shutdown");
            }
        }
    }

    /// Records this node as a member of `channel`, where the broker cannot count receivers
    /// (a cluster proxy then counts memberships instead), and keeps it alive.
    pub(crate) async fn join(self: &Arc<Self>, channel: &ClusterName) -> Result<()> {
        let shared = &self.shared;
        if shared.backend.transport().counts_receivers() {
            return Ok(());
        }
        let insert = async {
            Ok(shared
                .backend
                .presence()
                .insert(
                    Group::Members(channel),
                    shared.id.as_str(),
                    shared.id.as_str(),
                    shared.config.liveness_ttl,
                )
                .await?)
        };
        shared.bounded("joining a cluster channel", insert).await?;
        locked(&self.owned).memberships.insert(channel.clone());
        self.ensure_heartbeat().await;
        Ok(())
    }

    /// Removes this node's membership of `channel`, if it recorded one.
    pub(crate) async fn part(&self, channel: &ClusterName) -> Result<()> {
        if !locked(&self.owned).memberships.remove(channel) {
            return Ok(());
        }
        let shared = &self.shared;
        let id = shared.id.as_str();
        let remove = async {
            Ok(shared
                .backend
                .presence()
                .remove(Group::Members(channel), id, Some(id))
                .await?)
        };
        shared.bounded("parting a cluster channel", remove).await?;
        Ok(())
    }

    /// Starts renewing this node's registrations, once.
    async fn ensure_heartbeat(self: &Arc<Self>) {
        self.heartbeat
            .get_or_init(|| async {
                tokio::spawn(heartbeat(
                    Arc::downgrade(self),
                    self.shared.shutdown_signal(),
                    self.shared.connection_state(),
                ));
            })
            .await;
    }

    /// One renewal pass over everything this node keeps alive; false when some renewal
    /// failed and the pass should be retried.
    async fn renew_all(&self) -> bool {
        let (actors, memberships) = {
            let owned = locked(&self.owned);
            (
                owned.actors.iter().cloned().collect::<Vec<_>>(),
                owned.memberships.iter().cloned().collect::<Vec<_>>(),
            )
        };
        let mut renewed = self.renew_group(Group::Actors, &actors).await;
        for channel in &memberships {
            let node = std::slice::from_ref(&self.shared.id);
            renewed &= self.renew_group(Group::Members(channel), node).await;
        }
        renewed
    }

    /// Renews `members` of `group`, re-inserting those the broker lost; false when the
    /// broker failed (the pass is retried), true when every member is held (or lost to
    /// another owner, which retrying cannot mend).
    async fn renew_group<N: AsRef<str>>(&self, group: Group<'_>, members: &[N]) -> bool {
        if members.is_empty() {
            return true;
        }
        let presence = self.shared.backend.presence();
        let ttl = self.shared.config.liveness_ttl;
        let owner = self.shared.id.as_str();
        let names: Vec<&str> = members.iter().map(AsRef::as_ref).collect();
        let held = match presence.renew(group, &names, owner, ttl).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, ?group, "could not renew registrations; will retry");
                return false;
            }
        };
        let mut renewed = true;
        for (name, held) in names.iter().zip(held) {
            if held {
                continue;
            }
            match presence.insert(group, name, owner, ttl).await {
                Ok(true) => {
                    tracing::info!(?group, member = %name, "re-registered after the broker lost it")
                }
                Ok(false) => tracing::error!(
                    ?group,
                    member = %name,
                    "registration lost to another process; calls may reach that process instead"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, ?group, member = %name, "could not re-register; will retry");
                    renewed = false;
                }
            }
        }
        renewed
    }
}

/// Renews the node's registrations every third of the liveness TTL, and re-registers what
/// the broker lost (a restarted Redis forgets everything). When the backend reports its
/// connection back after an outage, a pass runs at once rather than at the next tick, so a
/// registration the broker lost meanwhile is back as soon as the broker answers; a pass
/// that fails (the broker still recovering) is retried soon, with a backoff.
async fn heartbeat(
    liveness: Weak<Liveness>,
    mut shutdown: watch::Receiver<bool>,
    mut connection: Option<watch::Receiver<ConnectionState>>,
) {
    let period = match liveness.upgrade() {
        Some(liveness) => liveness.shared.config.liveness_ttl / 3,
        None => return,
    };
    let mut next = Instant::now() + period;
    let mut retry = RENEWAL_RETRY_MIN;
    let stopped = shutdown.wait_for(|down| *down);
    tokio::pin!(stopped);
    loop {
        let reconnected = tokio::select! {
            biased;
            _ = &mut stopped => break,
            () = tokio::time::sleep_until(next) => false,
            Some(state) = connection_change(&mut connection) => {
                if state != ConnectionState::Connected {
                    continue;
                }
                true
            }
        };
        let Some(liveness) = liveness.upgrade() else {
            break;
        };
        let renewed = liveness.renew_all().await;
        if reconnected && renewed {
            tracing::info!(
                node = %liveness.shared.id,
                "connection to the broker restored: registrations and memberships renewed"
            );
        }
        if renewed {
            next = Instant::now() + period;
            retry = RENEWAL_RETRY_MIN;
        } else {
            next = Instant::now() + retry.min(period);
            retry = (retry * 2).min(period);
        }
    }
}
