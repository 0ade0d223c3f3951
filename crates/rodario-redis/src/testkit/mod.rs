//! Redis servers for tests and benches (feature `testkit`): this crate's tests, the
//! workspace's benches and any crate testing code on the Redis backend use them.
//!
//! [`RedisServer`] is one standalone server: the one in `RODARIO_REDIS_URL` when that is set,
//! else a private `redis-server` on a free loopback port (killed on drop), else, with the
//! feature `testcontainers` and a Docker daemon, a Redis container. Tests that need a server
//! of their own (options such as `--requirepass`, TLS, restarts) start one with
//! [`RedisServer::private`] or [`RedisServer::private_tls`]. Every backend a fixture hands
//! out has a prefix unique to the fixture, so tests run in parallel on a shared server.
//!
//! [`RedisCluster`] is a private Redis Cluster of six servers (three primaries, three
//! replicas), started from the same private-process code and joined with `redis-cli`; one
//! per test binary through [`RedisCluster::shared`], or one of a test's own (to kill a
//! primary) through [`RedisCluster::start`].

mod cluster;
mod server;

pub use cluster::{ClusterNode, RedisCluster};
pub use server::RedisServer;

use rodario_core::testkit::server::{on_path, ServerProcess};

/// What a test without a server is told.
const HOW_TO_GET_ONE: &str = "these tests need a Redis server: install one \
     (`sudo apt-get install redis-server`, which puts `redis-server` on PATH; the tests \
     start private servers on free ports) or point RODARIO_REDIS_URL at a server they may \
     write to (e.g. RODARIO_REDIS_URL=redis://127.0.0.1:6379)";

/// Starts a private `redis-server` on a free loopback port without persistence, with the
/// arguments `listen(port)` saying how it listens on that port and then `extra`.
fn private_process(listen: impl Fn(u16) -> Vec<String>, extra: &[&str]) -> ServerProcess {
    assert!(
        on_path("redis-server"),
        "no `redis-server` on PATH: {HOW_TO_GET_ONE}"
    );
    ServerProcess::start_on_free_port("redis-server", |port| {
        let mut args = listen(port);
        args.extend(
            ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .iter()
                .chain(extra)
                .map(|arg| arg.to_string()),
        );
        args
    })
    .unwrap_or_else(|e| panic!("could not start redis-server: {e}; {HOW_TO_GET_ONE}"))
}
