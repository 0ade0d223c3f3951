//! The connections a backend handle's three trait objects share: one server's two (one for
//! commands, one for subscriptions), or a Redis Cluster's, and the commands that differ
//! between the two.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// One server's multiplexed connections (reconnected, and resubscribed, by redis-rs's
/// connection manager), or a cluster's: one connection per node, commands routed by slot.
#[derive(Clone)]
pub(crate) enum Connection {
    /// On one server, commands and subscriptions take a connection each, as a plain Redis
    /// client would: the frames a node receives are then read and parsed by one task and
    /// the replies to its commands by another, which on a runtime of several workers run
    /// side by side (64 calls in flight: BENCHMARKS.md).
    Single {
        commands: ConnectionManager,
        subscriptions: ConnectionManager,
    },
    Cluster(ClusterConnection),
}

impl Connection {
    /// Whether this is a cluster's connection (sharded pub/sub, the cluster key layout).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }

    /// The publish command: `SPUBLISH` on a cluster, so that a frame travels to the one
    /// shard owning its channel and the reply counts that shard's subscribers only.
    pub(crate) fn publish_command(&self) -> &'static str {
        match self {
            Connection::Single { .. } => "PUBLISH",
            Connection::Cluster(_) => "SPUBLISH",
        }
    }

    /// The name of [`Connection::subscribe`]'s command, for messages.
    pub(crate) fn subscribe_command(&self) -> &'static str {
        match self {
            Connection::Single { .. } => "SUBSCRIBE",
            Connection::Cluster(_) => "SSUBSCRIBE",
        }
    }

    /// The name of [`Connection::unsubscribe`]'s command, for messages.
    pub(crate) fn unsubscribe_command(&self) -> &'static str {
        match self {
            Connection::Single { .. } => "UNSUBSCRIBE",
            Connection::Cluster(_) => "SUNSUBSCRIBE",
        }
    }

    /// `SUBSCRIBE`, or on a cluster `SSUBSCRIBE` (one channel per command: a sharded
    /// subscription may name the channels of one slot only). Returns once the server
    /// confirmed it.
    pub(crate) async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Connection::Single { subscriptions, .. } => subscriptions.subscribe(channel).await,
            Connection::Cluster(connection) => connection.ssubscribe(channel).await,
        }
    }

    /// `UNSUBSCRIBE`, or on a cluster `SUNSUBSCRIBE`.
    pub(crate) async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Connection::Single { subscriptions, .. } => subscriptions.unsubscribe(channel).await,
            Connection::Cluster(connection) => connection.sunsubscribe(channel).await,
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single { commands, .. } => commands.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single { commands, .. } => {
                commands.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single { commands, .. } => commands.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}
