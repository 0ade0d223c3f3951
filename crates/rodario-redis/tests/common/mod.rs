//! The test fixture: a Redis server per test, as DESIGN.md's "Servers in tests" says.
//!
//! [`RedisServer::start`] uses `RODARIO_REDIS_URL` when it is set, else starts a private
//! `redis-server` on a free port (killed on drop), else (feature `testcontainers`) a Redis
//! container when a Docker daemon answers, else fails saying how to get a server. Tests
//! that need a server of their own (auth options, restarts) call [`RedisServer::private`]. Every backend a fixture hands out
//! has a prefix unique to the fixture, so tests run in parallel on a shared server.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rodario_core::backend::Backend;
use rodario_core::testkit::outage::KillableBroker;
use rodario_core::testkit::server::{free_port, on_path, ServerProcess};
use rodario_core::testkit::TestBroker;
use rodario_redis::{RedisConfig, URL_ENV};

const HOW_TO_GET_ONE: &str = "these tests need a Redis server: install one \
     (`sudo apt-get install redis-server`, which puts `redis-server` on PATH; the tests \
     start private servers on free ports) or point RODARIO_REDIS_URL at a server they may \
     write to (e.g. RODARIO_REDIS_URL=redis://127.0.0.1:6379)";

/// A server for one test.
pub struct RedisServer {
    url: String,
    server: Option<ServerProcess>,
    /// Removed when dropped.
    #[cfg(feature = "testcontainers")]
    _container: Option<testcontainers::ContainerAsync<testcontainers::GenericImage>>,
    run: String,
}

fn unique_run() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "t{}-{}-{nanos}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl RedisServer {
    /// `RODARIO_REDIS_URL` when set, else a private server, else a container.
    pub async fn start() -> Self {
        match std::env::var(URL_ENV) {
            Ok(url) if !url.is_empty() => Self::at(url),
            _ if on_path("redis-server") => Self::private(&[]),
            _ => Self::container().await,
        }
    }

    fn at(url: String) -> Self {
        RedisServer {
            url,
            server: None,
            #[cfg(feature = "testcontainers")]
            _container: None,
            run: unique_run(),
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
        let mut server = Self::at(format!("redis://127.0.0.1:{port}"));
        server._container = Some(container);
        server
    }

    #[cfg(not(feature = "testcontainers"))]
    async fn container() -> Self {
        panic!(
            "no `redis-server` on PATH: {HOW_TO_GET_ONE}; or, with a Docker daemon, run the \
             tests with `--features testcontainers`"
        )
    }

    /// A private `redis-server` with `extra` options (for example `["--requirepass", "pw"]`).
    pub fn private(extra: &[&str]) -> Self {
        assert!(
            on_path("redis-server"),
            "no `redis-server` on PATH: {HOW_TO_GET_ONE}"
        );
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port().expect("no free TCP port on 127.0.0.1");
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            match ServerProcess::start("redis-server", &args, port) {
                Ok(server) => {
                    let mut redis = Self::at(format!("redis://127.0.0.1:{port}"));
                    redis.server = Some(server);
                    return redis;
                }
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}; {HOW_TO_GET_ONE}");
    }

    /// The server's URL, without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's URL with `user` and `password`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        self.url
            .replacen("redis://", &format!("redis://{user}:{password}@"), 1)
    }

    /// The private server's port.
    pub fn port(&self) -> u16 {
        self.server.as_ref().expect("a private server").port()
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
        self.server.as_mut().expect("a private server").stop();
    }

    /// Starts the private server again on the same port.
    pub fn restart(&mut self) {
        self.server
            .as_mut()
            .expect("a private server")
            .restart()
            .expect("restart redis-server");
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

/// Waits up to `within` for `check` to hold, polling.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
