//! One standalone Redis server for a test or a bench.

use async_trait::async_trait;
use rodario_core::backend::Backend;
use rodario_core::testkit::outage::KillableBroker;
use rodario_core::testkit::server::{on_path, ServerProcess};
use rodario_core::testkit::tls::Certificates;
use rodario_core::testkit::{unique, TestBroker};

use super::{private_process, HOW_TO_GET_ONE};
use crate::{RedisConfig, URL_ENV};

/// A Redis server for one test, and the prefixes of its backends. See the
/// [module docs](super) for where the server comes from.
pub struct RedisServer {
    url: String,
    server: Server,
    /// Unique to the fixture: the start of every prefix it hands out.
    run: String,
}

/// Where the server runs; a private one or a container goes when the fixture is dropped.
enum Server {
    /// `RODARIO_REDIS_URL`'s, shared with other tests.
    Shared,
    Private(ServerProcess),
    #[cfg(feature = "testcontainers")]
    Container {
        /// Held only to remove the container on drop (boxed: it is far larger than the
        /// other variants).
        _container: Box<testcontainers::ContainerAsync<testcontainers::GenericImage>>,
    },
}

impl RedisServer {
    /// The server of `RODARIO_REDIS_URL` when it is set, else a private server, else (feature
    /// `testcontainers`) a container. Panics saying how to get a server when there is none.
    pub async fn start() -> Self {
        match std::env::var(URL_ENV) {
            Ok(url) if !url.is_empty() => Self::new(url, Server::Shared),
            _ if on_path("redis-server") => Self::private(&[]),
            _ => Self::container().await,
        }
    }

    fn new(url: String, server: Server) -> Self {
        RedisServer {
            url,
            server,
            run: format!("{}:", unique("t")),
        }
    }

    /// A Redis container, when a Docker daemon answers (feature `testcontainers`).
    #[cfg(feature = "testcontainers")]
    async fn container() -> Self {
        use testcontainers::core::{IntoContainerPort, WaitFor};
        use testcontainers::runners::AsyncRunner;
        use testcontainers::GenericImage;

        let container = GenericImage::new("redis", "7")
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .start()
            .await
            .unwrap_or_else(|e| {
                panic!("no `redis-server` on PATH, and no Redis container ({e}): {HOW_TO_GET_ONE}")
            });
        let port = container
            .get_host_port_ipv4(6379.tcp())
            .await
            .unwrap_or_else(|e| panic!("the Redis container has no mapped port: {e}"));
        Self::new(
            format!("redis://127.0.0.1:{port}"),
            Server::Container {
                _container: Box::new(container),
            },
        )
    }

    #[cfg(not(feature = "testcontainers"))]
    async fn container() -> Self {
        panic!(
            "no `redis-server` on PATH: {HOW_TO_GET_ONE}; or, with a Docker daemon, enable \
             the feature `testcontainers`"
        )
    }

    /// A private `redis-server` with `extra` options (for example `["--requirepass", "pw"]`).
    pub fn private(extra: &[&str]) -> Self {
        let process = private_process(|port| vec!["--port".into(), port.to_string()], extra);
        Self::new(
            format!("redis://127.0.0.1:{}", process.port()),
            Server::Private(process),
        )
    }

    /// A private `redis-server` serving TLS only, with the server certificate of
    /// `certificates` (client certificates are not asked for) and `extra` options. Its URL
    /// is `rediss://localhost:{port}`; clients must trust `certificates`' CA.
    pub fn private_tls(certificates: &Certificates, extra: &[&str]) -> Self {
        let file = |path: std::path::PathBuf| path.to_string_lossy().into_owned();
        let process = private_process(
            |port| {
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    file(certificates.server_cert()),
                    "--tls-key-file".into(),
                    file(certificates.server_key()),
                    "--tls-ca-cert-file".into(),
                    file(certificates.ca()),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]
            },
            extra,
        );
        Self::new(
            format!("rediss://localhost:{}", process.port()),
            Server::Private(process),
        )
    }

    /// The server's URL, without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's URL with `user` and `password` (an empty user for `requirepass`).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        self.url
            .replacen("://", &format!("://{user}:{password}@"), 1)
    }

    /// The private server's port.
    pub fn port(&self) -> u16 {
        self.process().port()
    }

    /// A prefix unique to this fixture and `name`.
    pub fn prefix(&self, name: &str) -> String {
        format!("{}{name}:", self.run)
    }

    /// Settings for this server with a prefix unique to the fixture and `name`.
    pub fn config(&self, name: &str) -> RedisConfig {
        RedisConfig::new(self.url.clone()).prefix(self.prefix(name))
    }

    /// A new backend handle with this fixture's prefix for `name`.
    pub async fn backend(&self, name: &str) -> Backend {
        self.config(name)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }

    /// A plain redis-rs connection (RESP2, none of this crate's code) to check the layout.
    pub async fn plain(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("plain connection")
    }

    /// How many connections the server counts as subscribed to the wire-level `channel`
    /// (`PUBSUB NUMSUB`), asked over a plain connection.
    pub async fn numsub(&self, channel: &str) -> usize {
        let counts: Vec<(String, usize)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut self.plain().await)
            .await
            .expect("PUBSUB NUMSUB");
        counts.first().map_or(0, |(_, count)| *count)
    }

    /// Kills the private server, as a crash would.
    pub fn stop(&mut self) {
        self.process_mut().stop();
    }

    /// Starts the private server again on the same port.
    pub fn restart(&mut self) {
        self.process_mut()
            .restart()
            .expect("cannot restart redis-server");
    }

    fn process(&self) -> &ServerProcess {
        match &self.server {
            Server::Private(process) => process,
            _ => panic!("not a private server: {}", self.url),
        }
    }

    fn process_mut(&mut self) -> &mut ServerProcess {
        match &mut self.server {
            Server::Private(process) => process,
            _ => panic!("not a private server: {}", self.url),
        }
    }
}

#[async_trait]
impl TestBroker for RedisServer {
    async fn connect(&self, namespace: &str) -> Backend {
        self.backend(namespace).await
    }
}

impl KillableBroker for RedisServer {
    fn kill(&mut self) {
        self.stop();
    }

    fn restart(&mut self) {
        RedisServer::restart(self);
    }
}
