//! The NATS backend on a cluster of three servers with KV buckets of 3 replicas: the whole
//! conformance suite on one cluster shared by the binary's tests, and a server the nodes
//! are connected to SIGKILLed under steady calls, on a cluster of its own.

use std::collections::BTreeSet;
use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rodario_core::error::{BackendErrorKind, Error};
use rodario_core::node::Node;
use rodario_core::testkit::actors::{Counter, CounterCluster, CounterProxy};
use rodario_core::testkit::outage::{KillableBroker, DEADLINE, SLACK};
use rodario_core::testkit::{eventually, TestBroker};
use rodario_nats::testkit::NatsCluster;
use tokio::time::Instant;

mod conformance {
    rodario_core::conformance_suite!(async { rodario_nats::testkit::NatsCluster::shared().await });
}

/// How soon after the kill calls must succeed again.
const FAILOVER: Duration = Duration::from_secs(2);

/// How soon after the kill the registry and leases must answer again. They are JetStream
/// streams with 3 replicas: a follower waits 4 to 9 s for a lost leader before it stands for
/// election (nats-server's raft timeouts), so this allows one full wait, a second round and
/// the time to answer.
const JETSTREAM_FAILOVER: Duration = Duration::from_secs(20);

/// Calls through the kill of the first server.
const CALLS: usize = 1000;

/// One call's fate: when it was issued (from the start of the traffic), how long it took.
struct Outcome {
    issued: Duration,
    took: Duration,
    ok: bool,
}

async fn direct_call(proxy: &CounterProxy) -> bool {
    match proxy.add(1).await {
        Ok(pending) => pending.await.is_ok(),
        Err(_) => false,
    }
}

async fn gather_all(cluster: &CounterCluster, members: usize) -> bool {
    match cluster.add(0).await {
        Ok(gather) => gather
            .all()
            .await
            .is_ok_and(|replies| replies.len() == members),
        Err(_) => false,
    }
}

/// `CALLS` direct calls, back to back with a short pause, from a node connected to the
/// first server to an actor on another node connected to it too; the first server is
/// SIGKILLed after a second. No call outlives its deadline, calls succeed again within
/// `FAILOVER`, the actors stay registered to their node throughout (nothing lapses, and
/// once the registry answers again nobody else can take their names), a lease held across
/// the kill is still held when the locks answer again (within `JETSTREAM_FAILOVER`), and a
/// gather reaches every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_connected_server_keeps_registrations_and_leases() {
    let mut cluster = NatsCluster::start().await;
    let host = node(&cluster).await;
    let member = node(&cluster).await;
    let caller = node(&cluster).await;
    let names = ["a", "b", "c"];
    let mut actors = Vec::new();
    for name in names {
        let actor = host
            .spawn(Counter::named(name))
            .uuid(name)
            .start()
            .await
            .unwrap_or_else(|e| panic!("starting actor {name}: {e}"));
        actors.push(actor);
    }
    actors[0].join("workers").await.unwrap();
    let other = member
        .spawn(Counter::named("d"))
        .uuid("d")
        .start()
        .await
        .unwrap();
    other.join("workers").await.unwrap();
    let lease = host
        .locks()
        .acquire("migrate")
        .expiry(Duration::from_secs(30))
        .await
        .unwrap()
        .expect("nobody holds the lease yet");
    let proxy: CounterProxy = caller.registry().proxy("a").unwrap();
    let workers: CounterCluster = caller.cluster("workers").unwrap();
    assert!(gather_all(&workers, 2).await, "no gather before the kill");

    let began = Instant::now();
    let watching = Arc::new(AtomicBool::new(true));
    // Registrations watched from the caller while the server goes: none may lapse.
    let watcher = tokio::spawn({
        let registry = caller.registry();
        let watching = watching.clone();
        async move {
            let mut missing = BTreeSet::new();
            while watching.load(Ordering::Relaxed) {
                if let Ok(actors) = registry.actors().await {
                    missing.extend(names.iter().filter(|n| !actors.contains(**n)).copied());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            missing
        }
    });
    let mut outcomes = Vec::with_capacity(CALLS);
    let mut killed_at = None;
    for _ in 0..CALLS {
        if killed_at.is_none() && began.elapsed() >= Duration::from_secs(1) {
            killed_at = Some(began.elapsed());
            tokio::task::block_in_place(|| cluster.kill());
        }
        let issued = began.elapsed();
        let started = Instant::now();
        let ok = direct_call(&proxy).await;
        outcomes.push(Outcome {
            issued,
            took: started.elapsed(),
            ok,
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = killed_at.expect("the calls ended before the kill");
    watching.store(false, Ordering::Relaxed);
    let missing = watcher.await.expect("the watcher panicked");

    for outcome in &outcomes {
        assert!(
            outcome.took <= DEADLINE + SLACK,
            "a call issued {:?} into the run took {:?}, past its deadline of {DEADLINE:?}",
            outcome.issued,
            outcome.took
        );
    }
    let back = outcomes
        .iter()
        .find(|o| o.issued >= killed_at && o.ok && outcomes_ok_after(&outcomes, o.issued))
        .map(|o| o.issued + o.took - killed_at)
        .expect("calls did not succeed again after the kill");
    assert!(
        back <= FAILOVER,
        "calls succeeded again {back:?} after the kill, not within {FAILOVER:?}"
    );
    assert!(
        missing.is_empty(),
        "registrations lapsed while the server went: {missing:?}"
    );
    // The registry and the leases live in JetStream, whose streams led by the killed
    // server answer again once they elected another leader.
    let registry = caller.registry();
    for name in names {
        let refused = answered(|| registry.register(name)).await;
        assert!(
            matches!(refused, Err(Error::UuidInUse { .. })),
            "{name} could be registered twice: {refused:?}"
        );
    }
    let renewed = answered(|| lease.renew(Duration::from_secs(30))).await;
    assert!(
        renewed.expect("renewing the lease failed"),
        "the lease held across the kill was lost"
    );
    let taken = answered(|| caller.locks().acquire("migrate").into_future()).await;
    assert!(
        taken.expect("acquiring the lease failed").is_none(),
        "another node took the lease held across the kill"
    );
    let jetstream_back = began.elapsed() - killed_at;
    assert!(
        eventually(Duration::from_secs(2), || gather_all(&workers, 2)).await,
        "no gather reached every member after the kill"
    );
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    let longest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    eprintln!(
        "nats cluster: {CALLS} calls, the connected server killed {killed_at:?} in; {failed} \
         failed, longest {longest:?}, calls succeeded again {back:?} after the kill, the \
         registry and leases answered within {jetstream_back:?} of it"
    );
    for node in [host, member, caller] {
        node.shutdown().await;
    }
}

/// `operation`'s first answer from the broker: it is retried while it fails with a
/// connection error (a stream without a leader yet), for at most `JETSTREAM_FAILOVER`.
async fn answered<T, F>(mut operation: impl FnMut() -> F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>>,
{
    let until = Instant::now() + JETSTREAM_FAILOVER;
    loop {
        match operation().await {
            Err(Error::Backend(e))
                if e.kind() == BackendErrorKind::Connection && Instant::now() < until =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            outcome => return outcome,
        }
    }
}

async fn node(broker: &NatsCluster) -> Node {
    Node::builder(broker.connect("failover").await)
        .call_timeout(DEADLINE)
        .build()
}

/// Whether every call issued from `from` on succeeded: the failover is over.
fn outcomes_ok_after(outcomes: &[Outcome], from: Duration) -> bool {
    outcomes.iter().filter(|o| o.issued >= from).all(|o| o.ok)
}
