//! [`Presence`] over a SET per group, an entry key per member naming its owner, and one
//! expiring lease key per owner (the scripts in scripts.rs).

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use rodario_core::backend::{check_ttl, Group, LeaseRenewal, Presence};
use rodario_core::error::{BackendError, BackendErrorKind};

use crate::names::lease_prefix;
use crate::{ttl_ms, Handle};

#[cfg(feature = "python")]
impl Handle {
    /// The scripts of a registry Python actors share: the actors' group on a Python wire.
    fn shared_registry(&self, group: Group<'_>) -> Option<&crate::python::RegistryScripts> {
        match group {
            Group::Actors => self.python.as_ref().map(|wire| &wire.registry),
            _ => None,
        }
    }
}

#[async_trait]
impl Presence for Handle {
    async fn keep_alive(&self, owner: &str, ttl: Duration) -> Result<LeaseRenewal, BackendError> {
        check_ttl(crate::NAME, ttl)?;
        let mut script = self.scripts.keep_alive.key(self.owner_lease(owner));
        script.arg(ttl_ms(ttl));
        let found: String = self.invoke("owner lease renewal", &script).await?;
        match found.as_str() {
            "live" => Ok(LeaseRenewal::Held),
            "disturbed" => Ok(LeaseRenewal::Disturbed),
            "lost" => Ok(LeaseRenewal::Lost),
            other => Err(BackendError::new(
                crate::NAME,
                BackendErrorKind::Protocol,
                format!(
                    "owner lease renewal on {}: the lease held {other:?}, which rodario never \
                     writes (is another program using the key {}?)",
                    self.addr,
                    self.owner_lease(owner)
                ),
            )),
        }
    }

    async fn release(&self, owner: &str) -> Result<bool, BackendError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.owner_lease(owner));
        let deleted: i64 = self.query("owner lease release", &cmd).await?;
        Ok(deleted == 1)
    }

    async fn insert(
        &self,
        group: Group<'_>,
        member: &str,
        owner: &str,
    ) -> Result<bool, BackendError> {
        let set = self.set_name(group);
        let owners = self.owner_lease_prefix();
        #[cfg(feature = "python")]
        if let Some(scripts) = self.shared_registry(group) {
            return self
                .shared_insert(scripts, &set, member, owner, &owners)
                .await;
        }
        let entry = format!("{}{member}", lease_prefix(&set));
        let mut script = self.scripts.insert.key(&set);
        script.key(&entry).arg(member).arg(owner).arg(owners);
        let inserted: i64 = self.invoke("registry insert", &script).await?;
        Ok(inserted == 1)
    }

    async fn held(
        &self,
        group: Group<'_>,
        members: &[&str],
        owner: &str,
    ) -> Result<Vec<bool>, BackendError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let set = self.set_name(group);
        let prefix = lease_prefix(&set);
        let mut script = self.scripts.held.key(&set);
        for member in members {
            script.key(format!("{prefix}{member}"));
        }
        script.arg(owner);
        for member in members {
            script.arg(*member);
        }
        let held: Vec<i64> = self.invoke("registry check", &script).await?;
        if held.len() != members.len() {
            return Err(BackendError::new(
                crate::NAME,
                BackendErrorKind::Protocol,
                format!(
                    "registry check on {}: {} answers for {} members",
                    self.addr,
                    held.len(),
                    members.len()
                ),
            ));
        }
        Ok(held.into_iter().map(|h| h == 1).collect())
    }

    async fn remove(
        &self,
        group: Group<'_>,
        member: &str,
        owner: Option<&str>,
    ) -> Result<bool, BackendError> {
        let set = self.set_name(group);
        let owners = self.owner_lease_prefix();
        #[cfg(feature = "python")]
        if let Some(scripts) = self.shared_registry(group) {
            return self
                .shared_remove(scripts, &set, member, owner, &owners)
                .await;
        }
        let entry = format!("{}{member}", lease_prefix(&set));
        let mut script = self.scripts.remove.key(&set);
        script
            .key(&entry)
            .arg(member)
            .arg(owner.unwrap_or(""))
            .arg(if owner.is_some() { "1" } else { "0" })
            .arg(owners);
        let removed: i64 = self.invoke("registry remove", &script).await?;
        Ok(removed == 1)
    }

    async fn contains(&self, group: Group<'_>, member: &str) -> Result<bool, BackendError> {
        let set = self.set_name(group);
        let owners = self.owner_lease_prefix();
        #[cfg(feature = "python")]
        if let Some(scripts) = self.shared_registry(group) {
            return self.shared_contains(scripts, &set, member, &owners).await;
        }
        let entry = format!("{}{member}", lease_prefix(&set));
        let mut script = self.scripts.contains.key(&set);
        script.key(&entry).arg(member).arg(owners);
        let live: i64 = self.invoke("registry contains", &script).await?;
        Ok(live == 1)
    }

    async fn members(&self, group: Group<'_>) -> Result<BTreeSet<String>, BackendError> {
        let set = self.set_name(group);
        let owners = self.owner_lease_prefix();
        #[cfg(feature = "python")]
        if let Some(scripts) = self.shared_registry(group) {
            let live = self.shared_members(scripts, &set, &owners).await?;
            return Ok(live.into_iter().collect());
        }
        let mut script = self.scripts.members.key(&set);
        script.arg(lease_prefix(&set)).arg(owners);
        let live: Vec<String> = self.invoke("registry members", &script).await?;
        Ok(live.into_iter().collect())
    }
}
