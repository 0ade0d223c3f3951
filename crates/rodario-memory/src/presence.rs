//! [`Presence`]: one map of members per group, each entry held by its owner until it expires.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use rodario_core::backend::{check_ttl, Group, Presence};
use rodario_core::error::BackendError;
use tokio::time::Instant;

use crate::{expires_after, locked, Entry, MemoryConnection, NAME};

#[async_trait]
impl Presence for MemoryConnection {
    async fn insert(
        &self,
        group: Group<'_>,
        member: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        check_ttl(NAME, ttl)?;
        let now = Instant::now();
        let mut groups = locked(&self.state.groups);
        let entries = groups.entry(self.group_name(group)).or_default();
        if entries.get(member).is_some_and(|e| e.live(now)) {
            return Ok(false);
        }
        entries.insert(
            member.to_owned(),
            Entry {
                holder: owner.to_owned(),
                expires: expires_after(now, ttl),
            },
        );
        Ok(true)
    }

    async fn renew(
        &self,
        group: Group<'_>,
        members: &[&str],
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>, BackendError> {
        check_ttl(NAME, ttl)?;
        let now = Instant::now();
        let mut groups = locked(&self.state.groups);
        let entries = groups.entry(self.group_name(group)).or_default();
        Ok(members
            .iter()
            .map(|member| match entries.get_mut(*member) {
                Some(entry) if entry.holder == owner && entry.live(now) => {
                    entry.expires = expires_after(now, ttl);
                    true
                }
                _ => false,
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
        let mut groups = locked(&self.state.groups);
        let Some(entries) = groups.get_mut(&self.group_name(group)) else {
            return Ok(false);
        };
        let held = entries
            .get(member)
            .is_some_and(|e| e.live(now) && owner.is_none_or(|o| o == e.holder));
        if held {
            entries.remove(member);
        }
        Ok(held)
    }

    async fn contains(&self, group: Group<'_>, member: &str) -> Result<bool, BackendError> {
        let now = Instant::now();
        Ok(locked(&self.state.groups)
            .get(&self.group_name(group))
            .and_then(|entries| entries.get(member))
            .is_some_and(|e| e.live(now)))
    }

    async fn members(&self, group: Group<'_>) -> Result<BTreeSet<String>, BackendError> {
        let now = Instant::now();
        let mut groups = locked(&self.state.groups);
        let Some(entries) = groups.get_mut(&self.group_name(group)) else {
            return Ok(BTreeSet::new());
        };
        entries.retain(|_, e| e.live(now));
        Ok(entries.keys().cloned().collect())
    }
}
