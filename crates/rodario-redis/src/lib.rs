//! rodario's Redis backend: the reference wire layout, two connections per backend handle
//! (commands, subscriptions), alive across server restarts; on one server or a Redis Cluster.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rodario_core::error::BackendError> {
//! use rodario_redis::{RedisBackend, RedisConfig};
//!
//! // `RODARIO_REDIS_URL`, else redis://127.0.0.1:6379
//! let backend = RedisBackend::connect_default().await?;
//! // A tenant of its own, with an ACL user, on a TLS server (feature `tls`):
//! let tenant = RedisConfig::new("rediss://alice:secret@redis.example:6380")
//!     .prefix("tenant2:")
//!     .connect()
//!     .await?;
//! // A Redis Cluster, through some of its nodes:
//! let cluster = RedisBackend::connect("redis+cluster://10.0.0.1:6379,10.0.0.2:6379").await?;
//! # drop((backend, tenant, cluster));
//! # Ok(())
//! # }
//! ```
//!
//! # Key and channel layout
//!
//! With no prefix the names are exactly the Python library's; with a prefix `P`, every key
//! and every channel this backend creates starts with `P` (`RedisConfig::prefix`), so
//! tenants (and parallel tests) sharing a server do not see each other. (On a Redis
//! Cluster, presence keys start with `{P` instead: see "Redis Cluster" below.)
//!
//! | What | Redis name | Type |
//! |------|------------|------|
//! | actor channel | `P` `actor:{uuid}` | pub/sub channel |
//! | reply channel of a node's proxies | `P` `proxy:{proxyid}` | pub/sub channel |
//! | cluster channel | `P` `cluster:{channel}` | pub/sub channel |
//! | registered actors ([`Group::Actors`]) | `P` `actors` | SET of UUIDs |
//! | an actor's entry | `P` `actors:lease:{uuid}` | string: the owner (a node id), no expiry |
//! | members of a cluster channel ([`Group::Members`]) | `P` `members:{channel}` | SET of members |
//! | a member's entry | `P` `members:{channel}:lease:{member}` | string: the owner, no expiry |
//! | a node's lease | `P` `owner:{node id}` | string: `live` (or `disturbed`), with a `PX` expiry |
//! | a lock | `P` `{context}:{name}` (context `global.lock` by default) | string: the token, with a `PX` expiry |
//!
//! A registry entry is live while it is in the SET, its entry key exists *and* the lease of
//! the node it names exists. A node renews only its own lease (one script every third of
//! its liveness TTL, whatever the number of its actors); leases expire on the server's
//! clock, so a process that dies without cleaning up drops out of
//! [`Presence::members`](rodario_core::backend::Presence::members)/[`Presence::contains`](rodario_core::backend::Presence::contains) once its lease runs out; those calls also
//! remove the dead members from the SET and their entry keys (lazily). Removing another
//! node's entry (`Registry::unregister`) sets its lease to `disturbed`, so that at its next
//! renewal the node checks its entries and registers again what it still serves. An entry
//! key with an expiry of its own was written by an older rodario (a lease per entry) and
//! is live until it expires, so nodes of both versions see each other's actors during an
//! upgrade (older nodes see a newer node's entries as live until they are removed). A
//! member put in the SET by something that writes no entry key (the Python library)
//! counts as not live and may be replaced. Avoid a lock context named `actors`,
//! `members:..` or `owner`: its keys could meet registry keys.
//!
//! # Python processes
//!
//! With feature `python` and [`RedisConfig::python_wire`], a node also speaks the Python
//! library's wire: pickled `(call_id, proxy_id, method, args, kwargs)` calls and
//! `(call_id, value)` replies on the channels above. Python proxies call this node's
//! actors (keyword arguments by parameter name, `_get_methods`, errors as built-in
//! exception instances, one reply per node to a Python cluster call), and this node's
//! proxies and clusters call Python actors: a call it publishes is a pickle whose sixth
//! field is the rodario frame, which rodario nodes read and Python ignores. In the
//! registry, a member of `actors` with no entry key is a Python actor, live until it
//! removes itself; rodario's own entries are also listed in the SET `actors:rodario`, so
//! that one whose node's lease ran out is still told apart and removed. Pickles are checked opcode by
//! opcode before they are decoded (no globals, calls, object building, shared containers
//! or nesting deeper than 64), so a hostile one is dropped with a warning and never runs
//! code. rodario's README ("Talking to Python processes") has the Python side and a
//! table of how values cross.
//!
//! # Connection
//!
//! Each [`Backend`] from [`RedisBackend::connect`] or [`RedisConfig::connect`] owns one
//! RESP3 connection, multiplexed: commands and every subscription of that handle share it
//! (Redis counts one receiver per connection in its `PUBLISH` reply, whatever the number of
//! local subscriptions). Frames are read from the socket continuously and handed to each
//! subscription's [`FrameSink`], which never waits (it queues with a bound or drops), so the
//! server's output buffer for this client never grows until Redis disconnects it.
//!
//! When the connection drops, the backend reconnects in the background, with an
//! exponential backoff capped at [`RedisConfig::reconnect_backoff`]'s maximum, forever, and
//! resubscribes every channel: subscription streams stay open across a server restart
//! (frames published while the server was away are lost: Redis pub/sub is at most once).
//! Meanwhile each command fails with a [`BackendErrorKind::Connection`] error after
//! [`RedisConfig::command_timeout`] instead of waiting for the server, and
//! [`Transport::connection_state`] reports the connection
//! [`ConnectionState::Disconnected`] at once, then [`ConnectionState::Connected`] when
//! commands work again (subscriptions are restored by then).
//!
//! Registry and lock updates are Lua scripts, so they are atomic; listing members derives
//! lease keys inside a script, which a cluster allows because they share the SET's slot
//! (below).
//!
//! On one server a backend handle keeps two RESP3 connections: one for its commands, one
//! for all its subscriptions (the frames it receives then never queue behind the replies to
//! its commands, and the two are read side by side). Either one lost alone is reported and
//! restored as above (`tests/node.rs`, `losing_either_connection_alone_is_recovered`).
//!
//! A node names both connections after itself (`CLIENT SETNAME rodario:{node id}`, again
//! after each reconnect), so that `CLIENT LIST` on the server shows which process holds
//! which connection.
//!
//! # Redis Cluster
//!
//! `redis+cluster://[user[:password]@]host:port,host:port,..` (`rediss+cluster://` for TLS,
//! feature `tls`) or [`RedisConfig::cluster`] connects to a Redis Cluster through those
//! seed nodes (one reachable seed is enough) with redis-rs's async cluster client: a RESP3
//! connection per cluster node, commands routed by slot, one backend handle per rodario
//! node as on one server. Redis 7 or later (sharded pub/sub).
//!
//! **Channels are sharded.** Actor, reply and cluster channels keep their names but use
//! `SSUBSCRIBE`/`SPUBLISH` (one channel per `SSUBSCRIBE`: a sharded subscription may name
//! the channels of one slot only), so a frame travels to the one shard owning its channel
//! instead of every node of the cluster. Subscriptions are made on the slot's primary,
//! where `SPUBLISH` is sent, so its reply, the receiver count, is exact: the rodario nodes
//! listening. While a shard fails over, a count covers only the subscribers that have
//! subscribed again on the node answering (the promoted replica): a call can see 0
//! receivers, and fail with `InvalidActor`, until the actor's node has restored its
//! subscriptions, within a fraction of a second of the promotion. A subscription made while
//! the connection to the slot's primary was being re-established is made on a replica of
//! the shard (redis-rs falls back to one): the replica still receives every frame, but a
//! `SPUBLISH` answered by the primary does not count it, and should redis-rs also
//! resubscribe the channel on the primary once reconnected (it does when the node's
//! channels share one slot), frames of that channel arrive twice until the channel is next
//! unsubscribed. A failover (the primary gone for good) does not lead there; a primary
//! whose connection drops while it stays up can.
//!
//! **Keys.** A script may touch the keys of one slot only, so every presence key (the
//! [`Group::Actors`] and [`Group::Members`] SETs, their entry keys and the nodes' leases) starts with the hash
//! tag `{` `P` `rodario}` instead of the prefix `P` (a tag must not be empty, hence
//! `rodario`): all of them hash to one slot, every registry script runs on one shard, and
//! [`Presence::members`](rodario_core::backend::Presence::members) of [`Group::Actors`] is
//! one complete `SMEMBERS`. Lock keys keep their single-node names, so each hashes on its
//! own and locks spread over the shards. The prefix of a cluster backend may not contain
//! `{` or `}` (connecting fails with [`BackendErrorKind::InvalidInput`]). A key that a
//! registry script must touch beside the registry (a node's own lease, say) belongs under
//! the same tag. All presence traffic (registrations, renewals, listings) goes to that one
//! slot's primary.
//!
//! | What | One server | Redis Cluster |
//! |------|------------|---------------|
//! | actor channel | `P` `actor:{uuid}` | `P` `actor:{uuid}`, sharded |
//! | reply channel | `P` `proxy:{proxyid}` | `P` `proxy:{proxyid}`, sharded |
//! | cluster channel | `P` `cluster:{channel}` | `P` `cluster:{channel}`, sharded |
//! | registered actors | `P` `actors` | `{P rodario}` `actors` |
//! | an actor's entry | `P` `actors:lease:{uuid}` | `{P rodario}` `actors:lease:{uuid}` |
//! | members of a cluster channel | `P` `members:{channel}` | `{P rodario}` `members:{channel}` |
//! | a member's entry | `P` `members:{channel}:lease:{member}` | `{P rodario}` `members:{channel}:lease:{member}` |
//! | a node's lease | `P` `owner:{node id}` | `{P rodario}` `owner:{node id}` |
//! | a lock | `P` `{context}:{name}` | `P` `{context}:{name}` (its own slot) |
//!
//! Braces in the first column's names stand for values; in `{P rodario}` they are literal
//! (the hash tag), so with no prefix the registry is `{rodario}actors`, with the prefix
//! `t2:` it is `{t2:rodario}actors`.
//!
//! **Failover and moved slots.** When a cluster node's connection drops (its primary died,
//! say), the backend reports [`ConnectionState::Disconnected`], subscribes every channel
//! anew, one `SSUBSCRIBE` each, routed to the slot's current owner, checks that the
//! registry's primary runs scripts again, then reports [`ConnectionState::Connected`], on
//! which rodario re-registers what the cluster lost. redis-rs resubscribes on its own too,
//! but with one `SSUBSCRIBE` per node naming all its channels, which the server refuses
//! when they span slots (`CROSSSLOT`). When the server unsubscribes a channel itself
//! because its slot moved to another node (a `SUNSUBSCRIBE` push, which redis-rs forwards
//! without resubscribing), the backend subscribes it again at once, on the slot's new
//! owner. Until a shard has a primary again, the cluster refuses commands on every shard
//! (`cluster-require-full-coverage`, on by default) and calls fail fast with a connection
//! error; `tests/cluster_failover.rs` measures the whole (RELIABILITY.md).
//!
//! # Source files
//!
//! The files of every rodario backend: `config.rs` (settings and connecting, on one server
//! or a cluster),
//! `transport.rs` ([`Transport`]), `presence.rs` ([`Presence`]), `locks.rs`
//! ([`LockStore`]), `names.rs` (the names above), `error.rs` (redis-rs errors as
//! [`BackendError`]s); `lib.rs` holds the connection handle the three share. Three more are
//! Redis's own: `connection.rs` (one server's connection or a cluster's, and the commands
//! that differ), `pubsub.rs` routes the frames the connection receives to local
//! subscriptions (and restores a cluster's), and `scripts.rs` holds the Lua scripts.
//!
//! [`Backend`]: rodario_core::backend::Backend
//! [`FrameSink`]: rodario_core::backend::FrameSink
//! [`Group::Actors`]: rodario_core::backend::Group::Actors
//! [`Group::Members`]: rodario_core::backend::Group::Members
//! [`Transport`]: rodario_core::backend::Transport
//! [`Transport::connection_state`]: rodario_core::backend::Transport::connection_state
//! [`Presence`]: rodario_core::backend::Presence
//! [`LockStore`]: rodario_core::backend::LockStore
//! [`ConnectionState::Connected`]: rodario_core::backend::ConnectionState::Connected
//! [`ConnectionState::Disconnected`]: rodario_core::backend::ConnectionState::Disconnected
//! [`BackendErrorKind::Connection`]: rodario_core::error::BackendErrorKind::Connection
//! [`BackendErrorKind::InvalidInput`]: rodario_core::error::BackendErrorKind::InvalidInput

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client_name;
mod config;
mod connection;
mod error;
mod locks;
mod names;
mod presence;
mod pubsub;
#[cfg(feature = "python")]
mod python;
mod scripts;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;
mod transport;

use std::hash::RandomState;
use std::sync::Arc;
use std::time::Duration;

use redis::FromRedisValue;
use rodario_core::error::BackendError;

pub use config::{RedisBackend, RedisConfig, DEFAULT_URL, URL_ENV};

use crate::connection::Connection;
use crate::pubsub::Dispatch;
use crate::scripts::Scripts;

/// The backend's name in [`Backend::name`](rodario_core::backend::Backend::name) and in
/// its errors.
pub const NAME: &str = "redis";

/// Longest lease or registry TTL sent to the server (longer ones are capped): about 2,000
/// years, well inside what Redis accepts for `PX`.
const MAX_TTL_MS: u128 = 1 << 46;

/// A backend handle: its connections, shared by the three trait objects.
pub(crate) struct Inner {
    connection: Connection,
    /// `host:port` of the server (of the seeds, on a cluster), for messages (never the
    /// password).
    pub(crate) addr: String,
    prefix: String,
    /// The start of every presence key ([`names::presence_root`]).
    presence_root: String,
    timeout: Duration,
    pub(crate) dispatch: Arc<Dispatch>,
    channel_locks: Vec<tokio::sync::Mutex<()>>,
    hasher: RandomState,
    scripts: Scripts,
    /// Set with [`RedisConfig::python_wire`].
    #[cfg(feature = "python")]
    python: Option<Arc<python::PythonWire>>,
    /// The connection's name, once a node said its id ([`client_name`]).
    client_name: std::sync::Mutex<Option<String>>,
}

impl Inner {
    /// Runs `cmd` with the command timeout.
    async fn query<T: FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, BackendError> {
        let mut connection = self.connection.clone();
        self.bounded(what, cmd.query_async(&mut connection)).await
    }

    /// Runs `script` with the command timeout.
    async fn invoke<T: FromRedisValue>(
        &self,
        what: &str,
        script: &redis::ScriptInvocation<'_>,
    ) -> Result<T, BackendError> {
        let mut connection = self.connection.clone();
        self.bounded(what, script.invoke_async(&mut connection))
            .await
    }

    async fn bounded<T>(
        &self,
        what: &str,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BackendError> {
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(error::from_redis(what, &self.addr, e)),
            Err(_) => Err(error::timed_out(what, &self.addr, self.timeout)),
        }
    }

    /// Runs `cmd` on each of the handle's connections, with the command timeout: for what
    /// every connection needs of its own (a `PING` to see it back after a reconnect, its
    /// name). A cluster's one handle routes such commands to every node itself.
    async fn query_each(&self, what: &str, cmd: &redis::Cmd) -> Result<(), BackendError> {
        match &self.connection {
            Connection::Single {
                commands,
                subscriptions,
            } => {
                for mut connection in [commands.clone(), subscriptions.clone()] {
                    self.bounded(what, cmd.query_async::<()>(&mut connection))
                        .await?;
                }
                Ok(())
            }
            Connection::Cluster(_) => self.query(what, cmd).await,
        }
    }

    /// `PING` on each connection, with the command timeout.
    pub(crate) async fn ping(&self) -> Result<(), BackendError> {
        self.query_each("PING", &redis::cmd("PING")).await
    }
}

/// `ttl` in whole milliseconds, at least 1 (Redis refuses `PX 0`) and at most [`MAX_TTL_MS`].
fn ttl_ms(ttl: Duration) -> u64 {
    ttl.as_millis().clamp(1, MAX_TTL_MS) as u64
}

/// What the three trait objects of a [`Backend`](rodario_core::backend::Backend) point to.
pub(crate) struct Handle(pub(crate) Arc<Inner>);

impl std::ops::Deref for Handle {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
