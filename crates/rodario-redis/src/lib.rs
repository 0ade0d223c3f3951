//! rodario's Redis backend: the reference wire layout, one connection per backend handle,
//! alive across server restarts.
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
//! # drop((backend, tenant));
//! # Ok(())
//! # }
//! ```
//!
//! # Key and channel layout
//!
//! With no prefix the names are exactly the Python library's; with a prefix `P`, every key
//! and every channel this backend creates starts with `P` (`RedisConfig::prefix`), so
//! tenants (and parallel tests) sharing a server do not see each other.
//!
//! | What | Redis name | Type |
//! |------|------------|------|
//! | actor channel | `P` `actor:{uuid}` | pub/sub channel |
//! | reply channel of a node's proxies | `P` `proxy:{proxyid}` | pub/sub channel |
//! | cluster channel | `P` `cluster:{channel}` | pub/sub channel |
//! | registered actors ([`Group::Actors`]) | `P` `actors` | SET of UUIDs |
//! | an actor's lease | `P` `actors:lease:{uuid}` | string: the owner, with a `PX` expiry |
//! | members of a cluster channel ([`Group::Members`]) | `P` `members:{channel}` | SET of members |
//! | a member's lease | `P` `members:{channel}:lease:{member}` | string: the owner, with a `PX` expiry |
//! | a lock | `P` `{context}:{name}` (context `global.lock` by default) | string: the token, with a `PX` expiry |
//!
//! A registry entry is live while it is in the SET *and* its lease key exists. Leases
//! expire on the server's clock, so a process that dies without cleaning up drops out of
//! [`Presence::members`](rodario_core::backend::Presence::members)/[`Presence::contains`](rodario_core::backend::Presence::contains) once its leases run out; those calls also
//! remove the dead members from the SET (lazily). A member put in the SET by something
//! that writes no lease (the Python library) counts as not live and may be replaced.
//! Avoid a lock context named `actors` or `members:..`: its keys could meet lease keys.
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
//! lease keys inside a script, which needs a standalone server (not Redis Cluster).

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod locks;
mod pubsub;
mod registry;
mod scripts;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, FromRedisValue, IntoConnectionInfo, ProtocolVersion};
use rodario_core::backend::{
    Backend, Channel, ConnectionState, Delivery, FrameSink, Group, LockKey, Subscription, Transport,
};
use rodario_core::error::{BackendError, BackendErrorKind};
use tokio::sync::{mpsc, watch};

use crate::pubsub::{CloseGuard, Dispatch};
use crate::scripts::Scripts;

/// The backend's name in [`Backend::name`] and in its errors.
pub const NAME: &str = "redis";

/// The environment variable holding the default server URL.
pub const URL_ENV: &str = "RODARIO_REDIS_URL";

/// The server URL used when [`URL_ENV`] is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Longest lease or registry TTL sent to the server (longer ones are capped): about 2,000
/// years, well inside what Redis accepts for `PX`.
const MAX_TTL_MS: u128 = 1 << 46;

/// Per-channel locks that order `SUBSCRIBE`/`UNSUBSCRIBE` of one channel.
const CHANNEL_LOCKS: usize = 64;

/// Connects to Redis; the entry point of this crate.
///
/// Each call opens a new connection, as another process would: give each node its own
/// [`Backend`] (receiver counts are per connection), and share one handle (it is `Clone`)
/// between everything a node does.
#[derive(Debug, Clone, Copy)]
pub struct RedisBackend;

impl RedisBackend {
    /// Connects to `url` with the default settings and no prefix.
    ///
    /// `url` is `redis://[user[:password]@]host[:port][/db]`, or `rediss://..` for TLS
    /// (feature `tls`). Fails at once with [`BackendErrorKind::Connection`] when the server
    /// cannot be reached, [`BackendErrorKind::Auth`] when it refuses the credentials, and
    /// [`BackendErrorKind::InvalidInput`] when the URL is not valid.
    pub async fn connect(url: &str) -> Result<Backend, BackendError> {
        RedisConfig::new(url).connect().await
    }

    /// Connects to [`RedisConfig::from_env`]'s URL: `RODARIO_REDIS_URL`, else
    /// `redis://127.0.0.1:6379`.
    pub async fn connect_default() -> Result<Backend, BackendError> {
        RedisConfig::from_env().connect().await
    }
}

/// Settings for a Redis backend; build one, adjust it, then [`RedisConfig::connect`].
#[derive(Clone)]
pub struct RedisConfig {
    url: String,
    prefix: String,
    command_timeout: Duration,
    connect_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

impl Default for RedisConfig {
    /// Same as [`RedisConfig::from_env`].
    fn default() -> Self {
        Self::from_env()
    }
}

impl RedisConfig {
    /// Settings for the server at `url` (`redis://[user[:password]@]host[:port][/db]`, or
    /// `rediss://` for TLS), with no prefix and the default timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: String::new(),
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(250),
        }
    }

    /// Settings for the URL in `RODARIO_REDIS_URL`, or `redis://127.0.0.1:6379` when it is
    /// not set (or empty).
    pub fn from_env() -> Self {
        match std::env::var(URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Self::new(url.trim()),
            _ => Self::new(DEFAULT_URL),
        }
    }

    /// Starts every key and channel name with `prefix` (default: none, the Python
    /// library's names). Give it a separator of its own, such as `"tenant2:"`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one command (publish, subscribe, registry or lock operation) may take,
    /// including waiting for a reconnection, before it fails with a
    /// [`BackendErrorKind::Connection`] error. Default 5 s.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long one attempt to open the connection may take. Default 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The delay before the first reconnection attempt and the most the backoff grows to
    /// between attempts (each delay gets up to as much again of random jitter). Attempts
    /// never stop while the backend is in use. Default 100 ms and 250 ms: a server that
    /// comes back is noticed within about half a second (two of the longest delays), and
    /// an attempt against a server that is away costs one refused connection.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min.max(Duration::from_millis(1));
        self.reconnect_max = max.max(self.reconnect_min);
        self
    }

    /// The server URL (it may carry a password: do not log it; `Debug` hides it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key and channel prefix.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// Opens the connection and checks it (and the credentials) with a `PING`.
    ///
    /// Fails with [`BackendErrorKind::Connection`] when the server cannot be reached in
    /// [`RedisConfig::connect_timeout`], [`BackendErrorKind::Auth`] when it refuses the
    /// user or password, and [`BackendErrorKind::InvalidInput`] for a URL it cannot use.
    /// Must run inside a tokio runtime.
    pub async fn connect(&self) -> Result<Backend, BackendError> {
        let handle = Arc::new(Handle(Inner::connect(self).await?));
        Ok(Backend::new(NAME, handle.clone(), handle.clone(), handle))
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .finish()
    }
}

/// `url` with the password (if any) replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// A backend handle: one connection, shared by the three trait objects.
pub(crate) struct Inner {
    connection: ConnectionManager,
    /// `host:port` of the server, for messages (never the password).
    pub(crate) addr: String,
    prefix: String,
    timeout: Duration,
    pub(crate) dispatch: Arc<Dispatch>,
    channel_locks: Vec<tokio::sync::Mutex<()>>,
    hasher: RandomState,
    scripts: Scripts,
}

impl Inner {
    async fn connect(config: &RedisConfig) -> Result<Arc<Inner>, BackendError> {
        let redacted = redact(&config.url);
        if cfg!(not(feature = "tls")) && config.url.starts_with("rediss://") {
            return Err(BackendError::new(
                NAME,
                BackendErrorKind::InvalidInput,
                format!("{redacted:?} asks for TLS, which needs rodario-redis's `tls` feature"),
            ));
        }
        let info = config.url.as_str().into_connection_info().map_err(|e| {
            BackendError::new(
                NAME,
                BackendErrorKind::InvalidInput,
                format!("invalid Redis URL {redacted:?}: {e}"),
            )
            .with_source(e)
        })?;
        let addr = info.addr().to_string();
        #[cfg(feature = "tls")]
        if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
            // rustls needs a process-wide crypto provider: install ring's, unless the
            // program installed one already (then that one is used).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let client = Client::open(info).map_err(|e| error::from_redis("connect", &addr, e))?;

        // One checked attempt first, so that a refused connection or bad credentials are
        // reported as such instead of being retried forever by the connection manager.
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let probe = async {
            let mut probe = client
                .get_multiplexed_async_connection_with_config(&probe_config)
                .await?;
            redis::cmd("PING").query_async::<()>(&mut probe).await
        };
        match tokio::time::timeout(config.connect_timeout + config.command_timeout, probe).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(error::from_redis("connect", &addr, e)),
            Err(_) => {
                return Err(error::timed_out(
                    "connect",
                    &addr,
                    config.connect_timeout + config.command_timeout,
                ))
            }
        }

        let (reaper_tx, reaper_rx) = mpsc::unbounded_channel();
        let dispatch = Arc::new(Dispatch::new(reaper_tx, addr.clone()));
        let on_push = {
            let dispatch = dispatch.clone();
            move |push: redis::PushInfo| -> Result<(), std::convert::Infallible> {
                dispatch.on_push(push);
                Ok(())
            }
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_min_delay(config.reconnect_min)
            .set_max_delay(config.reconnect_max)
            .set_number_of_retries(usize::MAX)
            .set_push_sender(on_push)
            .set_automatic_resubscription();
        let connection = match tokio::time::timeout(
            config.connect_timeout + config.command_timeout,
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(error::from_redis("connect", &addr, e)),
            Err(_) => {
                return Err(error::timed_out(
                    "connect",
                    &addr,
                    config.connect_timeout + config.command_timeout,
                ))
            }
        };
        let inner = Arc::new(Inner {
            connection,
            addr,
            prefix: config.prefix.clone(),
            timeout: config.command_timeout,
            dispatch,
            channel_locks: (0..CHANNEL_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: RandomState::new(),
            scripts: Scripts::new(),
        });
        tokio::spawn(pubsub::reaper(Arc::downgrade(&inner), reaper_rx));
        tracing::debug!(addr = %inner.addr, prefix = %inner.prefix, "connected to redis");
        Ok(inner)
    }

    fn channel_name(&self, channel: &Channel) -> String {
        format!("{}{}", self.prefix, channel.default_name())
    }

    fn set_name(&self, group: Group<'_>) -> String {
        match group {
            Group::Actors => format!("{}actors", self.prefix),
            Group::Members(channel) => format!("{}members:{channel}", self.prefix),
            // `Group` is non-exhaustive: a future group gets a name of its own.
            other => format!("{}{other:?}", self.prefix),
        }
    }

    fn lock_name(&self, key: &LockKey) -> String {
        format!("{}{}", self.prefix, key.default_name())
    }

    fn channel_lock(&self, name: &str) -> &tokio::sync::Mutex<()> {
        let index = self.hasher.hash_one(name) as usize % self.channel_locks.len();
        &self.channel_locks[index]
    }

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

    /// `PING`, with the command timeout.
    pub(crate) async fn ping(&self) -> Result<(), BackendError> {
        self.query("PING", &redis::cmd("PING")).await
    }

    /// Removes local subscription `id` (or only dropped ones) from `channel` and, when
    /// nobody here listens any more, unsubscribes at the server. With `stray`, unsubscribes
    /// even when the channel is not known here (the server delivered it anyway).
    pub(crate) async fn unsubscribe_local(&self, channel: &str, id: Option<u64>, stray: bool) {
        let _ordered = self.channel_lock(channel).lock().await;
        if !self.dispatch.remove(channel, id, stray) {
            return;
        }
        let mut connection = self.connection.clone();
        let result = self
            .bounded("UNSUBSCRIBE", async {
                connection.unsubscribe(channel).await
            })
            .await;
        self.dispatch.forget(channel);
        if let Err(e) = result {
            // The connection is down; on reconnect the channel is resubscribed, its first
            // frame is seen as stray and it is unsubscribed then.
            tracing::warn!(%channel, error = %e, "could not unsubscribe from a redis channel");
        }
    }
}

/// Removes a local subscription whose `SUBSCRIBE` did not complete, unless disarmed by
/// clearing `id`. A `SUBSCRIBE` that reached the server anyway makes its frames stray ones,
/// which the reaper unsubscribes.
struct UndoAdd<'a> {
    dispatch: &'a pubsub::Dispatch,
    channel: &'a str,
    id: Option<u64>,
}

impl Drop for UndoAdd<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.dispatch.remove(self.channel, Some(id), false);
            self.dispatch.forget(self.channel);
        }
    }
}

/// `ttl` in whole milliseconds, at least 1 (Redis refuses `PX 0`) and at most [`MAX_TTL_MS`].
fn ttl_ms(ttl: Duration) -> u64 {
    ttl.as_millis().clamp(1, MAX_TTL_MS) as u64
}

/// What the three trait objects of a [`Backend`] point to.
pub(crate) struct Handle(pub(crate) Arc<Inner>);

impl std::ops::Deref for Handle {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[async_trait]
impl Transport for Handle {
    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<Delivery, BackendError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.channel_name(channel)).arg(frame.as_ref());
        let receivers: u64 = self.query("PUBLISH", &cmd).await?;
        Ok(Delivery::Exact(
            usize::try_from(receivers).unwrap_or(usize::MAX),
        ))
    }

    async fn subscribe(
        &self,
        channel: &Channel,
        sink: Arc<dyn FrameSink>,
    ) -> Result<Subscription, BackendError> {
        let name = self.channel_name(channel);
        let (id, open, first) = {
            let _ordered = self.channel_lock(&name).lock().await;
            let (id, open, first) = self.dispatch.add(&name, sink);
            if first {
                // Undoes the local subscription if the SUBSCRIBE fails or this future is
                // dropped while waiting for it (a caller's deadline passed): otherwise the
                // channel would look subscribed here and the next subscriber would skip
                // the SUBSCRIBE. Dropped before `_ordered`, so under the channel's lock.
                let mut undo = UndoAdd {
                    dispatch: &self.dispatch,
                    channel: &name,
                    id: Some(id),
                };
                let mut connection = self.connection.clone();
                // Returns once the server acknowledged the SUBSCRIBE: frames published from
                // now on are delivered.
                self.bounded("SUBSCRIBE", async { connection.subscribe(&name).await })
                    .await?;
                undo.id = None;
            }
            (id, open, first)
        };
        tracing::debug!(channel = %name, first, "subscribed");
        let inner = self.0.clone();
        let mut guard = CloseGuard {
            dispatch: self.dispatch.clone(),
            channel: name,
            open,
            closed: false,
        };
        Ok(Subscription::new(async move {
            let channel = guard.channel.clone();
            inner.unsubscribe_local(&channel, Some(id), false).await;
            guard.disarm();
        }))
    }

    fn counts_receivers(&self) -> bool {
        true
    }

    fn connection_state(&self) -> Option<watch::Receiver<ConnectionState>> {
        Some(self.dispatch.connection_state())
    }
}
