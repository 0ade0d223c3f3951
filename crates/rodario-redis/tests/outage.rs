//! A real outage: the Redis server is SIGKILLed under steady traffic and restarted 4 s
//! later. Every call issued before, during and after ends within its deadline, and once the
//! server answers again, direct calls, registrations and a cluster gather over every member
//! work again within a second, with nobody doing anything.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::RedisServer;
use rodario_core::testkit::actors::{Counter, CounterCluster, CounterProxy};
use rodario_core::Node;
use tokio::time::Instant;

/// The callers' deadline.
const DEADLINE: Duration = Duration::from_secs(2);

/// How late past the deadline a call may end.
const SLACK: Duration = Duration::from_millis(100);

/// How long the server stays dead.
const OUTAGE: Duration = Duration::from_secs(4);

async fn node(server: &RedisServer) -> Node {
    // The backend's own command timeout (5 s) is longer than the calls' deadline: the
    // deadline must win.
    let backend = server.config("outage").connect().await.unwrap();
    Node::builder(backend).call_timeout(DEADLINE).build()
}

/// One call's fate: when it was issued (since the test began), how long it took, and
/// whether it succeeded.
struct Outcome {
    issued: Duration,
    took: Duration,
    ok: bool,
}

/// Issues `call` back to back (with a short pause) until `stop`, recording every outcome.
async fn steady<F, Fut>(began: Instant, stop: Arc<AtomicBool>, mut call: F) -> Vec<Outcome>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut outcomes = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let issued = began.elapsed();
        let started = Instant::now();
        let ok = call().await;
        outcomes.push(Outcome {
            issued,
            took: started.elapsed(),
            ok,
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outcomes
}

/// One direct call, sent and answered.
async fn call_once(proxy: &CounterProxy) -> bool {
    match proxy.add(1).await {
        Ok(pending) => pending.await.is_ok(),
        Err(_) => false,
    }
}

/// Polls `check` until it holds; returns how long that took, or `None` after `within`.
async fn time_until<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_end_by_their_deadline_through_a_restart_and_everything_comes_back() {
    let mut server = RedisServer::private(&[]);
    let host_a = node(&server).await;
    let host_b = node(&server).await;
    let caller = node(&server).await;
    let a = host_a
        .spawn(Counter::named("a"))
        .uuid("a")
        .start()
        .await
        .unwrap();
    let b = host_b
        .spawn(Counter::named("b"))
        .uuid("b")
        .start()
        .await
        .unwrap();
    a.join("workers").await.unwrap();
    b.join("workers").await.unwrap();
    let proxy: CounterProxy = caller.registry().proxy("a").unwrap();
    let cluster: CounterCluster = caller.cluster("workers").unwrap();
    assert_eq!(cluster.add(0).await.unwrap().all().await.unwrap().len(), 2);

    let began = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let direct = tokio::spawn(steady(began, stop.clone(), {
        let proxy = proxy.clone();
        move || {
            let proxy = proxy.clone();
            async move { call_once(&proxy).await }
        }
    }));
    let gathers = tokio::spawn(steady(began, stop.clone(), {
        let cluster = cluster.clone();
        move || {
            let cluster = cluster.clone();
            async move {
                match cluster.add(0).await {
                    Ok(gather) => gather.all().await.is_ok_and(|replies| replies.len() == 2),
                    Err(_) => false,
                }
            }
        }
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = began.elapsed();
    tokio::task::block_in_place(|| server.stop());
    tokio::time::sleep(OUTAGE).await;
    tokio::task::block_in_place(|| server.restart());
    let back = began.elapsed();

    let registry = caller.registry();
    let recovered = |what: &'static str, took: Option<Duration>| {
        let took = took.unwrap_or_else(|| panic!("{what}: not back within 1 s of the restart"));
        eprintln!("{what}: back {took:?} after the server answered again");
        took
    };
    recovered(
        "direct calls",
        time_until(Duration::from_secs(1), || async { call_once(&proxy).await }).await,
    );
    recovered(
        "registrations",
        time_until(Duration::from_secs(1), || async {
            let listed = registry.actors().await;
            listed.is_ok_and(|actors| actors.contains("a") && actors.contains("b"))
        })
        .await,
    );
    let attempt = std::sync::atomic::AtomicUsize::new(0);
    recovered(
        "registering a new actor",
        time_until(Duration::from_secs(1), || async {
            let n = attempt.fetch_add(1, Ordering::Relaxed);
            registry.register(&format!("new{n}")).await.is_ok()
        })
        .await,
    );
    recovered(
        "a gather over every member",
        time_until(Duration::from_secs(1), || async {
            match cluster.add(0).await {
                Ok(gather) => gather.all().await.is_ok_and(|replies| replies.len() == 2),
                Err(_) => false,
            }
        })
        .await,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = direct.await.unwrap();
    outcomes.extend(gathers.await.unwrap());

    let longest = outcomes.iter().map(|o| o.took).max().unwrap();
    let during: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.issued >= killed && o.issued < back)
        .collect();
    let longest_during = during.iter().map(|o| o.took).max().unwrap_or_default();
    eprintln!(
        "{} calls ({} issued during the {OUTAGE:?} outage, {} failed); longest {longest:?}, \
         longest issued during the outage {longest_during:?}",
        outcomes.len(),
        during.len(),
        outcomes.iter().filter(|o| !o.ok).count(),
    );
    for outcome in &outcomes {
        assert!(
            outcome.took <= DEADLINE + SLACK,
            "a call issued {:?} after the start took {:?}, past its deadline of {DEADLINE:?}",
            outcome.issued,
            outcome.took
        );
    }
    assert!(!during.is_empty(), "no call was issued during the outage");
    assert!(
        outcomes.iter().any(|o| o.issued > back && o.ok),
        "no call succeeded after the restart"
    );
}
