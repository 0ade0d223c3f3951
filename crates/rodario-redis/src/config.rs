//! Settings and connecting: [`RedisConfig`], [`RedisBackend`], and opening the connection
//! that a backend's three trait objects share.

use std::fmt;
use std::hash::RandomState;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion};
use rodario_core::backend::Backend;
use rodario_core::error::{BackendError, BackendErrorKind};
use tokio::sync::mpsc;

use crate::pubsub::{self, Dispatch};
use crate::scripts::Scripts;
use crate::{error, Handle, Inner, NAME};

/// The environment variable holding the default server URL.
pub const URL_ENV: &str = "RODARIO_REDIS_URL";

/// The server URL used when [`URL_ENV`] is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Per-channel locks that order `SUBSCRIBE`/`UNSUBSCRIBE` of one channel.
const CHANNEL_LOCKS: usize = 64;

/// The deadline a call from a Python proxy gets (it sends none).
#[cfg(feature = "python")]
const DEFAULT_PYTHON_CALL_DEADLINE: Duration = Duration::from_secs(60);

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
    python: Option<Duration>,
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
            python: None,
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

    /// Speaks the Python library's wire as well as rodario's: pickled calls from Python
    /// proxies are served, calls to actors and clusters go out in a form Python actors
    /// read (rodario nodes read the rodario frame inside), and registry entries without a
    /// lease (Python actors) count as live. The Python library uses unprefixed names: to
    /// reach Python processes, set no [`prefix`](Self::prefix) (with one, only rodario nodes
    /// of the same prefix are reached, through pickled frames). What crosses and what does
    /// not: the crate documentation's "Python processes" section.
    #[cfg(feature = "python")]
    #[cfg_attr(docsrs, doc(cfg(feature = "python")))]
    pub fn python_wire(mut self) -> Self {
        self.python = Some(self.python.unwrap_or(DEFAULT_PYTHON_CALL_DEADLINE));
        self
    }

    /// The deadline given to a call from a Python proxy, which sends none (default 60 s):
    /// the actor skips the call once it has passed. Implies [`python_wire`](Self::python_wire).
    #[cfg(feature = "python")]
    #[cfg_attr(docsrs, doc(cfg(feature = "python")))]
    pub fn python_call_deadline(mut self, deadline: Duration) -> Self {
        self.python = Some(deadline.max(Duration::from_millis(1)));
        self
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
            .field("python_call_deadline", &self.python)
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
        connecting(config, &addr, probe).await?;

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
        let manager = ConnectionManager::new_with_config(client, manager_config);
        let connection = connecting(config, &addr, manager).await?;
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
            #[cfg(feature = "python")]
            python: config
                .python
                .map(|deadline| Arc::new(crate::python::PythonWire::new(deadline))),
        });
        tokio::spawn(pubsub::reaper(Arc::downgrade(&inner), reaper_rx));
        tracing::debug!(addr = %inner.addr, prefix = %inner.prefix, "connected to redis");
        Ok(inner)
    }
}

/// Runs one step of connecting to `addr` for at most the connect and command timeouts.
async fn connecting<T>(
    config: &RedisConfig,
    addr: &str,
    step: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, BackendError> {
    let limit = config.connect_timeout + config.command_timeout;
    match tokio::time::timeout(limit, step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error::from_redis("connect", addr, e)),
        Err(_) => Err(error::timed_out("connect", addr, limit)),
    }
}
