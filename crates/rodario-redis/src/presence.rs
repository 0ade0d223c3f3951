//! [`Presence`] over a SET per group plus one expiring lease key per member.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use rodario_core::backend::{check_ttl, Group, Presence};
use rodario_core::error::BackendError;

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
    async fn insert(
        &self,
        group: Group<'_>,
        member: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        check_ttl(crate::NAME, ttl)?;
        let set = self.set_name(group);
        #[cfg(feature = "python")]
        if let Some(scripts) = self.shared_registry(group) {
            return self
                .shared_insert(scripts, &set, member, owner, ttl_ms(ttl))
                .await;
        }
        let lease = format!("{}{member}", lease_prefix(&set));
        let mut script = self.scripts.insert.key(&set);
        script.key(&lease).arg(member).arg(owner).arg(ttl_ms(ttl));
        let inserted: i64 = self.invoke("registry insert", &script).await?;
        Ok(inserted == 1)
    }

    async fn renew(
        &self,
        group: Group<'_>,
        members: &[&str],
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>, BackendError> {
        check_ttl(crate::NAME, ttl)?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let set = self.set_name(group);
        let prefix = lease_prefix(&set);
        let mut script = self.scripts.renew.key(&set);
        for member in members {
            script.key(format!("{prefix}{member}"));
        }
        script.arg(owner).arg(ttl_ms(ttl));
        for member in members {
            script.arg(*member);
        }
        let renewed: Vec<i64> = self.invoke("registry renew", &script).await?;
        if renewed.len() != members.len() {
            return Err(BackendError::new(
                crate::NAME,
                rodario_core::error::BackendErrorKind::Protocol,
                format!(
                    "registry renew on {}: {} answers for {} members",
                    self.addr,
                    renewed.len(),
                    members.len()
                ),
            ));
        }
        Ok(renewed.into_iter().map(|r| r == 1).collect())
    }

    async fn remove(
        &self,
        group: Group<'_>,
        member: &str,
        owner: Option<&str>,
    ) -> Result<bool, BackendError> {
        let set = self.set_name(group);
        #[cfg(feature = "python")]
        if let Some(scripts) = self.shared_registry(group) {
            return self.shared_remove(scripts, &set, member, owner).await;
        }
        let lease = format!("{}{member}", lease_prefix(&set));
        let mut script = self.scripts.remove.key(&set);
        script
            .key(&lease)
            .arg(member)
            .arg(owner.unwrap_or(""))
            .arg(if owner.is_some() { "1" } else { "0" });
        let removed: i64 = self.invoke("registry remove", &script).await?;
        Ok(removed == 1)
    }

    async fn contains(&self, group: Group<'_>, member: &str) -> Result<bool, BackendError> {
        let set = self.set_name(group);
        #[cfg(feature = "python")]
        if let Some(scripts) = self.shared_registry(group) {
            return self.shared_contains(scripts, &set, member).await;
        }
        let lease = format!("{}{member}", lease_prefix(&set));
        let mut script = self.scripts.contains.key(&set);
        script.key(&lease).arg(member);
        let live: i64 = self.invoke("registry contains", &script).await?;
        Ok(live == 1)
    }

    async fn members(&self, group: Group<'_>) -> Result<BTreeSet<String>, BackendError> {
        let set = self.set_name(group);
        #[cfg(feature = "python")]
        if let Some(scripts) = self.shared_registry(group) {
            let live = self.shared_members(scripts, &set).await?;
            return Ok(live.into_iter().collect());
        }
        let mut script = self.scripts.members.key(&set);
        script.arg(lease_prefix(&set));
        let live: Vec<String> = self.invoke("registry members", &script).await?;
        Ok(live.into_iter().collect())
    }
}
