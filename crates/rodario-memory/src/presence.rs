//! [`Presence`]: one map of members per group, each naming its owner, and one lease per
//! owner that its entries live by.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use rodario_core::backend::{check_ttl, Group, LeaseRenewal, Presence};
use rodario_core::error::BackendError;
use tokio::time::Instant;

use crate::{expires_after, locked, MemoryConnection, NAME};

/// The registry of a broker: entries and the owners' leases, behind one lock so that an
/// entry's liveness is read in one step.
#[derive(Default)]
pub(crate) struct Registry {
    /// Group name (prefixed) → member → owner.
    groups: HashMap<String, HashMap<String, String>>,
    /// Owner (prefixed) → its lease.
    owners: HashMap<String, OwnerLease>,
    /// The number of leases at which the expired ones (crashed owners') are dropped.
    purge_at: usize,
}

/// An owner's lease.
struct OwnerLease {
    expires: Instant,
    /// Another owner removed one of this owner's entries since its last renewal.
    disturbed: bool,
}

/// The fewest leases at which expired ones are dropped.
const PURGE_MIN: usize = 64;

impl Registry {
    /// Drops expired leases once their number has doubled since the last purge, so that
    /// crashed owners do not accumulate (an absent lease is as dead as an expired one).
    fn purge_if_grown(&mut self, now: Instant) {
        if self.owners.len() >= self.purge_at.max(PURGE_MIN) {
            self.owners.retain(|_, lease| lease.expires > now);
            self.purge_at = self.owners.len() * 2;
        }
    }

    fn owner_live(&self, owner: &str, now: Instant) -> bool {
        self.owners
            .get(owner)
            .is_some_and(|lease| lease.expires > now)
    }
}

impl MemoryConnection {
    /// The key of `owner`'s lease: owners of different prefixes are different owners.
    fn owner_key(&self, owner: &str) -> String {
        format!("{}{owner}", self.prefix)
    }
}

#[async_trait]
impl Presence for MemoryConnection {
    async fn keep_alive(&self, owner: &str, ttl: Duration) -> Result<LeaseRenewal, BackendError> {
        check_ttl(NAME, ttl)?;
        let now = Instant::now();
        let mut registry = locked(&self.state.registry);
        registry.purge_if_grown(now);
        let lease = OwnerLease {
            expires: expires_after(now, ttl),
            disturbed: false,
        };
        Ok(match registry.owners.insert(self.owner_key(owner), lease) {
            Some(old) if old.expires > now && old.disturbed => LeaseRenewal::Disturbed,
            Some(old) if old.expires > now => LeaseRenewal::Held,
            _ => LeaseRenewal::Lost,
        })
    }

    async fn release(&self, owner: &str) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut registry = locked(&self.state.registry);
        Ok(registry
            .owners
            .remove(&self.owner_key(owner))
            .is_some_and(|lease| lease.expires > now))
    }

    async fn insert(
        &self,
        group: Group<'_>,
        member: &str,
        owner: &str,
    ) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut registry = locked(&self.state.registry);
        let live = registry
            .groups
            .get(&self.group_name(group))
            .and_then(|entries| entries.get(member))
            .is_some_and(|holder| registry.owner_live(&self.owner_key(holder), now));
        if live {
            return Ok(false);
        }
        registry
            .groups
            .entry(self.group_name(group))
            .or_default()
            .insert(member.to_owned(), owner.to_owned());
        Ok(true)
    }

    async fn held(
        &self,
        group: Group<'_>,
        members: &[&str],
        owner: &str,
    ) -> Result<Vec<bool>, BackendError> {
        let registry = locked(&self.state.registry);
        let entries = registry.groups.get(&self.group_name(group));
        Ok(members
            .iter()
            .map(|member| {
                entries
                    .and_then(|e| e.get(*member))
                    .is_some_and(|h| h == owner)
            })
            .collect())
    }

    async fn remove(
        &self,
        group: Group<'_>,
        member: &str,
        owner: Option<&str>,
    ) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut registry = locked(&self.state.registry);
        let Some(holder) = registry
            .groups
            .get(&self.group_name(group))
            .and_then(|entries| entries.get(member))
            .cloned()
        else {
            return Ok(false);
        };
        let holder_key = self.owner_key(&holder);
        let live = registry.owner_live(&holder_key, now);
        if owner.is_some_and(|o| o != holder) || (owner.is_some() && !live) {
            return Ok(false);
        }
        if let Some(entries) = registry.groups.get_mut(&self.group_name(group)) {
            entries.remove(member);
        }
        if owner.is_none() && live {
            if let Some(lease) = registry.owners.get_mut(&holder_key) {
                lease.disturbed = true;
            }
        }
        Ok(live)
    }

    async fn contains(&self, group: Group<'_>, member: &str) -> Result<bool, BackendError> {
        let now = Instant::now();
        let registry = locked(&self.state.registry);
        Ok(registry
            .groups
            .get(&self.group_name(group))
            .and_then(|entries| entries.get(member))
            .is_some_and(|holder| registry.owner_live(&self.owner_key(holder), now)))
    }

    async fn members(&self, group: Group<'_>) -> Result<BTreeSet<String>, BackendError> {
        let now = Instant::now();
        let mut registry = locked(&self.state.registry);
        let Registry { groups, owners, .. } = &mut *registry;
        let Some(entries) = groups.get_mut(&self.group_name(group)) else {
            return Ok(BTreeSet::new());
        };
        let live = |holder: &String| {
            owners
                .get(&format!("{}{holder}", self.prefix))
                .is_some_and(|lease| lease.expires > now)
        };
        entries.retain(|_, holder| live(holder));
        Ok(entries.keys().cloned().collect())
    }
}
