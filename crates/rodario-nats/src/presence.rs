//! [`Presence`]: owners' leases and registry entries in the registry bucket, one key each.
//!
//! An owner's lease (key `o.{owner}`) is `{ttl ms} {owner}`, as [`kv::encode`] writes it:
//! live until `ttl` after the server stamped it. Another process's removal of one of the
//! owner's entries rewrites it as `!{ttl ms} {owner}` with the time it had left, and the
//! owner's next renewal, which writes it unmarked, reports [`LeaseRenewal::Disturbed`].
//!
//! An entry (key `a.{uuid}` or `m.{channel}.{node}`) is `@{owner}`, live while its owner's
//! lease is. Entries written before leases per owner, `{ttl ms} {owner}` (a leading digit),
//! stay live by their own TTL, so that nodes of both kinds share a prefix during an upgrade.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::kv::Entry;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use rodario_core::backend::{Group, LeaseRenewal, Presence};
use rodario_core::error::BackendError;

use crate::kv::{self, Bucket, Cas, Expiring, MAX_ATTEMPTS};
use crate::view::{Source, View};
use crate::{names, NatsConnection};

/// Leads an entry's value, before its owner's name.
const ENTRY_MARK: char = '@';

/// Leads a lease's value once another process removed one of its owner's entries.
const DISTURBED_MARK: char = '!';

/// Checks (each a read and maybe a rewrite) sent to the server at once.
const CHECK_CONCURRENCY: usize = 16;

/// Who holds an entry, read from its value.
enum Holder<'a> {
    /// Live while the owner's lease is.
    Leased(&'a str),
    /// An entry of an older rodario, live by its own TTL.
    Expiring(Expiring<'a>),
}

impl<'a> Holder<'a> {
    /// The holder of `entry` read at `now_ns`; `None` when it is deleted or unreadable.
    fn read(entry: &'a Entry, now_ns: i128) -> Option<Self> {
        Self::parse(kv::text(entry)?, kv::created_ns(entry), now_ns)
    }

    /// The holder named by `text`, a value the server stamped at `created_ns`.
    fn parse(text: &'a str, created_ns: i128, now_ns: i128) -> Option<Self> {
        match text.strip_prefix(ENTRY_MARK) {
            Some(owner) => Some(Holder::Leased(owner)),
            None => kv::expiring(text, created_ns, now_ns).map(Holder::Expiring),
        }
    }

    fn owner(&self) -> &'a str {
        match self {
            Holder::Leased(owner) => owner,
            Holder::Expiring(value) => value.owner,
        }
    }
}

fn entry_value(owner: &str) -> Bytes {
    Bytes::from(format!("{ENTRY_MARK}{owner}"))
}

/// An owner's lease, read.
struct Lease<'a> {
    value: Expiring<'a>,
    disturbed: bool,
}

impl<'a> Lease<'a> {
    /// The lease in `entry` read at `now_ns`; `None` when it is deleted or unreadable.
    fn read(entry: &'a Entry, now_ns: i128) -> Option<Self> {
        Self::parse(kv::text(entry)?, kv::created_ns(entry), now_ns)
    }

    /// The lease in `text`, a value the server stamped at `created_ns`.
    fn parse(text: &'a str, created_ns: i128, now_ns: i128) -> Option<Self> {
        let (disturbed, text) = match text.strip_prefix(DISTURBED_MARK) {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        Some(Lease {
            value: kv::expiring(text, created_ns, now_ns)?,
            disturbed,
        })
    }

    /// The lease's value with the disturbed mark and the time it has left (rounded up to
    /// the millisecond), for a rewrite that must not shorten it.
    fn marked(&self) -> Bytes {
        let left_ms = (self.value.left_ns + 999_999) / 1_000_000;
        let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(u64::MAX));
        let unmarked = kv::encode(self.value.owner, left);
        let mut value = Vec::with_capacity(1 + unmarked.len());
        value.push(DISTURBED_MARK as u8);
        value.extend_from_slice(&unmarked);
        Bytes::from(value)
    }
}

/// The registry bucket, read and written in the layout above.
struct Registry<'a> {
    bucket: &'a Bucket,
    /// Told of every write that stands, so that this connection's listings see it at once.
    view: &'a View,
}

impl Registry<'_> {
    async fn write(&self, key: &str, value: Bytes, revision: u64) -> Result<Cas, BackendError> {
        let cas = self.bucket.write(key, value.clone(), revision).await?;
        if let Cas::Written(written) = cas {
            self.view.written(key, written, Some(&value));
        }
        Ok(cas)
    }

    async fn delete(&self, key: &str, revision: u64) -> Result<Cas, BackendError> {
        let cas = self.bucket.delete(key, revision).await?;
        if let Cas::Written(written) = cas {
            self.view.written(key, written, None);
        }
        Ok(cas)
    }

    /// Writes `owner`'s lease (at `key`) for `ttl` from now, whatever it held, and says what
    /// it found.
    async fn keep_alive(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LeaseRenewal, BackendError> {
        let value = kv::encode(owner, ttl);
        for _ in 0..MAX_ATTEMPTS {
            let entry = self.bucket.entry(key).await?;
            let found = match entry.as_ref().and_then(|e| Lease::read(e, kv::now_ns())) {
                Some(lease) if lease.value.live() && lease.disturbed => LeaseRenewal::Disturbed,
                Some(lease) if lease.value.live() => LeaseRenewal::Held,
                _ => LeaseRenewal::Lost,
            };
            let revision = entry.map_or(0, |e| e.revision);
            if let Cas::Written(_) = self.write(key, value.clone(), revision).await? {
                return Ok(found);
            }
        }
        Err(Bucket::contention(key))
    }

    /// Deletes the lease at `key`; whether it was live.
    async fn release(&self, key: &str) -> Result<bool, BackendError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(entry) = self.bucket.entry(key).await? else {
                return Ok(false);
            };
            let Some(lease) = Lease::read(&entry, kv::now_ns()) else {
                return Ok(false);
            };
            if let Cas::Written(_) = self.delete(key, entry.revision).await? {
                return Ok(lease.value.live());
            }
        }
        Err(Bucket::contention(key))
    }

    /// Whether `owner`'s lease is live.
    async fn lease_live(&self, owner: &str) -> Result<bool, BackendError> {
        // A name too long for a key has no lease.
        let Ok(key) = names::owner_key(owner) else {
            return Ok(false);
        };
        Ok(self
            .bucket
            .entry(&key)
            .await?
            .is_some_and(|entry| Lease::read(&entry, kv::now_ns()).is_some_and(|l| l.value.live())))
    }

    async fn live(&self, holder: &Holder<'_>) -> Result<bool, BackendError> {
        match holder {
            Holder::Leased(owner) => self.lease_live(owner).await,
            Holder::Expiring(value) => Ok(value.live()),
        }
    }

    /// Creates the entry at `key` for `owner` unless a live entry holds it; an entry whose
    /// owner's lease ended, or a deleted one, is replaced with a revision-checked write, so
    /// of racing writers exactly one wins.
    async fn insert(&self, key: &str, owner: &str) -> Result<bool, BackendError> {
        let value = entry_value(owner);
        let mut revision = 0;
        for _ in 0..MAX_ATTEMPTS {
            if let Cas::Written(_) = self.write(key, value.clone(), revision).await? {
                return Ok(true);
            }
            let Some(entry) = self.bucket.entry(key).await? else {
                revision = 0;
                continue;
            };
            if let Some(holder) = Holder::read(&entry, kv::now_ns()) {
                if self.live(&holder).await? {
                    return Ok(false);
                }
            }
            revision = entry.revision;
        }
        Err(Bucket::contention(key))
    }

    /// Whether `owner` holds the entry at `key`; when it does and `rewrite`, writes it again
    /// (revision-checked) so that the server, which deletes messages older than the bucket's
    /// max_age, keeps it. An older rodario's entry is rewritten in any case, to live by the
    /// owner's lease from now on.
    async fn hold(&self, key: &str, owner: &str, rewrite: bool) -> Result<bool, BackendError> {
        let value = entry_value(owner);
        for _ in 0..MAX_ATTEMPTS {
            let Some(entry) = self.bucket.entry(key).await? else {
                return Ok(false);
            };
            let Some(holder) = Holder::read(&entry, kv::now_ns()) else {
                return Ok(false);
            };
            if holder.owner() != owner {
                return Ok(false);
            }
            if !rewrite && matches!(holder, Holder::Leased(_)) {
                return Ok(true);
            }
            if let Cas::Written(_) = self.write(key, value.clone(), entry.revision).await? {
                return Ok(true);
            }
        }
        Err(Bucket::contention(key))
    }

    /// Deletes the entry at `key` if it is live and (when `owner` is given) held by `owner`;
    /// without an owner, also a dead one (returning false), and the live one's holder's
    /// lease is marked disturbed. A mark that fails is logged: the entry is gone either way.
    async fn remove(&self, key: &str, owner: Option<&str>) -> Result<bool, BackendError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(entry) = self.bucket.entry(key).await? else {
                return Ok(false);
            };
            let Some(holder) = Holder::read(&entry, kv::now_ns()) else {
                return Ok(false);
            };
            if owner.is_some_and(|owner| owner != holder.owner()) {
                return Ok(false);
            }
            let live = self.live(&holder).await?;
            if owner.is_some() && !live {
                return Ok(false);
            }
            if let Cas::Conflict = self.delete(key, entry.revision).await? {
                continue;
            }
            // After the deletion, so that a renewal that finds the mark finds the entry gone.
            if let (None, true, Holder::Leased(holder)) = (owner, live, &holder) {
                if let Err(err) = self.mark_disturbed(holder).await {
                    tracing::warn!(%key, owner = holder, error = %err,
                        "removed a registry entry but could not tell its owner's lease");
                }
            }
            return Ok(live);
        }
        Err(Bucket::contention(key))
    }

    /// Marks `owner`'s lease disturbed if it is live, keeping the time it has left.
    async fn mark_disturbed(&self, owner: &str) -> Result<(), BackendError> {
        let key = names::owner_key(owner)?;
        for _ in 0..MAX_ATTEMPTS {
            let Some(entry) = self.bucket.entry(&key).await? else {
                return Ok(());
            };
            let value = match Lease::read(&entry, kv::now_ns()) {
                Some(lease) if lease.value.live() && !lease.disturbed => lease.marked(),
                _ => return Ok(()),
            };
            if let Cas::Written(_) = self.write(&key, value, entry.revision).await? {
                return Ok(());
            }
        }
        Err(Bucket::contention(&key))
    }

    async fn contains(&self, key: &str) -> Result<bool, BackendError> {
        let Some(entry) = self.bucket.entry(key).await? else {
            return Ok(false);
        };
        match Holder::read(&entry, kv::now_ns()) {
            Some(holder) => self.live(&holder).await,
            None => Ok(false),
        }
    }

    /// The live members under `root` as the memberships view holds them, by the rules of
    /// [`Registry::members`]; `None` while the view has not caught up.
    fn members_in_view(&self, root: &str) -> Option<BTreeSet<String>> {
        let state = self.view.ready()?;
        let now = kv::now_ns();
        let lease_live = |owner: &str| {
            let key = names::owner_key(owner).ok()?;
            let lease = state.lease(&key)?;
            Some(
                Lease::parse(&lease.text, lease.created_ns, now)?
                    .value
                    .live(),
            )
        };
        let mut members = BTreeSet::new();
        for (key, value) in state.members_under(root) {
            let live = match Holder::parse(&value.text, value.created_ns, now) {
                Some(Holder::Leased(owner)) => lease_live(owner).unwrap_or(false),
                Some(Holder::Expiring(value)) => value.live(),
                None => false,
            };
            if live {
                insert_member(&mut members, key, root);
            }
        }
        Some(members)
    }

    /// The live members under `root`: its entries, then the lease of each of their owners,
    /// read once per owner. Entries of owners whose lease ended are left for the bucket's
    /// max_age to delete: deleting one would leave a deletion marker in its place, just as
    /// long to list, and newer, so kept longer.
    async fn members(&self, root: &str) -> Result<BTreeSet<String>, BackendError> {
        let entries = self.bucket.entries_under(root).await?;
        let now = kv::now_ns();
        let holders: Vec<(&Entry, Holder<'_>)> = entries
            .iter()
            .filter_map(|entry| Some((entry, Holder::read(entry, now)?)))
            .collect();
        let mut owners: BTreeMap<&str, bool> = holders
            .iter()
            .filter_map(|(_, holder)| match holder {
                Holder::Leased(owner) => Some((*owner, false)),
                Holder::Expiring(_) => None,
            })
            .collect();
        let leases =
            futures_util::future::join_all(owners.keys().map(|owner| self.lease_live(owner))).await;
        for (live, lease) in owners.values_mut().zip(leases) {
            *live = lease?;
        }
        let mut members = BTreeSet::new();
        for (entry, holder) in &holders {
            let live = match holder {
                Holder::Leased(owner) => owners[owner],
                Holder::Expiring(value) => value.live(),
            };
            if live {
                insert_member(&mut members, &entry.key, root);
            }
        }
        Ok(members)
    }
}

/// Adds the member whose entry is at `key` under `root`.
fn insert_member(members: &mut BTreeSet<String>, key: &str, root: &str) {
    match key.strip_prefix(root).and_then(names::unescape) {
        Some(member) => {
            members.insert(member);
        }
        None => tracing::warn!(%key, "skipping a NATS KV key rodario did not write"),
    }
}

impl NatsConnection {
    fn start_view(&self) {
        self.inner.view.start(|| {
            let bucket = self.registry_bucket();
            Source {
                client: self.inner.client.clone(),
                stream: bucket.stream().clone(),
                subject_prefix: bucket.subject_prefix().to_owned(),
                max_age: bucket.max_age(),
                connection: self.inner.connection_state(),
            }
        });
    }

    /// The owner `actor`'s registry entry names, if it has one: live or not (a call to a
    /// dead owner's node finds nobody there, and is then tried elsewhere).
    pub(crate) async fn owner_of(&self, actor: &str) -> Result<Option<String>, BackendError> {
        let key = names::member_key(&names::group_root(Group::Actors)?, actor)?;
        let read = self.registry_bucket().entry(&key);
        let entry = self.bounded("a registry lookup", read).await?;
        let owner = entry
            .as_ref()
            .and_then(|entry| Holder::read(entry, kv::now_ns()))
            .map(|holder| holder.owner().to_owned());
        Ok(owner)
    }

    fn registry(&self) -> Registry<'_> {
        Registry {
            bucket: self.registry_bucket(),
            view: &self.inner.view,
        }
    }
}

#[async_trait]
impl Presence for NatsConnection {
    async fn keep_alive(&self, owner: &str, ttl: Duration) -> Result<LeaseRenewal, BackendError> {
        self.registry_bucket().check_ttl(ttl)?;
        let key = names::owner_key(owner)?;
        self.bounded(
            "an owner's lease renewal",
            self.registry().keep_alive(&key, owner, ttl),
        )
        .await
    }

    async fn release(&self, owner: &str) -> Result<bool, BackendError> {
        let key = names::owner_key(owner)?;
        self.bounded("an owner's lease release", self.registry().release(&key))
            .await
    }

    async fn insert(
        &self,
        group: Group<'_>,
        member: &str,
        owner: &str,
    ) -> Result<bool, BackendError> {
        let key = names::member_key(&names::group_root(group)?, member)?;
        // An owner whose name cannot be a key has no lease: refused like keep_alive does.
        names::owner_key(owner)?;
        self.bounded("a registry insert", self.registry().insert(&key, owner))
            .await
    }

    async fn held(
        &self,
        group: Group<'_>,
        members: &[&str],
        owner: &str,
    ) -> Result<Vec<bool>, BackendError> {
        let root = names::group_root(group)?;
        let keys = members
            .iter()
            .map(|member| names::member_key(&root, member))
            .collect::<Result<Vec<String>, _>>()?;
        let registry = self.registry();
        let rewrite = self.refresh_every().is_some();
        // Each check has the operation timeout to itself: a node's thousands of entries
        // take longer than one operation may, and would never all be rewritten under one.
        // The first failure ends the pass.
        let checks: Vec<_> = keys
            .iter()
            .map(|key| self.bounded("a registry check", registry.hold(key, owner, rewrite)))
            .collect();
        let mut checks = futures_util::stream::iter(checks).buffered(CHECK_CONCURRENCY);
        let mut held = Vec::with_capacity(keys.len());
        while let Some(check) = checks.next().await {
            held.push(check?);
        }
        Ok(held)
    }

    async fn remove(
        &self,
        group: Group<'_>,
        member: &str,
        owner: Option<&str>,
    ) -> Result<bool, BackendError> {
        let key = names::member_key(&names::group_root(group)?, member)?;
        self.bounded("a registry removal", self.registry().remove(&key, owner))
            .await
    }

    async fn contains(&self, group: Group<'_>, member: &str) -> Result<bool, BackendError> {
        let key = names::member_key(&names::group_root(group)?, member)?;
        self.bounded("a registry lookup", self.registry().contains(&key))
            .await
    }

    async fn members(&self, group: Group<'_>) -> Result<BTreeSet<String>, BackendError> {
        let root = names::group_root(group)?;
        // Cluster calls count a channel's members on each call: from the view once it has
        // caught up (started here, so that nodes that make none pay nothing).
        if let Group::Members(_) = group {
            self.start_view();
            if let Some(members) = self.registry().members_in_view(&root) {
                return Ok(members);
            }
        }
        self.bounded("a registry listing", self.registry().members(&root))
            .await
    }

    /// Half the registry bucket's max_age: entries are written once, and rewritten by
    /// [`Presence::held`] before the server deletes them.
    fn refresh_every(&self) -> Option<Duration> {
        let max_age = self.registry_bucket().max_age();
        (!max_age.is_zero()).then(|| max_age / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_name_their_owner() {
        assert_eq!(&entry_value("node 1")[..], b"@node 1");
        let lease = Lease {
            value: Expiring {
                owner: "node 1",
                left_ns: 1_500_000_001,
            },
            disturbed: false,
        };
        assert_eq!(&lease.marked()[..], b"!1501 node 1");
    }
}
