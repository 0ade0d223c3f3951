//! Liveness: the registrations and cluster memberships a node holds in the broker, kept
//! alive by a heartbeat that renews the node's one lease (their entries live while it
//! does), restores what the broker lost, and catches up at once when the connection comes
//! back.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{watch, OnceCell};
use tokio::time::Instant;

use crate::backend::{ConnectionState, Group, LeaseRenewal};
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

/// Actors stopped, and entries removed, at once at shutdown: one at a time took seconds for
/// 10,000 actors.
pub(crate) const SHUTDOWN_CONCURRENCY: usize = 32;

/// The first pause before retrying a renewal pass that failed.
const RENEWAL_RETRY_MIN: Duration = Duration::from_millis(100);

/// A node's registrations and memberships, and the heartbeat that keeps them.
pub(crate) struct Liveness {
    shared: Arc<Shared>,
    owned: Mutex<Owned>,
    /// Set once the node's lease is taken and its heartbeat runs: before the first entry.
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
        self.ensure_lease().await?;
        let shared = &self.shared;
        let insert = async {
            shared
                .backend
                .presence()
                .insert(Group::Actors, id.as_str(), shared.id.as_str())
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

    /// Unregisters every actor this node holds (at shutdown), several at a time, then ends
    /// the node's lease: whatever could not be removed is no longer live either.
    pub(crate) async fn unregister_all(&self) {
        let registered: Vec<ActorId> = std::mem::take(&mut locked(&self.owned).actors)
            .into_iter()
            .collect();
        let removals = registered.iter().map(|id| async move {
            if let Err(e) = self.unregister(id, false).await {
                tracing::warn!(uuid = %id, error = %e, "could not unregister at shutdown");
            }
        });
        futures_util::stream::iter(removals)
            .buffer_unordered(SHUTDOWN_CONCURRENCY)
            .for_each(|()| async {})
            .await;
        if self.heartbeat.initialized() {
            let shared = &self.shared;
            let release = async {
                Ok(shared
                    .backend
                    .presence()
                    .release(shared.id.as_str())
                    .await?)
            };
            if let Err(e) = shared.bounded("ending the node's lease", release).await {
                tracing::warn!(node = %shared.id, error = %e, "could not end the node's lease at shutdown");
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
        self.ensure_lease().await?;
        let insert = async {
            Ok(shared
                .backend
                .presence()
                .insert(
                    Group::Members(channel),
                    shared.id.as_str(),
                    shared.id.as_str(),
                )
                .await?)
        };
        shared.bounded("joining a cluster channel", insert).await?;
        locked(&self.owned).memberships.insert(channel.clone());
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

    /// Takes the node's lease and starts renewing it, once, before the node's first entry.
    async fn ensure_lease(self: &Arc<Self>) -> Result<()> {
        self.heartbeat
            .get_or_try_init(|| async {
                let shared = &self.shared;
                let take = async {
                    Ok(shared
                        .backend
                        .presence()
                        .keep_alive(shared.id.as_str(), shared.config.liveness_ttl)
                        .await?)
                };
                shared.bounded("taking the node's lease", take).await?;
                tokio::spawn(heartbeat(
                    Arc::downgrade(self),
                    self.shared.shutdown_signal(),
                    self.shared.connection_state(),
                ));
                Ok::<(), Error>(())
            })
            .await?;
        Ok(())
    }

    /// One renewal: the node's lease, then, when the broker says entries may be missing (or
    /// `recheck`, after a reconnect), every entry the node holds. False when something failed
    /// and the pass should be retried.
    async fn renew(&self, recheck: bool) -> bool {
        let shared = &self.shared;
        let renewal = shared
            .backend
            .presence()
            .keep_alive(shared.id.as_str(), shared.config.liveness_ttl)
            .await;
        let check = match renewal {
            Ok(LeaseRenewal::Held) => recheck,
            Ok(found) => {
                tracing::info!(node = %shared.id, ?found, "checking this node's registrations");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the node's lease; will retry");
                return false;
            }
        };
        !check || self.restore_all().await
    }

    /// Checks every entry this node holds and inserts again those the broker lost; false
    /// when the broker failed and the pass should be retried.
    async fn restore_all(&self) -> bool {
        let (actors, memberships) = {
            let owned = locked(&self.owned);
            (
                owned.actors.iter().cloned().collect::<Vec<_>>(),
                owned.memberships.iter().cloned().collect::<Vec<_>>(),
            )
        };
        let mut restored = self.restore_group(Group::Actors, &actors).await;
        for channel in &memberships {
            let node = std::slice::from_ref(&self.shared.id);
            restored &= self.restore_group(Group::Members(channel), node).await;
        }
        restored
    }

    /// Checks `members` of `group` and inserts again those the broker lost; false when the
    /// broker failed (the pass is retried), true when every member is held (or lost to
    /// another owner, which retrying cannot mend).
    async fn restore_group<N: AsRef<str>>(&self, group: Group<'_>, members: &[N]) -> bool {
        if members.is_empty() {
            return true;
        }
        let presence = self.shared.backend.presence();
        let owner = self.shared.id.as_str();
        let names: Vec<&str> = members.iter().map(AsRef::as_ref).collect();
        let held = match presence.held(group, &names, owner).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, ?group, "could not check registrations; will retry");
                return false;
            }
        };
        let mut restored = true;
        for (name, held) in names.iter().zip(held) {
            if held {
                continue;
            }
            match presence.insert(group, name, owner).await {
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
                    restored = false;
                }
            }
        }
        restored
    }
}

/// Renews the node's lease every third of the liveness TTL, and re-registers what the broker
/// lost (a restarted Redis forgets everything; another process may have removed an entry).
/// When the backend reports its connection back after an outage, a pass that checks every
/// entry runs at once rather than at the next tick, so a registration the broker lost
/// meanwhile is back as soon as the broker answers; a pass that fails (the broker still
/// recovering) is retried soon, with a backoff, and checks every entry too. A broker whose
/// entries age out has them checked (and so rewritten) as often as it asks.
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
    let mut recheck = false;
    let refresh_every = liveness
        .upgrade()
        .and_then(|liveness| liveness.shared.backend.presence().refresh_every());
    let mut last_check = Instant::now();
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
        recheck |= reconnected || refresh_every.is_some_and(|every| last_check.elapsed() >= every);
        let renewed = liveness.renew(recheck).await;
        if reconnected && renewed {
            tracing::info!(
                node = %liveness.shared.id,
                "connection to the broker restored: registrations and memberships renewed"
            );
        }
        if renewed {
            next = Instant::now() + period;
            retry = RENEWAL_RETRY_MIN;
            if recheck {
                last_check = Instant::now();
            }
            recheck = false;
        } else {
            // What failed may have been the check a lost or disturbed lease asked for, whose
            // mark the renewal cleared: the retry checks every entry.
            recheck = true;
            next = Instant::now() + retry.min(period);
            retry = (retry * 2).min(period);
        }
    }
}
