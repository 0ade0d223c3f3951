//! The NATS backend beside its raw baseline: `Client::request` to a subscriber that
//! responds, and a lease on a JetStream KV bucket, on the same client library
//! (async-nats) with no framework.
//!
//! Starts a private `nats-server -js` (`rodario_nats::testkit::NatsServer`:
//! `RODARIO_NATS_SERVER_BIN` when set, else `nats-server` from `PATH`) on a free port with a
//! temporary store directory, both removed when the bench ends. rodario's host and caller
//! are two nodes with a connection each, as two processes would be, with the backend's
//! default settings (so each call on an actor or cluster channel pays for the delivery
//! check, see `NatsConfig::check_delivery`); both sides run on one 2-worker multi_thread
//! runtime. Run with `cargo bench --features nats --bench nats` (add `-- --quick` for a fast
//! pass).
//!
//! The `nats_cluster` benchmarks (sequential calls and the lock) run the same on a private
//! cluster of three servers (`rodario_nats::testkit::NatsCluster`) with KV buckets of 3
//! replicas, every connection on the first server with the others to fall back on.

mod common;

use std::time::Duration;

use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::{Client, ConnectOptions, ServerAddr, Subject};
use bytes::Bytes;
use common::{Raw, IN_FLIGHT};
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::future::join_all;
use futures_util::StreamExt;
use rodario::nats::NatsConfig;
use rodario_core::testkit::unique;
use rodario_nats::testkit::{NatsCluster, NatsServer};

/// The caller's side of the raw baseline.
struct RawNats {
    client: Client,
    add: Subject,
    size: Subject,
    /// Where the raw one-way calls go (no subscriber needed: NATS counts none).
    tell: Subject,
    kv: Store,
}

/// The KV key of the raw baseline's lease.
const LEASE_KEY: &str = "global.lock.bench";

impl RawNats {
    /// Starts the echo on a connection of its own, then connects the caller and makes the
    /// KV bucket of the lock with `replicas`; both connections to the first of `urls`.
    async fn start(urls: &[String], replicas: usize) -> Self {
        let prefix = unique("raw");
        let echo_client = connect_in_order(urls).await;
        let add = Subject::from(format!("{prefix}.add"));
        let requests = echo_client.subscribe(format!("{prefix}.*")).await.unwrap();
        tokio::spawn(echo(echo_client, requests, add.clone()));
        let client = connect_in_order(urls).await;
        // The subscription must be in place before the first request.
        client.flush().await.unwrap();
        let kv = kv_bucket(&client, &prefix, replicas).await;
        RawNats {
            client,
            add,
            size: Subject::from(format!("{prefix}.size")),
            tell: Subject::from(format!("{prefix}-tell")),
            kv,
        }
    }
}

/// A connection to the first of `urls`, falling back on the others in order, as the
/// cluster fixture's connections are.
async fn connect_in_order(urls: &[String]) -> Client {
    let addrs: Vec<ServerAddr> = urls.iter().map(|url| url.parse().unwrap()).collect();
    ConnectOptions::new()
        .retain_servers_order()
        .connect(addrs)
        .await
        .unwrap()
}

/// Makes a KV bucket with history 1 and `replicas`, as `create_key_value` would, by
/// creating its stream directly (with the settings rodario's buckets have, on file storage
/// like theirs, direct gets on a single replica only): async-nats 0.51's
/// `create_key_value` cannot read nats-server 2.9's account info.
async fn kv_bucket(client: &Client, prefix: &str, replicas: usize) -> Store {
    let context = async_nats::jetstream::new(client.clone());
    let bucket = format!("{prefix}_locks");
    context
        .create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_messages: -1,
            max_bytes: -1,
            max_message_size: -1,
            max_age: Duration::from_secs(3600),
            duplicate_window: Duration::from_secs(120),
            storage: StorageType::File,
            num_replicas: replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: replicas == 1,
            discard: DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    context.get_key_value(bucket).await.unwrap()
}

/// Answers requests on `{prefix}.add` with the new total and on `{prefix}.size` with the
/// payload's length, as 8 little-endian bytes. `publish` only queues the reply for the
/// connection's writer, so replies do not wait for each other.
async fn echo(client: Client, mut requests: async_nats::Subscriber, add: Subject) {
    let mut total = 0u64;
    while let Some(request) = requests.next().await {
        let value = if request.subject == add {
            total += u64::from_le_bytes(request.payload[..].try_into().unwrap());
            total
        } else {
            request.payload.len() as u64
        };
        let reply = request.reply.expect("a request without a reply subject");
        client
            .publish(reply, Bytes::copy_from_slice(&value.to_le_bytes()))
            .await
            .unwrap();
    }
}

impl RawNats {
    /// A publish confirmed by the server (a flush: one round trip), as rodario's one-way
    /// call is by its delivery check.
    async fn tell(&self, n: u64) {
        self.client
            .publish(self.tell.clone(), Bytes::copy_from_slice(&n.to_le_bytes()))
            .await
            .unwrap();
        self.client.flush().await.unwrap();
    }

    async fn request(&self, subject: &Subject, payload: Bytes) -> u64 {
        let reply = self.client.request(subject.clone(), payload).await.unwrap();
        u64::from_le_bytes(reply.payload[..].try_into().unwrap())
    }
}

impl Raw for RawNats {
    async fn add(&self, n: u64) -> u64 {
        self.request(&self.add, Bytes::copy_from_slice(&n.to_le_bytes()))
            .await
    }

    /// `request` correlates replies through the client's shared reply subscription, one
    /// inbox subject per request.
    async fn add_in_flight(&self) {
        join_all((0..IN_FLIGHT).map(|_| self.add(1))).await;
    }

    async fn size(&self, data: &Bytes) -> u64 {
        self.request(&self.size, data.clone()).await
    }

    /// `create` (write expecting no live entry; once the key holds a delete marker, as it
    /// does from the second round on, that is a failed write, a read and a write with the
    /// marker's revision), then a delete expecting the revision `create` returned, so that
    /// only the holder's release succeeds.
    async fn lock(&self) {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let revision = self.kv.create(LEASE_KEY, token.into()).await.unwrap();
        self.kv
            .delete_expect_revision(LEASE_KEY, Some(revision))
            .await
            .unwrap();
    }
}

fn benches(c: &mut Criterion) {
    let server = NatsServer::private(&[]);
    let url = server.url().to_owned();
    let rt = common::runtime();
    let raw = rt.block_on(RawNats::start(std::slice::from_ref(&url), 1));
    let connect = |prefix: String| {
        let config = NatsConfig::from_url(&url).prefix(prefix);
        async move { rodario::nats::NatsBackend::connect(config).await.unwrap() }
    };
    common::run(c, &rt, "nats", connect, &raw);
    common::tell(c, &rt, "nats", &connect, || raw.tell(1));
    drop(raw);
    drop(server);

    let cluster = rt.block_on(NatsCluster::start());
    let raw = rt.block_on(RawNats::start(cluster.urls(), 3));
    let connect = |prefix: String| {
        let config = cluster.config().prefix(prefix);
        async move { rodario::nats::NatsBackend::connect(config).await.unwrap() }
    };
    common::run_sequential_and_lock(c, &rt, "nats_cluster", connect, &raw);
    drop(raw);
    drop(rt);
    drop(cluster);
}

criterion_group! {
    name = nats_benches;
    config = common::config();
    targets = benches
}
criterion_main!(nats_benches);
