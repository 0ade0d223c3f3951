//! Settings and connecting: [`RedisConfig`], [`RedisBackend`], and opening the connection
//! that a backend's three trait objects share.

use std::fmt;
use std::hash::RandomState;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo, ProtocolVersion};
use rodario_core::backend::Backend;
use rodario_core::error::{BackendError, BackendErrorKind};
use tokio::sync::mpsc;

use crate::connection::Connection;
use crate::names::presence_root;
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

/// The URL scheme suffix naming a Redis Cluster: `redis+cluster://`, `rediss+cluster://`.
const CLUSTER_SCHEME: &str = "+cluster";

/// Most retries of one command redis-rs makes on a cluster (moved slots, a node being
/// replaced); the command timeout bounds them anyway. Kept small enough for redis-rs's
/// exponential wait formula (`2^retry`) not to overflow.
const MAX_CLUSTER_RETRIES: u128 = 50;

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
    /// (feature `tls`); `redis+cluster://[user[:password]@]host:port,host:port,..` (or
    /// `rediss+cluster://`) connects to a Redis Cluster through those seed nodes (see
    /// [`RedisConfig::cluster`]). Fails at once with [`BackendErrorKind::Connection`] when the server
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
    /// The seed nodes' URLs given to [`RedisConfig::cluster`].
    seeds: Option<Vec<String>>,
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
    ///
    /// A `redis+cluster://[user[:password]@]host:port,host:port,..` URL (`rediss+cluster://`
    /// for TLS) names a Redis Cluster by some of its nodes, as [`RedisConfig::cluster`] does;
    /// it has no database (a cluster has database 0 only).
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            seeds: None,
            prefix: String::new(),
            python: None,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(250),
        }
    }

    /// Settings for a Redis Cluster reached through `seeds`, each a node's URL
    /// (`redis://[user[:password]@]host:port`, or `rediss://` for TLS; all with the same
    /// credentials). One reachable seed is enough: the client learns the cluster's other
    /// nodes from it.
    ///
    /// On a cluster, actor, reply and cluster channels are sharded (`SSUBSCRIBE`,
    /// `SPUBLISH`): a frame travels to the one shard owning its channel, and presence keys
    /// live under one hash tag (the crate docs' "Redis Cluster" section has the layout).
    /// The prefix may not contain `{` or `}`, which would change that tag.
    pub fn cluster<I, S>(seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let seeds: Vec<String> = seeds.into_iter().map(Into::into).collect();
        RedisConfig {
            url: seeds.join(","),
            seeds: Some(seeds),
            ..Self::new(String::new())
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

    /// The server URL (it may carry a password: do not log it; `Debug` hides it); for
    /// [`RedisConfig::cluster`], the seeds' URLs separated by commas.
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

    /// Whether these settings name a Redis Cluster ([`RedisConfig::cluster`], or a
    /// `redis+cluster://` URL).
    pub fn is_cluster(&self) -> bool {
        self.seeds.is_some() || cluster_scheme(&self.url).is_some()
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
        Ok(
            Backend::new(NAME, handle.clone(), handle.clone(), handle.clone())
                .with_discovery(handle),
        )
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = match &self.seeds {
            Some(seeds) => seeds
                .iter()
                .map(|seed| redact(seed))
                .collect::<Vec<_>>()
                .join(","),
            None => redact(&self.url),
        };
        f.debug_struct("RedisConfig")
            .field("url", &url)
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

/// What the settings connect to.
enum Target {
    /// Boxed: far larger than the other variant, and made once per connect.
    Single(Box<ConnectionInfo>),
    Cluster(Vec<ConnectionInfo>),
}

/// The scheme (`redis` or `rediss`) of a `redis+cluster://` or `rediss+cluster://` URL.
fn cluster_scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    scheme.strip_suffix(CLUSTER_SCHEME)
}

fn invalid(message: String) -> BackendError {
    BackendError::new(NAME, BackendErrorKind::InvalidInput, message)
}

/// The seed URLs of `redis+cluster://[user[:password]@]host:port,host:port,..`: one
/// `redis://[user[:password]@]host:port` per host.
fn cluster_seeds(url: &str, scheme: &str) -> Result<Vec<String>, BackendError> {
    let rest = url
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches('/');
    if rest.contains('/') {
        return Err(invalid(format!(
            "{:?}: a cluster URL names no database (a cluster has database 0 only)",
            redact(url)
        )));
    }
    let (credentials, hosts) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| format!("{scheme}://{credentials}{host}"))
        .collect();
    if seeds.is_empty() {
        return Err(invalid(format!(
            "{:?}: a cluster URL needs at least one host:port",
            redact(url)
        )));
    }
    Ok(seeds)
}

/// Parses one server URL, refusing TLS without the `tls` feature.
fn connection_info(url: &str) -> Result<ConnectionInfo, BackendError> {
    let redacted = redact(url);
    if cfg!(not(feature = "tls")) && url.starts_with("rediss://") {
        return Err(invalid(format!(
            "{redacted:?} asks for TLS, which needs rodario-redis's `tls` feature"
        )));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| invalid(format!("invalid Redis URL {redacted:?}: {e}")).with_source(e))?;
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
    Ok(info.set_redis_settings(settings))
}

impl RedisConfig {
    fn target(&self) -> Result<Target, BackendError> {
        let seeds = match (&self.seeds, cluster_scheme(&self.url)) {
            (Some(seeds), _) => seeds.clone(),
            (None, Some(scheme)) => cluster_seeds(&self.url, scheme)?,
            (None, None) => return Ok(Target::Single(Box::new(connection_info(&self.url)?))),
        };
        if seeds.is_empty() {
            return Err(invalid(
                "a Redis Cluster needs at least one seed URL".into(),
            ));
        }
        if self.prefix.contains(['{', '}']) {
            return Err(invalid(format!(
                "prefix {:?}: on a Redis Cluster a prefix may not contain `{{` or `}}` (it is \
                 part of the presence keys' hash tag)",
                self.prefix
            )));
        }
        let seeds = seeds
            .iter()
            .map(|seed| connection_info(seed))
            .collect::<Result<_, _>>()?;
        Ok(Target::Cluster(seeds))
    }
}

impl Inner {
    async fn connect(config: &RedisConfig) -> Result<Arc<Inner>, BackendError> {
        let (reaper_tx, reaper_rx) = mpsc::unbounded_channel();
        let (connection, dispatch) = match config.target()? {
            Target::Single(info) => connect_single(config, *info, reaper_tx).await?,
            Target::Cluster(seeds) => connect_cluster(config, seeds, reaper_tx).await?,
        };
        let inner = Arc::new(Inner {
            presence_root: presence_root(&config.prefix, connection.is_cluster()),
            connection,
            addr: dispatch.addr().to_owned(),
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
            client_name: std::sync::Mutex::new(None),
        });
        tokio::spawn(pubsub::reaper(Arc::downgrade(&inner), reaper_rx));
        tracing::debug!(addr = %inner.addr, prefix = %inner.prefix, "connected to redis");
        Ok(inner)
    }
}

/// The push handler routing a connection's push messages to `dispatch`.
fn on_push(
    dispatch: &Arc<Dispatch>,
) -> impl Fn(redis::PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    let dispatch = dispatch.clone();
    move |push: redis::PushInfo| {
        dispatch.on_push(push);
        Ok(())
    }
}

async fn connect_single(
    config: &RedisConfig,
    info: ConnectionInfo,
    reaper: mpsc::UnboundedSender<pubsub::Chore>,
) -> Result<(Connection, Arc<Dispatch>), BackendError> {
    let addr = info.addr().to_string();
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

    let dispatch = Arc::new(Dispatch::new(reaper, addr.clone(), false));
    // Both connections report their losses to the dispatch (the commands' connection
    // receives no other push); only the subscriptions' resubscribes.
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.command_timeout))
        .set_min_delay(config.reconnect_min)
        .set_max_delay(config.reconnect_max)
        .set_number_of_retries(usize::MAX)
        .set_push_sender(on_push(&dispatch));
    let commands = ConnectionManager::new_with_config(client.clone(), manager_config.clone());
    let subscriptions =
        ConnectionManager::new_with_config(client, manager_config.set_automatic_resubscription());
    let (commands, subscriptions) = tokio::try_join!(
        connecting(config, &addr, commands),
        connecting(config, &addr, subscriptions)
    )?;
    let connection = Connection::Single {
        commands,
        subscriptions,
    };
    Ok((connection, dispatch))
}

async fn connect_cluster(
    config: &RedisConfig,
    seeds: Vec<ConnectionInfo>,
    reaper: mpsc::UnboundedSender<pubsub::Chore>,
) -> Result<(Connection, Arc<Dispatch>), BackendError> {
    let addr = format!(
        "cluster {}",
        seeds
            .iter()
            .map(|seed| seed.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let dispatch = Arc::new(Dispatch::new(reaper, addr.clone(), true));
    let min_wait = config.reconnect_min.as_millis();
    let retries = (config.command_timeout.as_millis() / min_wait).clamp(1, MAX_CLUSTER_RETRIES);
    // redis-rs retries a command across moved slots and a node being replaced; the
    // command timeout bounds the whole, and the retry waits follow the reconnect backoff
    // so that a promoted replica is found as soon as a single server's restart would be.
    let client = ClusterClientBuilder::new(seeds)
        .use_protocol(ProtocolVersion::RESP3)
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.command_timeout)
        .min_retry_wait(min_wait as u64)
        .max_retry_wait(config.reconnect_max.as_millis() as u64)
        .retries(retries as u32)
        .push_sender(on_push(&dispatch))
        .build()
        .map_err(|e| error::from_redis("connect", &addr, e))?;
    let mut connection = connecting(config, &addr, client.get_async_connection()).await?;
    // The client is up once it read the slot map from one seed; a PING on every primary
    // checks the credentials and that the cluster answers.
    let ping = redis::cmd("PING");
    connecting(config, &addr, ping.query_async::<()>(&mut connection)).await?;
    Ok((Connection::Cluster(connection), dispatch))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(url: &str) -> Result<Vec<String>, BackendErrorKind> {
        let scheme = cluster_scheme(url).expect("a cluster URL");
        cluster_seeds(url, scheme).map_err(|e| e.kind())
    }

    #[test]
    fn a_cluster_url_names_one_seed_per_host_with_the_credentials() {
        assert_eq!(
            seeds("redis+cluster://h1:7000,h2:7001/").unwrap(),
            ["redis://h1:7000", "redis://h2:7001"]
        );
        assert_eq!(
            seeds("rediss+cluster://alice:pw@h1:7000, h2:7001").unwrap(),
            ["rediss://alice:pw@h1:7000", "rediss://alice:pw@h2:7001"]
        );
    }

    #[test]
    fn a_cluster_url_without_hosts_or_with_a_database_is_refused() {
        for url in [
            "redis+cluster://",
            "redis+cluster://,",
            "redis+cluster://h1:7000/2",
        ] {
            assert_eq!(seeds(url), Err(BackendErrorKind::InvalidInput), "{url}");
        }
    }

    #[test]
    fn only_cluster_schemes_name_a_cluster() {
        assert!(RedisConfig::new("redis+cluster://h1:7000").is_cluster());
        assert!(RedisConfig::cluster(["redis://h1:7000"]).is_cluster());
        assert!(!RedisConfig::new("redis://h1:7000").is_cluster());
        assert!(!RedisConfig::new("rediss://h1:7000").is_cluster());
    }

    #[test]
    fn debug_hides_the_passwords_of_every_seed() {
        let shown = format!(
            "{:?}",
            RedisConfig::new("redis+cluster://a:secret@h1:1,h2:2")
        );
        assert!(!shown.contains("secret"), "{shown}");
        let shown = format!(
            "{:?}",
            RedisConfig::cluster(["redis://a:secret@h1:1", "redis://a:secret@h2:2"])
        );
        assert!(!shown.contains("secret"), "{shown}");
    }
}
