//! One NATS server for a test or a bench.

use async_trait::async_trait;
use futures_util::StreamExt;
use rodario_core::backend::Backend;
use rodario_core::testkit::outage::KillableBroker;
use rodario_core::testkit::server::ServerProcess;
use rodario_core::testkit::{unique, TestBroker};

use super::{config_for, namespace_token, server_bin, PrivateProcess, HOW_TO_GET_ONE};
use crate::{NatsBackend, NatsConfig, URL_ENV};

/// A NATS server for one test, and a prefix unique to the fixture. See the
/// [module docs](super) for where the server comes from.
pub struct NatsServer {
    url: String,
    prefix: String,
    server: Server,
}

/// Where the server runs; a private one or a container goes when the fixture is dropped.
enum Server {
    /// `RODARIO_NATS_URL`'s, shared with other tests.
    Shared,
    Private(PrivateProcess),
    #[cfg(feature = "testcontainers")]
    Container {
        /// Held only to remove the container on drop (boxed: it is far larger than the
        /// other variants).
        _container: Box<testcontainers::ContainerAsync<testcontainers::GenericImage>>,
    },
}

impl NatsServer {
    /// The server of `RODARIO_NATS_URL` when it is set, else a private server, else (feature
    /// `testcontainers`) a container. Panics saying how to get a server when there is none.
    pub async fn start() -> Self {
        match std::env::var(URL_ENV) {
            Ok(url) if !url.is_empty() => Self::new(url, Server::Shared),
            _ if server_bin().is_some() => Self::private(&[]),
            _ => Self::container().await,
        }
    }

    fn new(url: String, server: Server) -> Self {
        NatsServer {
            url,
            prefix: unique("t"),
            server,
        }
    }

    /// A NATS container with JetStream, when a Docker daemon answers.
    #[cfg(feature = "testcontainers")]
    async fn container() -> Self {
        use testcontainers::core::{IntoContainerPort, WaitFor};
        use testcontainers::runners::AsyncRunner;
        use testcontainers::{GenericImage, ImageExt};

        let container = GenericImage::new("nats", "2.10")
            .with_exposed_port(4222.tcp())
            .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
            .with_cmd(["-js"])
            .start()
            .await
            .unwrap_or_else(|e| panic!("no NATS container ({e}); {HOW_TO_GET_ONE}"));
        let port = container
            .get_host_port_ipv4(4222.tcp())
            .await
            .unwrap_or_else(|e| panic!("the NATS container has no mapped port: {e}"));
        Self::new(
            format!("nats://127.0.0.1:{port}"),
            Server::Container {
                _container: Box::new(container),
            },
        )
    }

    #[cfg(not(feature = "testcontainers"))]
    async fn container() -> Self {
        panic!("{HOW_TO_GET_ONE}");
    }

    /// A private `nats-server -js` with `extra` arguments (such as `["--auth", "token"]`).
    pub fn private(extra: &[&str]) -> Self {
        let private = PrivateProcess::start(extra);
        Self::new(
            format!("nats://127.0.0.1:{}", private.process.port()),
            Server::Private(private),
        )
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix unique to this fixture.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Settings for this server and the fixture's prefix, with [`config_for`]'s timeouts.
    pub fn config(&self) -> NatsConfig {
        config_for(&self.url, &self.prefix)
    }

    /// A new connection with the fixture's prefix.
    pub async fn backend(&self) -> Backend {
        NatsBackend::connect(self.config())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }

    /// Kills the private server, as a crash would.
    pub fn stop(&mut self) {
        self.process_mut().stop();
    }

    /// Starts the private server again on the same port with the same store directory.
    pub fn restart(&mut self) {
        self.process_mut()
            .restart()
            .expect("cannot restart nats-server");
    }

    /// Suspends the private server (SIGSTOP): connections stay open and nothing answers.
    pub fn freeze(&self) {
        self.process().freeze();
    }

    /// Resumes the private server after [`NatsServer::freeze`].
    pub fn thaw(&self) {
        self.process().thaw();
    }

    fn process(&self) -> &ServerProcess {
        match &self.server {
            Server::Private(private) => &private.process,
            _ => panic!("not a private server: {}", self.url),
        }
    }

    fn process_mut(&mut self) -> &mut ServerProcess {
        match &mut self.server {
            Server::Private(private) => &mut private.process,
            _ => panic!("not a private server: {}", self.url),
        }
    }

    /// Deletes the KV buckets this fixture's prefix created on a shared server (their
    /// streams are named `KV_` and the escaped prefix).
    fn delete_buckets(&self) {
        let url = self.url.clone();
        let stream_prefix = format!("KV_{}", self.prefix);
        // Drop may run inside or outside a runtime: a thread of its own can block on one.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("no runtime for the cleanup");
            runtime.block_on(async move {
                let Ok(client) = async_nats::connect(url.as_str()).await else {
                    return;
                };
                let context = async_nats::jetstream::new(client);
                let names: Vec<String> = context
                    .stream_names()
                    .filter_map(|name| async move { name.ok() })
                    .collect()
                    .await;
                for name in names.iter().filter(|n| n.starts_with(&stream_prefix)) {
                    let _ = context.delete_stream(name).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

impl Drop for NatsServer {
    /// A private server goes with its store directory, a container with its storage; on a
    /// shared server, the fixture's KV buckets are deleted.
    fn drop(&mut self) {
        if matches!(self.server, Server::Shared) {
            self.delete_buckets();
        }
    }
}

#[async_trait]
impl TestBroker for NatsServer {
    async fn connect(&self, namespace: &str) -> Backend {
        let prefix = format!("{}.{}", self.prefix, namespace_token(namespace));
        NatsBackend::connect(config_for(&self.url, &prefix))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }
}

impl KillableBroker for NatsServer {
    fn kill(&mut self) {
        self.stop();
    }

    fn restart(&mut self) {
        NatsServer::restart(self);
    }
}
