//! Settings and connecting: [`NatsConfig`], [`NatsBackend`], and opening the connection
//! that a backend's three trait objects share.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{jetstream, ConnectOptions, Event, ServerAddr};
use futures_util::StreamExt;
use rodario_core::backend::{Backend, ConnectionState};
use rodario_core::error::{BackendError, BackendErrorKind};
use tokio::sync::watch;

use crate::error::{connect_error, error};
use crate::transport::Probes;
use crate::{names, Inner, NatsConnection, NAME};

/// The environment variable read by [`NatsConfig::new`] for the server URL(s).
pub const URL_ENV: &str = "RODARIO_NATS_URL";

/// The server used when neither [`NatsConfig::servers`] nor [`URL_ENV`] says otherwise.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// The prefix used when [`NatsConfig::prefix`] is not called.
pub const DEFAULT_PREFIX: &str = "rodario";

/// How the client proves who it is. At most one is used; the last one set wins.
#[derive(Clone, Default)]
pub(crate) enum Auth {
    /// No credentials (or those in the URL, such as `nats://user:pass@host`).
    #[default]
    None,
    /// `--auth` token.
    Token(String),
    /// `--user` / `--pass`.
    UserPassword(String, String),
    /// A `.creds` file (JWT and NKey seed), as `nsc` writes it.
    CredentialsFile(PathBuf),
}

/// Settings for a NATS connection: servers, credentials, TLS, naming and timeouts.
///
/// Built with chained setters from [`NatsConfig::new`], which starts from the environment:
///
/// ```
/// use std::time::Duration;
/// use rodario_nats::NatsConfig;
///
/// let config = NatsConfig::new()
///     .servers(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"])
///     .user_password("app", "secret")
///     .prefix("shop.orders")
///     .timeout(Duration::from_secs(2));
/// # drop(config);
/// ```
#[derive(Clone)]
pub struct NatsConfig {
    pub(crate) servers: Vec<String>,
    pub(crate) servers_in_order: bool,
    pub(crate) auth: Auth,
    pub(crate) require_tls: bool,
    pub(crate) root_certificates: Vec<PathBuf>,
    pub(crate) client_certificate: Option<(PathBuf, PathBuf)>,
    pub(crate) prefix: String,
    pub(crate) name: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_max_delay: Duration,
    pub(crate) kv_max_age: Duration,
    pub(crate) kv_replicas: usize,
    pub(crate) kv_cluster: Option<String>,
    pub(crate) kv_tags: Vec<String>,
    pub(crate) kv_memory_storage: bool,
    pub(crate) check_delivery: bool,
    pub(crate) subscription_capacity: usize,
    pub(crate) service_api: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl NatsConfig {
    /// Settings with the defaults: the server list in `RODARIO_NATS_URL` (URLs separated by
    /// commas) when it is set, else `nats://127.0.0.1:4222`; no credentials; prefix
    /// `rodario`; 5 s operation timeout; reconnecting forever with a backoff capped at 2 s.
    pub fn new() -> Self {
        let servers = std::env::var(URL_ENV)
            .ok()
            .map(|urls| split_urls(&urls))
            .filter(|urls| !urls.is_empty())
            .unwrap_or_else(|| vec![DEFAULT_URL.to_owned()]);
        NatsConfig {
            servers,
            servers_in_order: false,
            auth: Auth::None,
            require_tls: false,
            root_certificates: Vec::new(),
            client_certificate: None,
            prefix: DEFAULT_PREFIX.to_owned(),
            name: None,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            reconnect_max_delay: Duration::from_secs(2),
            kv_max_age: Duration::from_secs(3600),
            kv_replicas: 1,
            kv_cluster: None,
            kv_tags: Vec::new(),
            kv_memory_storage: false,
            check_delivery: true,
            subscription_capacity: 65_536,
            service_api: true,
        }
    }

    /// Settings for one server URL (or several separated by commas), otherwise as
    /// [`NatsConfig::new`].
    pub fn from_url(url: &str) -> Self {
        Self::new().servers(split_urls(url))
    }

    /// The servers to connect to (`nats://host:port`, `tls://host:port`; credentials may be
    /// given in the URL as `nats://user:pass@host` or `nats://token@host`, and are used
    /// when no other credentials are set; the first URL with credentials gives them). The
    /// client picks one server, and moves to another when it fails.
    pub fn servers<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.servers = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Tries the servers in the order given, when connecting and reconnecting, instead of in
    /// a random order (which spreads clients over a cluster); default false. Clients of one
    /// site can so prefer the server beside them.
    pub fn servers_in_order(mut self, in_order: bool) -> Self {
        self.servers_in_order = in_order;
        self
    }

    /// Authenticates with a token (the server's `--auth` / `authorization { token }`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Token(token.into());
        self
    }

    /// Authenticates with a user name and password (`--user` / `--pass`).
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Auth::UserPassword(user.into(), password.into());
        self
    }

    /// Authenticates with a credentials file (a user JWT and NKey seed, as `nsc` writes
    /// it); the file is read at connect time.
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.auth = Auth::CredentialsFile(path.into());
        self
    }

    /// Refuses to talk to a server without TLS (implied by `tls://` URLs).
    pub fn require_tls(mut self, required: bool) -> Self {
        self.require_tls = required;
        self
    }

    /// Trusts the CA certificate(s) in this PEM file, besides the system's roots.
    pub fn root_certificate(mut self, pem: impl Into<PathBuf>) -> Self {
        self.root_certificates.push(pem.into());
        self
    }

    /// Presents this client certificate and key (PEM files) for mutual TLS.
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_certificate = Some((cert.into(), key.into()));
        self
    }

    /// The namespace: the leading subject token(s) of every subject (`{prefix}.actor.{uuid}`)
    /// and the name of the KV bucket (escaped, see the crate docs). One or more subject
    /// tokens joined by `.`; default `rodario`. Backends with different prefixes do not see
    /// each other.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The connection's name, shown by the server's monitoring (`connz`).
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long one broker operation (a registry or lock update, a subscription, a checked
    /// publish) may take before it fails with a connection error; default 5 s. While the
    /// connection is down, or when it drops while they wait, operations fail at once instead.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long [`crate::NatsBackend::connect`] waits for a server to answer; default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest pause between two reconnect attempts (the pause starts at 50 ms and
    /// doubles); default 2 s. The client never gives up reconnecting.
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// The KV bucket's `max_age` when this connection creates it: entries of dead actors and
    /// abandoned leases are deleted by the server after this long; default 1 hour. It is also
    /// the longest TTL a registry entry or lease may be given (longer ones are refused), since
    /// the server would delete the entry before its TTL ran out. An existing bucket keeps the
    /// `max_age` it was created with.
    pub fn kv_max_age(mut self, max_age: Duration) -> Self {
        self.kv_max_age = max_age;
        self
    }

    /// Replicas of the KV buckets when this connection creates them; default 1 (0 counts as
    /// 1). On a JetStream cluster, 3 keeps the registry and the leases through the loss of
    /// one server. Connecting fails with `BackendErrorKind::InvalidInput` naming the bucket
    /// when the servers cannot place that many replicas (more than there are servers with
    /// JetStream matching the placement, or more than 1 on a server outside a cluster). An
    /// existing bucket keeps the replicas it was created with.
    pub fn kv_replicas(mut self, replicas: usize) -> Self {
        self.kv_replicas = replicas.max(1);
        self
    }

    /// Places the KV buckets, when this connection creates them, in the JetStream cluster
    /// of this name (the servers' `cluster { name }`); default: the cluster of the server
    /// the client is connected to.
    pub fn kv_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.kv_cluster = Some(cluster.into());
        self
    }

    /// Places the KV buckets' replicas, when this connection creates them, on servers with
    /// all of these tags (the servers' `server_tags`); default: no tags required.
    pub fn kv_tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.kv_tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Keeps the KV bucket in memory instead of on disk when this connection creates it
    /// (faster; lost when the server restarts); default false.
    pub fn kv_memory_storage(mut self, memory: bool) -> Self {
        self.kv_memory_storage = memory;
        self
    }

    /// Whether a publish on an actor or cluster channel finds out if anybody is subscribed
    /// (see the crate docs, "Delivery"); default true. When false, every publish reports
    /// [`Delivery::Unknown`](rodario_core::backend::Delivery::Unknown) and costs no round
    /// trip.
    pub fn check_delivery(mut self, check: bool) -> Self {
        self.check_delivery = check;
        self
    }

    /// How many frames one subscription may buffer before the client drops further ones
    /// (a NATS "slow consumer"); default 65 536.
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity.max(1);
        self
    }

    /// Whether each node on the backend answers the NATS service API (`$SRV.PING`,
    /// `$SRV.INFO`, `$SRV.STATS`; see the crate docs, "Service API"); default true. Those
    /// subjects are not under the prefix: turn it off where other users of the server
    /// must not see the node's actors and methods.
    pub fn service_api(mut self, answer: bool) -> Self {
        self.service_api = answer;
        self
    }

    /// The configured server URLs.
    pub fn server_urls(&self) -> &[String] {
        &self.servers
    }

    /// The configured prefix.
    pub fn prefix_str(&self) -> &str {
        &self.prefix
    }
}

fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets: not the credentials, not passwords inside URLs.
        let servers: Vec<String> = self.servers.iter().map(|url| redact(url)).collect();
        let auth = match &self.auth {
            Auth::None => "none",
            Auth::Token(_) => "token",
            Auth::UserPassword(..) => "user/password",
            Auth::CredentialsFile(_) => "credentials file",
        };
        f.debug_struct("NatsConfig")
            .field("servers", &servers)
            .field("auth", &auth)
            .field("require_tls", &self.require_tls)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("kv_replicas", &self.kv_replicas)
            .field("check_delivery", &self.check_delivery)
            .field("service_api", &self.service_api)
            .finish_non_exhaustive()
    }
}

/// `url` with any `user:pass@` or `token@` part replaced by `***@`.
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => rest.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

/// Connects rodario nodes to NATS. See the [crate docs](crate) for the layout.
#[derive(Debug)]
#[non_exhaustive]
pub struct NatsBackend;

impl NatsBackend {
    /// Opens one connection with `config` and the KV bucket of its prefix (creating it when
    /// missing), and returns it as a [`Backend`] for one node.
    ///
    /// Fails with `BackendErrorKind::Auth` when the server refuses the credentials,
    /// `BackendErrorKind::Connection` when no server answers or JetStream is not enabled, and
    /// `BackendErrorKind::InvalidInput` for a bad URL, prefix or credentials file.
    pub async fn connect(config: NatsConfig) -> Result<Backend, BackendError> {
        let service_api = config.service_api;
        let connection = Arc::new(NatsConnection::connect(config).await?);
        let backend = Backend::new(
            NAME,
            connection.clone(),
            connection.clone(),
            connection.clone(),
        );
        Ok(if service_api {
            backend.with_discovery(connection)
        } else {
            backend
        })
    }

    /// Connects to `url` (or several URLs separated by commas) with the default settings;
    /// shorthand for `NatsBackend::connect(NatsConfig::from_url(url))`.
    pub async fn connect_url(url: &str) -> Result<Backend, BackendError> {
        Self::connect(NatsConfig::from_url(url)).await
    }
}

fn backoff(attempts: usize, max: Duration) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(16);
    Duration::from_millis(50u64 << exponent).min(max)
}

impl NatsConnection {
    async fn connect(config: NatsConfig) -> Result<Self, BackendError> {
        names::check_prefix(&config.prefix)?;
        if config.servers.is_empty() {
            return Err(error(
                BackendErrorKind::InvalidInput,
                "no NATS server URL given",
            ));
        }
        let shown = config
            .servers
            .iter()
            .map(|url| redact(url))
            .collect::<Vec<_>>()
            .join(",");
        let mut addrs = Vec::with_capacity(config.servers.len());
        for url in &config.servers {
            let addr: ServerAddr = url.parse().map_err(|err| {
                error(
                    BackendErrorKind::InvalidInput,
                    format!("invalid NATS server URL {}: {err}", redact(url)),
                )
            })?;
            addrs.push(addr);
        }

        let max_delay = config.reconnect_max_delay;
        let state = watch::Sender::new(ConnectionState::Connected);
        let events = state.clone();
        let mut options = ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| backoff(attempts, max_delay))
            .subscription_capacity(config.subscription_capacity)
            .require_tls(config.require_tls)
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    match event {
                        Event::Connected => {
                            tracing::info!("NATS connection (re)established");
                            events.send_replace(ConnectionState::Connected);
                        }
                        Event::Disconnected => {
                            tracing::warn!("NATS connection lost; reconnecting in the background");
                            events.send_replace(ConnectionState::Disconnected);
                        }
                        Event::SlowConsumer(sid) => tracing::warn!(
                        sid,
                        "NATS slow consumer: a subscription's buffer was full, frames were dropped"
                    ),
                        Event::ServerError(err) => tracing::warn!(%err, "NATS server error"),
                        Event::ClientError(err) => tracing::warn!(%err, "NATS client error"),
                        other => tracing::debug!(event = %other, "NATS connection event"),
                    }
                }
            });
        if let Some(name) = &config.name {
            options = options.name(name);
        }
        if config.servers_in_order {
            options = options.retain_servers_order();
        }
        match &config.auth {
            // The client does not read credentials from URLs: take the first URL's.
            Auth::None => {
                if let Some(addr) = addrs.iter().find(|addr| addr.username().is_some()) {
                    let user = addr.username().unwrap_or_default().to_owned();
                    options = match addr.password() {
                        Some(password) => options.user_and_password(user, password.to_owned()),
                        None => options.token(user),
                    };
                }
            }
            Auth::Token(token) => options = options.token(token.clone()),
            Auth::UserPassword(user, password) => {
                options = options.user_and_password(user.clone(), password.clone())
            }
            Auth::CredentialsFile(path) => {
                options = options.credentials_file(path).await.map_err(|err| {
                    error(
                        BackendErrorKind::InvalidInput,
                        format!(
                            "cannot read the NATS credentials file {}: {err}",
                            path.display()
                        ),
                    )
                    .with_source(err)
                })?;
            }
        }
        for root in &config.root_certificates {
            options = options.add_root_certificates(root.clone());
        }
        if let Some((cert, key)) = &config.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }

        let client = options
            .connect(addrs)
            .await
            .map_err(|err| connect_error(err, &shown))?;
        tracing::debug!(servers = %shown, prefix = %config.prefix, "connected to NATS");

        let inbox = client.new_inbox();
        let mut probe_sub = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|err| {
                error(
                    BackendErrorKind::Connection,
                    format!("cannot subscribe to the probe inbox: {err}"),
                )
                .with_source(err)
            })?;
        let probes = Arc::new(Probes::default());
        let task_probes = probes.clone();
        let prefix_len = inbox.len() + 1;
        // The task also ends the round trips in flight when the connection drops: their
        // markers are lost with it.
        let mut drops = Some(state.subscribe());
        let probe_task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = probe_sub.next() => match message {
                        Some(message) => {
                            if let Some(token) = message.subject.get(prefix_len..) {
                                task_probes.handle(token, message.status, &message.payload);
                            }
                        }
                        None => break,
                    },
                    Some(state) = connection_change(&mut drops) => {
                        if state == ConnectionState::Disconnected {
                            task_probes.fail_all();
                        }
                    }
                }
            }
        });

        let mut context = jetstream::new(client.clone());
        context.set_timeout(config.timeout);
        let kv = crate::kv::Kv::open(context, &config).await?;

        let inner = Arc::new(Inner {
            client,
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            check_delivery: config.check_delivery,
            inbox,
            next_probe: AtomicU64::new(0),
            probes,
            probe_task,
            kv,
            state,
            view: crate::view::View::default(),
            routes: crate::routes::Routes::default(),
        });
        // The probe subscription is active once a first round trip has come back.
        inner.round_trip(None).await?;
        Ok(NatsConnection { inner })
    }
}

/// The next connection state, or never once the state's sender is gone.
async fn connection_change(
    receiver: &mut Option<watch::Receiver<ConnectionState>>,
) -> Option<ConnectionState> {
    match receiver {
        Some(changes) => match changes.changed().await {
            Ok(()) => Some(*changes.borrow_and_update()),
            Err(_) => {
                *receiver = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact("nats://u:p@h:1"), "nats://***@h:1");
        assert_eq!(redact("tok@h"), "***@h");
        assert_eq!(redact("nats://h:1"), "nats://h:1");
    }

    #[test]
    fn splits_url_lists() {
        assert_eq!(split_urls(" a , b,,"), vec!["a", "b"]);
        let config = NatsConfig::from_url("nats://x:1,nats://y:2");
        assert_eq!(config.server_urls(), ["nats://x:1", "nats://y:2"]);
    }
}
