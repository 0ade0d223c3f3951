//! The connections named after their node (`CLIENT SETNAME rodario:{node id}`), so that
//! `CLIENT LIST` on the server shows which process holds which connection.
//!
//! A node tells its backend its id through core's discovery hook
//! ([`Discovery`](rodario_core::observe::Discovery)) when it is built. Redis forgets a
//! connection's name when the connection drops, so the backend names it again each time it
//! is restored. A backend handle's connections are named together: when several nodes
//! share a handle, its connections carry the last one's name. On a Redis Cluster, `CLIENT SETNAME` goes
//! where redis-rs routes it (every node's connection).

use std::sync::Arc;

use async_trait::async_trait;
use rodario_core::backend::Subscription;
use rodario_core::error::BackendError;
use rodario_core::observe::{Directory, Discovery};

use crate::{Handle, Inner};

/// The connection name of node `id`.
fn connection_name(id: &str) -> String {
    format!("rodario:{id}")
}

impl Inner {
    /// Names the connections after their node, if a node said its id; a no-op otherwise.
    pub(crate) async fn name_connection(&self) -> Result<(), BackendError> {
        let name = self
            .client_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let Some(name) = name else {
            return Ok(());
        };
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("SETNAME").arg(name);
        self.query_each("CLIENT SETNAME", &cmd).await
    }
}

#[async_trait]
impl Discovery for Handle {
    async fn serve(&self, directory: Arc<dyn Directory>) -> Result<Subscription, BackendError> {
        *self
            .client_name
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some(connection_name(directory.node_id()));
        if let Err(e) = self.name_connection().await {
            // Named again when the connection is next restored.
            tracing::debug!(error = %e, "could not name the redis connection");
        }
        Ok(Subscription::new(async {}))
    }
}
