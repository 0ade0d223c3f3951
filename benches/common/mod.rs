//! What the network benches (`redis.rs`, `nats.rs`) share: the runtime, the criterion
//! settings, and the rodario side of every benchmark, which is the same code
//! on each backend. Each bench file brings its backend's connection and its [`Raw`]
//! baseline, written on the same client library with no framework.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::future::join_all;
use rodario::backend::Backend;
use rodario::Node;
use rodario_core::testkit::actors::{Counter, CounterCluster, CounterProxy};
use rodario_core::testkit::unique;
use tokio::runtime::Runtime;

/// Calls in flight at once in `call_inflight64`.
pub const IN_FLIGHT: usize = 64;

/// The argument size of `call_sequential_64k`.
pub const LARGE: usize = 64 * 1024;

/// Short warm-up and measurement, as in `benches/memory.rs`, so that `-- --quick` runs a
/// whole backend in a minute or two on 2 cores.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// The runtime of both sides: 2 workers, as a small service would run a network client.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The 64 KiB argument: every byte value in turn, as arbitrary binary data would have.
pub fn large_payload() -> Vec<u8> {
    (0..LARGE).map(|i| i as u8).collect()
}

/// A hand-written request/reply and lock on the backend's own client: the floor rodario is
/// judged against. Its server side (an echo keeping a running total, like
/// [`Counter::add`], and answering a payload's length, like [`Counter::size`]) runs on its
/// own connection, as another process would.
pub trait Raw {
    /// Sends `n` and returns the echo's new total.
    fn add(&self, n: u64) -> impl Future<Output = u64>;

    /// [`IN_FLIGHT`] calls of `add(1)` at once: no request waits for another's reply.
    fn add_in_flight(&self) -> impl Future<Output = ()>;

    /// Sends `data` and returns its length as the echo measured it.
    fn size(&self, data: &Bytes) -> impl Future<Output = u64>;

    /// Takes an uncontended lease with a unique token, then releases it if still held.
    fn lock(&self) -> impl Future<Output = ()>;
}

/// Runs every benchmark of `backend`: the raw baseline `raw` beside rodario nodes made by
/// `connect(prefix)` (each call opens a new connection, as another process would; calls
/// with the same prefix see each other).
pub fn run<C, F>(c: &mut Criterion, rt: &Runtime, backend: &str, connect: C, raw: &impl Raw)
where
    C: Fn(String) -> F,
    F: Future<Output = Backend>,
{
    run_sequential_and_lock(c, rt, backend, &connect, raw);
    let nodes = rt.block_on(pair(&connect));
    call_inflight64(c, rt, backend, raw, &nodes.proxy);
    call_sequential_64k(c, rt, backend, raw, &nodes.proxy);
    rt.block_on(nodes.shutdown());
    cluster_gather(c, rt, backend, &connect);
}

/// Runs the sequential calls and the lock of `backend`, the part of [`run`] that a
/// deployment whose other figures follow from those (such as a cluster) runs alone.
pub fn run_sequential_and_lock<C, F>(
    c: &mut Criterion,
    rt: &Runtime,
    backend: &str,
    connect: C,
    raw: &impl Raw,
) where
    C: Fn(String) -> F,
    F: Future<Output = Backend>,
{
    let nodes = rt.block_on(pair(&connect));
    call_sequential(c, rt, backend, raw, &nodes.proxy);
    rt.block_on(nodes.shutdown());
    lock(c, rt, backend, raw, &connect);
}

/// One-way calls, one after another: the raw side publishes with `raw_tell` to a
/// subscriber that answers nothing; rodario's `tell_add` does the same through a proxy.
/// Both wait for the broker to take each (on Redis, its PUBLISH reply with the receiver
/// count, which `tell` turns into `InvalidActor` when it is 0).
pub fn tell<C, F, T, TF>(c: &mut Criterion, rt: &Runtime, backend: &str, connect: &C, raw_tell: T)
where
    C: Fn(String) -> F,
    F: Future<Output = Backend>,
    T: Fn() -> TF,
    TF: Future<Output = ()>,
{
    let nodes = rt.block_on(pair(connect));
    let mut group = c.benchmark_group("tell");
    group.bench_function(BenchmarkId::new(backend, "raw"), |b| {
        b.to_async(rt).iter(&raw_tell)
    });
    group.bench_function(BenchmarkId::new(backend, "rodario"), |b| {
        b.to_async(rt)
            .iter(|| async { nodes.proxy.tell_add(1).await.unwrap() })
    });
    group.finish();
    rt.block_on(nodes.shutdown());
}

/// A host node with one counter actor, and a proxy to it from a second node with a
/// connection of its own.
struct Pair {
    host: Node,
    caller: Node,
    proxy: CounterProxy,
}

impl Pair {
    async fn shutdown(self) {
        self.caller.shutdown().await;
        self.host.shutdown().await;
    }
}

async fn pair<C, F>(connect: &C) -> Pair
where
    C: Fn(String) -> F,
    F: Future<Output = Backend>,
{
    let prefix = unique("pair");
    let host = Node::new(connect(prefix.clone()).await);
    let caller = Node::new(connect(prefix).await);
    let actor = host
        .spawn(Counter::named("bench"))
        .uuid("bench")
        .start()
        .await
        .unwrap();
    drop(actor);
    let proxy = caller.registry().get_proxy("bench").await.unwrap();
    Pair {
        host,
        caller,
        proxy,
    }
}

fn call_sequential(
    c: &mut Criterion,
    rt: &Runtime,
    backend: &str,
    raw: &impl Raw,
    proxy: &CounterProxy,
) {
    let mut group = c.benchmark_group("call_sequential");
    group.bench_function(BenchmarkId::new(backend, "raw"), |b| {
        b.to_async(rt).iter(|| raw.add(1))
    });
    group.bench_function(BenchmarkId::new(backend, "rodario"), |b| {
        b.to_async(rt)
            .iter(|| async { proxy.add(1).await.unwrap().await.unwrap() })
    });
    group.finish();
}

/// Unlike `benches/memory.rs`, which awaits each send before the next, both sides here
/// start all 64 calls at once: over a network each send waits for the broker (rodario's
/// for its delivery check, the raw client's for the PUBLISH reply), and awaiting those one
/// by one would measure 64 round trips rather than 64 calls in flight.
fn call_inflight64(
    c: &mut Criterion,
    rt: &Runtime,
    backend: &str,
    raw: &impl Raw,
    proxy: &CounterProxy,
) {
    let mut group = c.benchmark_group("call_inflight64");
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    group.bench_function(BenchmarkId::new(backend, "raw"), |b| {
        b.to_async(rt).iter(|| raw.add_in_flight())
    });
    group.bench_function(BenchmarkId::new(backend, "rodario"), |b| {
        b.to_async(rt).iter(|| {
            join_all((0..IN_FLIGHT).map(|_| async { proxy.add(1).await.unwrap().await.unwrap() }))
        })
    });
    group.finish();
}

/// rodario's side clones the 64 KiB `Vec` each call (the proxy takes it by value); a
/// memcpy of that size is a few microseconds, small beside a round trip to the broker.
/// Through serde a `Vec<u8>` is a MessagePack array of small integers, one or two bytes
/// each: about 96 KiB with this payload, well under the 1 MiB frame limit.
fn call_sequential_64k(
    c: &mut Criterion,
    rt: &Runtime,
    backend: &str,
    raw: &impl Raw,
    proxy: &CounterProxy,
) {
    let bytes = Bytes::from(large_payload());
    // As bytes (MessagePack bin), the way a user should pass a blob: see `Counter::size`.
    let data = serde_bytes::ByteBuf::from(large_payload());
    let mut group = c.benchmark_group("call_sequential_64k");
    group.throughput(Throughput::Bytes(LARGE as u64));
    group.bench_function(BenchmarkId::new(backend, "raw"), |b| {
        b.to_async(rt).iter(|| async {
            assert_eq!(raw.size(&bytes).await, LARGE as u64);
        })
    });
    group.bench_function(BenchmarkId::new(backend, "rodario"), |b| {
        b.to_async(rt).iter(|| async {
            let size = proxy.size(data.clone()).await.unwrap().await.unwrap();
            assert_eq!(size, LARGE);
        })
    });
    group.finish();
}

/// `members` counters joined to one channel, on one host node, or spread over two host
/// nodes (alternately) from 4 members on, as two processes would hold them; the caller is
/// a third node.
fn cluster_gather<C, F>(c: &mut Criterion, rt: &Runtime, backend: &str, connect: &C)
where
    C: Fn(String) -> F,
    F: Future<Output = Backend>,
{
    let mut group = c.benchmark_group("cluster_gather");
    for members in [1usize, 4, 16] {
        let (hosts, caller) = rt.block_on(async {
            let prefix = unique("gather");
            let mut hosts = vec![Node::new(connect(prefix.clone()).await)];
            if members > 1 {
                hosts.push(Node::new(connect(prefix.clone()).await));
            }
            for i in 0..members {
                let actor = hosts[i % hosts.len()]
                    .spawn(Counter::named(&format!("m{i}")))
                    .start()
                    .await
                    .unwrap();
                actor.join("bench").await.unwrap();
            }
            (hosts, Node::new(connect(prefix).await))
        });
        let cluster: CounterCluster = caller.cluster("bench").unwrap();
        group.bench_function(BenchmarkId::new(backend, members), |b| {
            b.to_async(rt).iter(|| async {
                let replies = cluster.add(1).await.unwrap().all().await.unwrap();
                assert_eq!(replies.len(), members);
            })
        });
        rt.block_on(async {
            caller.shutdown().await;
            for host in hosts {
                host.shutdown().await;
            }
        });
    }
    group.finish();
}

fn lock<C, F>(c: &mut Criterion, rt: &Runtime, backend: &str, raw: &impl Raw, connect: &C)
where
    C: Fn(String) -> F,
    F: Future<Output = Backend>,
{
    let mut group = c.benchmark_group("lock");
    group.bench_function(BenchmarkId::new(backend, "raw"), |b| {
        b.to_async(rt).iter(|| raw.lock())
    });
    let node = rt.block_on(async { Node::new(connect(unique("lock")).await) });
    group.bench_function(BenchmarkId::new(backend, "rodario"), |b| {
        b.to_async(rt).iter(|| async {
            let lease = node.locks().acquire("bench").await.unwrap().unwrap();
            assert!(lease.release().await.unwrap());
        })
    });
    rt.block_on(node.shutdown());
    group.finish();
}
