//! The memory backend beside its raw baseline: a tokio mpsc request carrying a oneshot
//! reply, the floor any in-process actor framework is judged against.
//!
//! Measured on a current_thread runtime (what `#[tokio::test]` gives users) and, beside
//! it, on a 2-worker multi_thread runtime (`memory_mt`). Run with
//! `cargo bench --bench memory` (add `-- --quick` for a fast pass).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::future::join_all;
use rodario::memory::MemoryBroker;
use rodario::Node;
use rodario_core::testkit::actors::{Counter, CounterCluster, CounterProxy};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

const IN_FLIGHT: usize = 64;

fn runtimes() -> Vec<(&'static str, Runtime)> {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    vec![("memory", current), ("memory_mt", multi)]
}

/// The raw baseline: an echo task answering `u64` requests through oneshot channels.
fn raw_server(rt: &Runtime) -> mpsc::Sender<(u64, oneshot::Sender<u64>)> {
    let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(1024);
    rt.spawn(async move {
        let mut total = 0;
        while let Some((n, reply)) = rx.recv().await {
            total += n;
            let _ = reply.send(total);
        }
    });
    tx
}

/// A host node with one counter actor, and a proxy to it from a second node.
fn rodario_pair(rt: &Runtime) -> (Node, Node, CounterProxy) {
    rt.block_on(async {
        let broker = MemoryBroker::new();
        let host = Node::new(broker.backend());
        let caller = Node::new(broker.backend());
        let actor = host
            .spawn(Counter::named("bench"))
            .uuid("bench")
            .start()
            .await
            .unwrap();
        drop(actor);
        let proxy: CounterProxy = caller.registry().get_proxy("bench").await.unwrap();
        (host, caller, proxy)
    })
}

fn call_sequential(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_sequential");
    for (flavour, rt) in runtimes() {
        let raw = raw_server(&rt);
        group.bench_function(BenchmarkId::new(flavour, "raw"), |b| {
            b.to_async(&rt).iter(|| async {
                let (tx, rx) = oneshot::channel();
                raw.send((1, tx)).await.unwrap();
                rx.await.unwrap()
            })
        });
        let (_host, _caller, proxy) = rodario_pair(&rt);
        group.bench_function(BenchmarkId::new(flavour, "rodario"), |b| {
            b.to_async(&rt)
                .iter(|| async { proxy.add(1).await.unwrap().await.unwrap() })
        });
    }
    group.finish();
}

fn call_inflight64(c: &mut Criterion) {
    let mut group = c.benchmark_group("call_inflight64");
    group.throughput(Throughput::Elements(IN_FLIGHT as u64));
    for (flavour, rt) in runtimes() {
        let raw = raw_server(&rt);
        group.bench_function(BenchmarkId::new(flavour, "raw"), |b| {
            b.to_async(&rt).iter(|| async {
                let mut replies = Vec::with_capacity(IN_FLIGHT);
                for _ in 0..IN_FLIGHT {
                    let (tx, rx) = oneshot::channel();
                    raw.send((1, tx)).await.unwrap();
                    replies.push(rx);
                }
                join_all(replies).await
            })
        });
        let (_host, _caller, proxy) = rodario_pair(&rt);
        group.bench_function(BenchmarkId::new(flavour, "rodario"), |b| {
            b.to_async(&rt).iter(|| async {
                let mut replies = Vec::with_capacity(IN_FLIGHT);
                for _ in 0..IN_FLIGHT {
                    replies.push(proxy.add(1).await.unwrap());
                }
                join_all(replies).await
            })
        });
    }
    group.finish();
}

fn cluster_gather(c: &mut Criterion) {
    let mut group = c.benchmark_group("cluster_gather");
    let (_, rt) = runtimes().remove(0);
    for members in [1usize, 4, 16] {
        let (host, caller) = rt.block_on(async {
            let broker = MemoryBroker::new();
            let host = Node::new(broker.backend());
            let caller = Node::new(broker.backend());
            for i in 0..members {
                let actor = host
                    .spawn(Counter::named(&format!("m{i}")))
                    .start()
                    .await
                    .unwrap();
                actor.join("bench").await.unwrap();
            }
            (host, caller)
        });
        let cluster: CounterCluster = caller.cluster("bench").unwrap();
        group.bench_function(BenchmarkId::new("memory", members), |b| {
            b.to_async(&rt).iter(|| async {
                let replies = cluster.add(1).await.unwrap().all().await.unwrap();
                assert_eq!(replies.len(), members);
            })
        });
        drop(host);
    }
    group.finish();
}

/// One-way calls: the raw side sends on the channel without a reply slot; rodario's
/// `tell_add` publishes a call that wants no reply.
fn tell(c: &mut Criterion) {
    let mut group = c.benchmark_group("tell");
    for (flavour, rt) in runtimes() {
        let raw = raw_tell_server(&rt);
        group.bench_function(BenchmarkId::new(flavour, "raw"), |b| {
            b.to_async(&rt)
                .iter(|| async { raw.send(1).await.unwrap() })
        });
        let (_host, _caller, proxy) = rodario_pair(&rt);
        group.bench_function(BenchmarkId::new(flavour, "rodario"), |b| {
            b.to_async(&rt)
                .iter(|| async { proxy.tell_add(1).await.unwrap() })
        });
    }
    group.finish();
}

/// A task that adds what it receives and answers nothing.
fn raw_tell_server(rt: &Runtime) -> mpsc::Sender<u64> {
    let (tx, mut rx) = mpsc::channel::<u64>(1024);
    rt.spawn(async move {
        let mut total = 0u64;
        while let Some(n) = rx.recv().await {
            total = total.wrapping_add(n);
        }
        total
    });
    tx
}

fn lock(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock");
    let (_, rt) = runtimes().remove(0);
    let raw: Mutex<HashMap<String, (String, tokio::time::Instant)>> = Mutex::new(HashMap::new());
    group.bench_function(BenchmarkId::new("memory", "raw"), |b| {
        b.to_async(&rt).iter(|| async {
            let expires = tokio::time::Instant::now() + Duration::from_secs(3);
            let key = "global.lock:bench".to_owned();
            // A token as unique as rodario's, so both sides pay for one.
            let token = uuid::Uuid::new_v4().simple().to_string();
            let taken = {
                let mut locks = raw.lock().unwrap();
                let free = locks
                    .get(&key)
                    .is_none_or(|(_, e)| *e <= tokio::time::Instant::now());
                if free {
                    locks.insert(key.clone(), (token.clone(), expires));
                }
                free
            };
            assert!(taken);
            let mut locks = raw.lock().unwrap();
            if locks.get(&key).is_some_and(|(t, _)| *t == token) {
                locks.remove(&key);
            }
        })
    });
    let node = Node::new(MemoryBroker::new().backend());
    group.bench_function(BenchmarkId::new("memory", "rodario"), |b| {
        b.to_async(&rt).iter(|| async {
            let lease = node.locks().acquire("bench").await.unwrap().unwrap();
            assert!(lease.release().await.unwrap());
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = call_sequential, call_inflight64, cluster_gather, tell, lock
}
criterion_main!(benches);
