//! The Redis backend beside its raw baseline: hand-written request/reply over Redis pub/sub
//! and a `SET NX PX` lock, on the same client library (redis-rs) with no framework.
//!
//! Starts a private `redis-server` (`rodario_redis::testkit::RedisServer`: from `PATH`, no
//! persistence) on a free port, killed when the bench ends. rodario's host and caller are
//! two nodes with a connection each, as two processes would be; both sides run on one
//! 2-worker multi_thread runtime. Run with `cargo bench --features redis --bench redis`
//! (add `-- --quick` for a fast pass).
//!
//! The raw request/reply: the caller PUBLISHes `[id, argument]` on a request channel from a
//! multiplexed connection and reads `[id, result]` from a second channel on a pub/sub
//! connection of its own, itself (no task of its own between redis-rs's pub/sub stream,
//! which hands each message through a channel, and the caller), matching replies to
//! requests by id; an echo task (a pub/sub connection reading the requests, a
//! multiplexed one publishing the replies) answers each request without waiting for the
//! previous reply's PUBLISH to complete. Separate pub/sub connections are the client's
//! plain way to subscribe; a rodario node on one server also keeps its subscriptions and
//! its commands on a connection each.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use common::{Raw, IN_FLIGHT};
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use redis::{AsyncCommands, Client, Script};
use rodario::redis::RedisConfig;
use rodario_core::testkit::unique;
use rodario_redis::testkit::RedisServer;

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

/// The caller's side of the raw baseline.
struct RawRedis {
    names: Names,
    publisher: MultiplexedConnection,
    /// The reply channel's messages; one caller reads them at a time (an uncontended lock).
    replies: tokio::sync::Mutex<PubSubStream>,
    next_id: AtomicU64,
    release: Script,
}

impl RawRedis {
    /// Starts the echo on its own connections, then connects the caller.
    async fn start(client: &Client) -> Self {
        let names = Names::new();
        let mut requests = client.get_async_pubsub().await.unwrap();
        requests
            .subscribe(&[&names.add, &names.size, &names.tell])
            .await
            .unwrap();
        let echo_publisher = client.get_multiplexed_async_connection().await.unwrap();
        tokio::spawn(echo(
            requests.into_on_message(),
            echo_publisher,
            names.add.clone(),
            names.tell.clone(),
            names.reply.clone(),
        ));
        let mut replies = client.get_async_pubsub().await.unwrap();
        replies.subscribe(&names.reply).await.unwrap();
        RawRedis {
            names,
            publisher: client.get_multiplexed_async_connection().await.unwrap(),
            replies: tokio::sync::Mutex::new(replies.into_on_message()),
            next_id: AtomicU64::new(1),
            release: Script::new(RELEASE),
        }
    }

    /// Publishes one request; returns once Redis has taken it.
    async fn publish(&self, channel: &str, payload: &[u8]) {
        let receivers: u64 = self
            .publisher
            .clone()
            .publish(channel, payload)
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
            let message = replies.next().await.expect("the reply subscription ended");
            let (id, value) = split_id(message.get_payload_bytes());
            if (first..first + count as u64).contains(&id) {
                missing -= 1;
                last = u64::from_le_bytes(value.try_into().unwrap());
            }
        }
        last
    }
}

/// Answers requests on the `add` and `size` channels on `reply`, publishing each reply
/// without waiting for the previous one's PUBLISH to complete (the multiplexed connection
/// pipelines them); adds what comes on `tell` without answering.
async fn echo(
    mut requests: PubSubStream,
    publisher: MultiplexedConnection,
    add: String,
    tell: String,
    reply: String,
) {
    let mut total = 0u64;
    let mut sending = FuturesUnordered::new();
    loop {
        tokio::select! {
            message = requests.next() => {
                let Some(message) = message else { break };
                let (id, argument) = split_id(message.get_payload_bytes());
                if message.get_channel_name() == tell {
                    total += u64::from_le_bytes(argument.try_into().unwrap());
                    continue;
                }
                let value = if message.get_channel_name() == add {
                    total += u64::from_le_bytes(argument.try_into().unwrap());
                    total
                } else {
                    argument.len() as u64
                };
                let mut publisher = publisher.clone();
                let reply = &reply;
                sending.push(async move {
                    let _: u64 = publisher.publish(reply, &id_and_value(id, value)[..]).await.unwrap();
                });
            }
            Some(()) = sending.next(), if !sending.is_empty() => {}
        }
    }
}

impl Raw for RawRedis {
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
        let mut connection = self.publisher.clone();
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
    let server = RedisServer::private(&[]);
    let url = server.url().to_owned();
    let rt = common::runtime();
    let client = Client::open(url.as_str()).unwrap();
    let raw = rt.block_on(RawRedis::start(&client));
    let connect = |prefix: String| {
        let config = RedisConfig::new(url.clone()).prefix(format!("{prefix}:"));
        async move { config.connect().await.unwrap() }
    };
    common::run(c, &rt, "redis", connect, &raw);
    common::tell(c, &rt, "redis", &connect, || raw.tell(1));
    drop(rt);
    drop(server);
}

criterion_group! {
    name = redis_benches;
    config = common::config();
    targets = benches
}
criterion_main!(redis_benches);
