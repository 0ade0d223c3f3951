//! The Redis backend on a Redis Cluster beside its raw baseline: hand-written
//! request/reply over sharded pub/sub and a `SET NX PX` lock, on the same client (redis-rs's
//! async cluster client) with no framework.
//!
//! Starts a private cluster of six `redis-server` (`rodario_redis::testkit::RedisCluster`:
//! three primaries with a replica each, from `PATH`, no persistence) on free ports, killed
//! when the bench ends. rodario's host and caller are two nodes with a cluster connection
//! each, as two processes would be; both sides run on one 2-worker multi_thread runtime.
//! Run with `cargo bench --features redis --bench redis_cluster` (add `-- --quick` for a
//! fast pass). At the end it prints, per node, how many `SPUBLISH`, `SSUBSCRIBE`, `EVALSHA`
//! and `SET` commands it served (`INFO commandstats`): where the calls went.
//!
//! The raw request/reply: the caller `SPUBLISH`es `[id, argument]` on a request channel and
//! reads `[id, result]` from a reply channel it `SSUBSCRIBE`s to on its own cluster
//! connection (push messages into a tokio channel), matching replies to requests by id; an
//! echo task on a cluster connection of its own `SSUBSCRIBE`s to the request channels and
//! answers each request by `SPUBLISH` without waiting for the previous reply's to complete.
//! One connection per side, commands and subscriptions together, as rodario has per node.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use common::{Raw, IN_FLIGHT};
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ProtocolVersion, PushInfo, PushKind, Script, Value};
use rodario_core::testkit::unique;
use rodario_redis::testkit::RedisCluster;
use tokio::sync::mpsc;

/// Deletes the lock key only if it still holds the caller's token.
const RELEASE: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0"#;

/// Channel and key names of the raw baseline, under a prefix of their own.
struct Names {
    add: String,
    size: String,
    tell: String,
    reply: String,
    lock: String,
}

impl Names {
    fn new() -> Self {
        let prefix = unique("raw");
        Names {
            add: format!("{prefix}:add"),
            size: format!("{prefix}:size"),
            tell: format!("{prefix}:tell"),
            reply: format!("{prefix}:reply"),
            lock: format!("{prefix}:global.lock:bench"),
        }
    }
}

/// `[id, value]` as 16 little-endian bytes.
fn id_and_value(id: u64, value: u64) -> [u8; 16] {
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    bytes[8..].copy_from_slice(&value.to_le_bytes());
    bytes
}

fn split_id(bytes: &[u8]) -> (u64, &[u8]) {
    let (id, rest) = bytes.split_at(8);
    (u64::from_le_bytes(id.try_into().unwrap()), rest)
}

/// The channel and payload of a sharded pub/sub message.
fn message(push: PushInfo) -> Option<(Vec<u8>, Vec<u8>)> {
    if push.kind != PushKind::SMessage {
        return None;
    }
    let mut data = push.data.into_iter();
    match (data.next(), data.next()) {
        (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) => {
            Some((channel, payload))
        }
        _ => None,
    }
}

/// A cluster connection whose push messages go to the returned receiver.
async fn connect(urls: &[String]) -> (ClusterConnection, mpsc::UnboundedReceiver<PushInfo>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = ClusterClient::builder(urls.to_vec())
        .use_protocol(ProtocolVersion::RESP3)
        .push_sender(tx)
        .build()
        .unwrap();
    (client.get_async_connection().await.unwrap(), rx)
}

/// The caller's side of the raw baseline.
struct RawCluster {
    names: Names,
    connection: ClusterConnection,
    /// The reply channel's messages; one caller reads them at a time (an uncontended lock).
    replies: tokio::sync::Mutex<mpsc::UnboundedReceiver<PushInfo>>,
    next_id: AtomicU64,
    release: Script,
}

impl RawCluster {
    /// Starts the echo on its own connection, then connects the caller.
    async fn start(urls: &[String]) -> Self {
        let names = Names::new();
        let (mut echo_connection, requests) = connect(urls).await;
        echo_connection.ssubscribe(&names.add).await.unwrap();
        echo_connection.ssubscribe(&names.size).await.unwrap();
        echo_connection.ssubscribe(&names.tell).await.unwrap();
        tokio::spawn(echo(
            requests,
            echo_connection,
            names.add.clone(),
            names.tell.clone(),
            names.reply.clone(),
        ));
        let (mut connection, replies) = connect(urls).await;
        connection.ssubscribe(&names.reply).await.unwrap();
        RawCluster {
            names,
            connection,
            replies: tokio::sync::Mutex::new(replies),
            next_id: AtomicU64::new(1),
            release: Script::new(RELEASE),
        }
    }

    /// Publishes one request; returns once the shard's primary has taken it.
    async fn publish(&self, channel: &str, payload: &[u8]) {
        let receivers: u64 = redis::cmd("SPUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut self.connection.clone())
            .await
            .unwrap();
        assert_eq!(receivers, 1);
    }

    /// Publishes `n` for the echo to add, wanting no reply: the raw one-way call.
    async fn tell(&self, n: u64) {
        self.publish(&self.names.tell, &id_and_value(0, n)).await;
    }

    /// Reads replies until those of ids `first..first + count` came; returns the last value.
    async fn replies(&self, first: u64, count: usize) -> u64 {
        let mut replies = self.replies.lock().await;
        let mut missing = count;
        let mut last = 0;
        while missing > 0 {
            let push = replies.recv().await.expect("the reply subscription ended");
            let Some((_, payload)) = message(push) else {
                continue;
            };
            let (id, value) = split_id(&payload);
            if (first..first + count as u64).contains(&id) {
                missing -= 1;
                last = u64::from_le_bytes(value.try_into().unwrap());
            }
        }
        last
    }
}

/// Answers requests on the `add` and `size` channels on `reply`, publishing each reply
/// without waiting for the previous one's `SPUBLISH` to complete; adds what comes on `tell`
/// without answering.
async fn echo(
    mut requests: mpsc::UnboundedReceiver<PushInfo>,
    connection: ClusterConnection,
    add: String,
    tell: String,
    reply: String,
) {
    let mut total = 0u64;
    let mut sending = FuturesUnordered::new();
    loop {
        tokio::select! {
            push = requests.recv() => {
                let Some(push) = push else { break };
                let Some((channel, payload)) = message(push) else { continue };
                let (id, argument) = split_id(&payload);
                if channel == tell.as_bytes() {
                    total += u64::from_le_bytes(argument.try_into().unwrap());
                    continue;
                }
                let value = if channel == add.as_bytes() {
                    total += u64::from_le_bytes(argument.try_into().unwrap());
                    total
                } else {
                    argument.len() as u64
                };
                let mut connection = connection.clone();
                let reply = &reply;
                sending.push(async move {
                    let _: u64 = redis::cmd("SPUBLISH")
                        .arg(reply)
                        .arg(&id_and_value(id, value)[..])
                        .query_async(&mut connection)
                        .await
                        .unwrap();
                });
            }
            Some(()) = sending.next(), if !sending.is_empty() => {}
        }
    }
}

impl Raw for RawCluster {
    async fn add(&self, n: u64) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.publish(&self.names.add, &id_and_value(id, n)).await;
        self.replies(id, 1).await
    }

    async fn add_in_flight(&self) {
        let first = self.next_id.fetch_add(IN_FLIGHT as u64, Ordering::Relaxed);
        let requests = (first..first + IN_FLIGHT as u64)
            .map(|id| async move { self.publish(&self.names.add, &id_and_value(id, 1)).await });
        tokio::join!(join_all(requests), self.replies(first, IN_FLIGHT));
    }

    /// Copies the 64 KiB behind the id (redis-rs copies every argument into its command
    /// buffer anyway).
    async fn size(&self, data: &Bytes) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut payload = Vec::with_capacity(8 + data.len());
        payload.extend_from_slice(&id.to_le_bytes());
        payload.extend_from_slice(data);
        self.publish(&self.names.size, &payload).await;
        self.replies(id, 1).await
    }

    /// `SET key token NX PX 3000` (rodario's default expiry), then the compare-and-delete
    /// script by its SHA (`EVALSHA`, loaded on first use), as rodario's release does.
    async fn lock(&self) {
        let mut connection = self.connection.clone();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let taken: Option<String> = redis::cmd("SET")
            .arg(&self.names.lock)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(3000)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(taken.is_some());
        let released: u64 = self
            .release
            .key(&self.names.lock)
            .arg(&token)
            .invoke_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(released, 1);
    }
}

fn benches(c: &mut Criterion) {
    let rt = common::runtime();
    let cluster = rt.block_on(RedisCluster::start());
    let urls: Vec<String> = cluster
        .ports()
        .iter()
        .map(|port| format!("redis://127.0.0.1:{port}"))
        .collect();
    let raw = rt.block_on(RawCluster::start(&urls));
    let url = cluster.url();
    let connect = |prefix: String| {
        let config = rodario::redis::RedisConfig::new(url.clone()).prefix(format!("{prefix}:"));
        async move { config.connect().await.unwrap() }
    };
    common::run(c, &rt, "redis_cluster", connect, &raw);
    common::tell(c, &rt, "redis_cluster", &connect, || raw.tell(1));
    // Where the commands went: the counts since the cluster started, both sides together.
    for (port, primary, counts) in rt.block_on(cluster.command_counts()) {
        let count = |name: &str| counts.get(name).copied().unwrap_or(0);
        eprintln!(
            "redis_cluster node {port} ({}): spublish {}, ssubscribe {}, evalsha {}, set {}",
            if primary { "primary" } else { "replica" },
            count("spublish"),
            count("ssubscribe"),
            count("evalsha"),
            count("set"),
        );
    }
    drop(rt);
    drop(cluster);
}

criterion_group! {
    name = redis_cluster_benches;
    config = common::config();
    targets = benches
}
criterion_main!(redis_cluster_benches);
