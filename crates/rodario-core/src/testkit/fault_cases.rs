//! Conformance cases for what a caller can rely on when the connection fails: each runs the
//! backend under test behind [`Faults`], so an outage, a stalled broker or a lost frame is
//! injected in milliseconds, the same way on every backend.

use std::future::IntoFuture;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::actors::{Counter, CounterCluster, CounterProxy};
use super::faults::{Faults, Operation, Outage};
use super::{eventually, TestBroker};
use crate::backend::Group;
use crate::error::{BackendErrorKind, Error};
use crate::handle::ActorHandle;
use crate::name::ClusterName;
use crate::node::Node;

/// The deadline of the calls these cases make: short, since every case waits for it.
const DEADLINE: Duration = Duration::from_millis(400);

/// How late past its deadline an operation may end on a loaded CI machine.
const SLACK: Duration = Duration::from_millis(300);

/// A stall far longer than any deadline here.
const STALL: Duration = Duration::from_secs(60);

async fn node_on(broker: &dyn TestBroker, faults: Option<&Faults>) -> Node {
    let backend = broker.connect("a").await;
    let backend = match faults {
        Some(faults) => faults.wrap(backend),
        None => backend,
    };
    Node::builder(backend).call_timeout(DEADLINE).build()
}

/// A node (behind `faults`, if given) hosting the actor `c` (a `Counter`), joined to the
/// cluster channel `workers`.
async fn host_with_a_worker(
    broker: &dyn TestBroker,
    faults: Option<&Faults>,
) -> (Node, ActorHandle<Counter>) {
    let host = node_on(broker, faults).await;
    let actor = host
        .spawn(Counter::named("c"))
        .uuid("c")
        .start()
        .await
        .unwrap();
    actor.join("workers").await.unwrap();
    (host, actor)
}

/// Runs `operation` and returns its result with how long it took.
async fn timed<T>(operation: impl IntoFuture<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let result = operation.await;
    (result, started.elapsed())
}

fn assert_by_deadline(what: &str, took: Duration) {
    assert!(
        took < DEADLINE + SLACK,
        "{what} took {took:?}, past its deadline of {DEADLINE:?}"
    );
}

fn assert_connection_error<T: std::fmt::Debug>(what: &str, result: crate::Result<T>) {
    match result {
        Err(Error::Backend(e)) if e.kind() == BackendErrorKind::Connection => {}
        other => panic!("{what}: expected a connection error, got {other:?}"),
    }
}

fn assert_timeout<T: std::fmt::Debug>(what: &str, result: crate::Result<T>) {
    assert!(
        matches!(result, Err(Error::Timeout { .. })),
        "{what}: expected a timeout, got {result:?}"
    );
}

/// A call waiting for its reply fails with a connection error as soon as the caller's
/// connection drops (its reply would be lost), not at its deadline.
pub async fn disconnect_fails_calls_in_flight(broker: &dyn TestBroker) {
    let host = node_on(broker, None).await;
    let faults = Faults::new();
    let backend = faults.wrap(broker.connect("a").await);
    let caller = Node::builder(backend)
        .call_timeout(Duration::from_secs(30))
        .build();
    let _actor = host
        .spawn(Counter::named("c"))
        .uuid("c")
        .start()
        .await
        .unwrap();
    let proxy = caller.registry().get_proxy::<CounterProxy>("c").await;
    let proxy = proxy.unwrap();
    let slow = proxy.sleep_ms(1_500).await.unwrap();
    faults.cut();
    let (result, took) = timed(slow).await;
    assert_connection_error("a call in flight when the connection dropped", result);
    assert!(took < Duration::from_secs(1), "it failed after {took:?}");
    faults.restore();
    assert_eq!(proxy.add(1).await.unwrap().await.unwrap(), 1);
}

/// While the connection is down, direct and cluster calls fail at once with a connection
/// error saying they were not sent, whether the backend fails or queues its commands
/// meanwhile; once it is back, calls work again.
pub async fn calls_fail_at_once_while_disconnected(broker: &dyn TestBroker) {
    let _host = host_with_a_worker(broker, None).await;
    let faults = Faults::new();
    let caller = node_on(broker, Some(&faults)).await;
    let proxy = caller.registry().get_proxy::<CounterProxy>("c").await;
    let proxy = proxy.unwrap();
    let cluster: CounterCluster = caller.cluster("workers").unwrap();
    for outage in [Outage::FailFast, Outage::Hang] {
        faults.outage(outage);
        faults.cut();
        let (result, took) = timed(proxy.add(1)).await;
        assert_connection_error("a call while disconnected", result);
        assert!(took < SLACK, "{outage:?}: the call failed after {took:?}");
        let (result, took) = timed(cluster.add(1)).await;
        assert_connection_error("a cluster call while disconnected", result);
        assert!(
            took < SLACK,
            "{outage:?}: the cluster call failed after {took:?}"
        );
        faults.restore();
        proxy.add(0).await.unwrap().await.unwrap();
        assert_eq!(cluster.add(0).await.unwrap().all().await.unwrap().len(), 1);
    }
}

/// A broker that does not take a call (a stalled publish, a reply channel that cannot be
/// subscribed) ends the call at its deadline with `Timeout`, not at the backend's own
/// command timeout; so does a cluster call.
pub async fn stalled_broker_ends_calls_by_deadline(broker: &dyn TestBroker) {
    let _host = host_with_a_worker(broker, None).await;

    let faults = Faults::new();
    let caller = node_on(broker, Some(&faults)).await;
    faults.delay(Operation::Subscribe, STALL);
    let proxy: CounterProxy = caller.registry().proxy("c").unwrap();
    let (result, took) = timed(proxy.add(1)).await;
    assert_timeout("a first call whose reply channel stalls", result);
    assert_by_deadline("a first call whose reply channel stalls", took);
    faults.delay(Operation::Subscribe, Duration::ZERO);

    proxy.add(0).await.unwrap().await.unwrap();
    faults.delay(Operation::Publish, STALL);
    let (result, took) = timed(proxy.add(1)).await;
    assert_timeout("a call whose publish stalls", result);
    assert_by_deadline("a call whose publish stalls", took);
    let cluster: CounterCluster = caller.cluster("workers").unwrap();
    let (result, took) = timed(cluster.add(1)).await;
    assert_timeout("a cluster call whose publish stalls", result);
    assert_by_deadline("a cluster call whose publish stalls", took);
    faults.delay(Operation::Publish, Duration::ZERO);
    assert_eq!(proxy.add(0).await.unwrap().await.unwrap(), 0);
}

/// A reply (or a cluster node's count of members) lost on the way ends the call at its
/// deadline with `Timeout`; the next call is unaffected.
pub async fn lost_frames_end_calls_by_deadline(broker: &dyn TestBroker) {
    let _host = host_with_a_worker(broker, None).await;
    let faults = Faults::new();
    let caller = node_on(broker, Some(&faults)).await;
    let proxy: CounterProxy = caller.registry().proxy("c").unwrap();
    proxy.add(0).await.unwrap().await.unwrap();

    faults.drop_next_frames(1);
    let (result, took) = timed(async { proxy.add(1).await?.await }).await;
    assert_timeout("a call whose reply was lost", result);
    assert_by_deadline("a call whose reply was lost", took);
    assert_eq!(faults.frames_dropped(), 1);

    let cluster: CounterCluster = caller.cluster("workers").unwrap();
    faults.drop_next_frames(1);
    let (result, took) = timed(async {
        let mut gather = cluster.add(1).await?;
        gather.expected().await?;
        let replies: Vec<_> = gather.collect().await;
        replies.into_iter().collect::<crate::Result<Vec<u64>>>()
    })
    .await;
    assert_timeout("a cluster call whose first frame back was lost", result);
    assert_by_deadline("a cluster call whose first frame back was lost", took);
    assert_eq!(proxy.add(0).await.unwrap().await.unwrap(), 2);
}

/// Registry reads and writes and lease operations are bounded by the node's call timeout:
/// a stalled broker ends them with a connection error, never a wait on the backend's own
/// timeout.
pub async fn registry_and_lease_operations_end_by_deadline(broker: &dyn TestBroker) {
    let faults = Faults::new();
    let node = node_on(broker, Some(&faults)).await;
    node.registry().register("r").await.unwrap();
    let lease = node
        .locks()
        .acquire("l")
        .await
        .unwrap()
        .expect("a free lease");
    faults.delay(Operation::Presence, STALL);
    faults.delay(Operation::Locks, STALL);
    let registry = node.registry();
    let (result, took) = timed(registry.actors()).await;
    assert_connection_error("listing the actors", result);
    assert_by_deadline("listing the actors", took);
    let (result, took) = timed(registry.exists("r")).await;
    assert_connection_error("looking up an actor", result);
    assert_by_deadline("looking up an actor", took);
    let (result, took) = timed(registry.register("r2")).await;
    assert!(
        matches!(
            result,
            Err(Error::Registration { .. }) | Err(Error::Backend(_))
        ),
        "registering: {result:?}"
    );
    assert_by_deadline("registering", took);
    let (result, took) = timed(node.locks().acquire("m")).await;
    assert_connection_error("acquiring a lease", result);
    assert_by_deadline("acquiring a lease", took);
    let (result, took) = timed(lease.renew(Duration::from_secs(3))).await;
    assert_connection_error("renewing a lease", result);
    assert_by_deadline("renewing a lease", took);
    let (result, took) = timed(lease.release()).await;
    assert_connection_error("releasing a lease", result);
    assert_by_deadline("releasing a lease", took);
}

/// A `singular` method whose lease the broker is slow to grant gives up at its caller's
/// deadline: the cluster call ends by then, and the actor is free for its next call
/// instead of waiting on the broker.
pub async fn singular_never_waits_past_the_callers_deadline(broker: &dyn TestBroker) {
    let faults = Faults::new();
    let _host = host_with_a_worker(broker, Some(&faults)).await;
    let caller = node_on(broker, None).await;
    let cluster: CounterCluster = caller.cluster("workers").unwrap();
    faults.delay(Operation::Locks, STALL);
    let (result, took) = timed(async { cluster.claim().await?.all().await }).await;
    assert!(result.is_err(), "a claim with no lease ran: {result:?}");
    assert_by_deadline("a singular cluster call", took);
    let proxy: CounterProxy = caller.registry().proxy("c").unwrap();
    let proxy = proxy.with_timeout(Duration::from_secs(5));
    let (result, took) = timed(async { proxy.claims().await?.await }).await;
    assert_eq!(result.unwrap(), 0, "the claim must not have run");
    assert!(
        took < DEADLINE + SLACK,
        "the actor answered its next call after {took:?}: it waited on the broker"
    );
}

/// When the connection comes back after an outage in which the broker lost the node's
/// registrations (a restarted Redis forgets everything), the node restores them at once,
/// not at its next renewal.
pub async fn registrations_are_restored_on_reconnect(broker: &dyn TestBroker) {
    let faults = Faults::new();
    // Renewals every 20 s: whatever comes back within the case's second came back because
    // of the reconnect.
    let host = Node::builder(faults.wrap(broker.connect("a").await))
        .call_timeout(DEADLINE)
        .liveness_ttl(Duration::from_secs(60))
        .build();
    let actor = host
        .spawn(Counter::named("c"))
        .uuid("c")
        .start()
        .await
        .unwrap();
    actor.join("workers").await.unwrap();
    let other = broker.connect("a").await;
    let registry = other.presence();
    let channel = ClusterName::new("workers").unwrap();
    let counts = other.transport().counts_receivers();
    faults.cut();
    registry.remove(Group::Actors, "c", None).await.unwrap();
    if !counts {
        let removed = registry
            .remove(Group::Members(&channel), host.id().as_str(), None)
            .await
            .unwrap();
        assert!(removed, "the host's membership was not recorded");
    }
    assert!(!registry.contains(Group::Actors, "c").await.unwrap());
    faults.restore();
    let restored = eventually(Duration::from_secs(1), || async {
        registry.contains(Group::Actors, "c").await.unwrap()
            && (counts
                || registry
                    .contains(Group::Members(&channel), host.id().as_str())
                    .await
                    .unwrap())
    })
    .await;
    assert!(
        restored,
        "registrations not restored within 1 s of reconnecting"
    );
    let caller = node_on(broker, None).await;
    let cluster: CounterCluster = caller.cluster("workers").unwrap();
    assert_eq!(cluster.add(1).await.unwrap().all().await.unwrap(), vec![1]);
}
