//! [`Presence`]: registry entries in the registry bucket, one key per member.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use rodario_core::backend::{Group, Presence};
use rodario_core::error::BackendError;

use crate::{names, NatsConnection};

/// Renewals sent to the server at once.
const RENEW_CONCURRENCY: usize = 16;

#[async_trait]
impl Presence for NatsConnection {
    async fn insert(
        &self,
        group: Group<'_>,
        member: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let key = names::member_key(&names::group_root(group)?, member)?;
        let bucket = self.registry_bucket();
        bucket.check_ttl(ttl)?;
        self.bounded("a registry insert", bucket.insert(&key, owner, ttl))
            .await
    }

    async fn renew(
        &self,
        group: Group<'_>,
        members: &[&str],
        owner: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>, BackendError> {
        let root = names::group_root(group)?;
        let bucket = self.registry_bucket();
        bucket.check_ttl(ttl)?;
        let keys = members
            .iter()
            .map(|member| names::member_key(&root, member))
            .collect::<Result<Vec<String>, _>>()?;
        let renewals: Vec<_> = keys
            .iter()
            .map(|key| bucket.renew(key, owner, ttl))
            .collect();
        self.bounded("a registry renewal", async {
            futures_util::stream::iter(renewals)
                .buffered(RENEW_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect()
        })
        .await
    }

    async fn remove(
        &self,
        group: Group<'_>,
        member: &str,
        owner: Option<&str>,
    ) -> Result<bool, BackendError> {
        let key = names::member_key(&names::group_root(group)?, member)?;
        self.bounded(
            "a registry removal",
            self.registry_bucket().remove(&key, owner),
        )
        .await
    }

    async fn contains(&self, group: Group<'_>, member: &str) -> Result<bool, BackendError> {
        let key = names::member_key(&names::group_root(group)?, member)?;
        self.bounded("a registry lookup", self.registry_bucket().contains(&key))
            .await
    }

    async fn members(&self, group: Group<'_>) -> Result<BTreeSet<String>, BackendError> {
        let root = names::group_root(group)?;
        self.bounded("a registry listing", self.registry_bucket().list(&root))
            .await
    }
}
