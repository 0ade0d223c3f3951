//! Custom handlers for an actor's cluster calls.

use crate::error::RemoteError;

/// A custom handler for an actor's cluster messages (the Python library's
/// `join(channel, func)`): it gets every call on the channel instead of the actor's methods.
#[async_trait::async_trait]
pub trait ClusterHandler: Send + Sync + 'static {
    /// Handles a call of `method` with encoded `args`; returns the encoded reply.
    async fn handle(&self, method: &str, args: &[u8]) -> Result<Vec<u8>, RemoteError>;
}
