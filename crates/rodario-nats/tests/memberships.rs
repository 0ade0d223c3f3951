//! Cluster calls count a channel's members from the connection's memberships view (see
//! `src/view.rs`): it costs no KV read once caught up, sees joins made through the same
//! connection at once and others' within the consumer's delay, drops a member whose node
//! died when its lease runs out, and keeps answering through a server restart.

use std::time::Duration;

use rodario_core::node::Node;
use rodario_core::testkit::actors::{Counter, CounterCluster};
use rodario_core::testkit::server::free_port;
use rodario_core::testkit::{eventually, until_ok};
use rodario_core::{ActorHandle, Error};
use rodario_nats::testkit::{messages_in, NatsServer};
use rodario_nats::NatsBackend;
use tokio::time::Instant;

const TTL: Duration = Duration::from_millis(900);

/// How soon another node's join or leave must show in a cluster call.
const WATCH_DELAY: Duration = Duration::from_secs(1);

/// Short, so that a call that counted a dead node's member (and waits for its answer) ends
/// soon.
const CALL_TIMEOUT: Duration = Duration::from_millis(800);

const CHANNEL: &str = "viewed";

async fn node(server: &NatsServer) -> Node {
    Node::builder(NatsBackend::connect(server.config()).await.unwrap())
        .liveness_ttl(TTL)
        .call_timeout(CALL_TIMEOUT)
        .build()
}

async fn member(node: &Node, name: &str) -> ActorHandle<Counter> {
    let actor = node.spawn(Counter::named(name)).start().await.unwrap();
    actor.join(CHANNEL).await.unwrap();
    actor
}

/// The members a cluster call expects replies from: it fails (times out) while it counts a
/// member whose node does not answer.
async fn expected(cluster: &CounterCluster) -> Result<usize, Error> {
    cluster.name().await?.expected().await
}

/// Whether a cluster call sees `count` members within `within`.
async fn sees(cluster: &CounterCluster, count: usize, within: Duration) -> bool {
    eventually(within, || async {
        expected(cluster).await.ok() == Some(count)
    })
    .await
}

/// Whether, within a few seconds, a run of cluster calls to one member costs the server no
/// more than the calls' own messages (the publish, the delivery check's marker, the
/// member's expect frame and reply: 4 a call) and the nodes' lease renewals; a listing
/// would add a stream info and two reads a call (7 a call).
async fn calls_read_no_kv(cluster: &CounterCluster, monitor_port: u16) -> bool {
    const CALLS: u64 = 40;
    eventually(Duration::from_secs(5), || async {
        let before = messages_in(monitor_port).await;
        for _ in 0..CALLS {
            assert_eq!(expected(cluster).await.unwrap(), 1);
        }
        let during = messages_in(monitor_port).await - before;
        during <= CALLS * 5
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_calls_see_joins_leaves_and_dead_nodes() {
    let monitor_port = free_port().unwrap();
    let server = NatsServer::private(&["-m", &monitor_port.to_string()]);
    let (host, caller) = (node(&server).await, node(&server).await);
    let _first = member(&host, "first").await;
    let cluster: CounterCluster = caller.cluster(CHANNEL).unwrap();
    // The first call starts the view and reads the registry.
    assert_eq!(expected(&cluster).await.unwrap(), 1);
    assert!(calls_read_no_kv(&cluster, monitor_port).await);

    // Another node's join shows within the consumer's delay, and its leave too.
    let other = node(&server).await;
    let second = member(&other, "second").await;
    assert!(
        sees(&cluster, 2, WATCH_DELAY).await,
        "the join did not show"
    );
    second.part(CHANNEL).await.unwrap();
    assert!(
        sees(&cluster, 1, WATCH_DELAY).await,
        "the leave did not show"
    );

    // A join through the calling connection shows in its next call.
    let own = member(&caller, "own").await;
    assert_eq!(expected(&cluster).await.unwrap(), 2);
    assert!(own.part(CHANNEL).await.unwrap());
    assert_eq!(expected(&cluster).await.unwrap(), 1);

    // A node that dies keeps its entry; its lease runs out, with no message to tell.
    let _third = member(&other, "third").await;
    assert!(sees(&cluster, 2, WATCH_DELAY).await);
    other.simulate_crash().await;
    let crashed = Instant::now();
    assert!(
        sees(&cluster, 1, TTL * 2 + WATCH_DELAY).await,
        "the dead node still counted {:?} after its crash",
        crashed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_view_follows_the_registry_through_a_server_restart() {
    let monitor_port = free_port().unwrap();
    let mut server = NatsServer::private(&["-m", &monitor_port.to_string()]);
    let (host, caller) = (node(&server).await, node(&server).await);
    let _first = member(&host, "first").await;
    let cluster: CounterCluster = caller.cluster(CHANNEL).unwrap();
    assert_eq!(expected(&cluster).await.unwrap(), 1);
    assert!(calls_read_no_kv(&cluster, monitor_port).await);

    server.stop();
    server.restart();
    let count = until_ok(
        Duration::from_secs(15),
        "a cluster call after the restart",
        || async { expected(&cluster).await },
    )
    .await;
    assert_eq!(count, 1);
    // Followed again: changes made after the restart show, at no KV read per call.
    assert!(calls_read_no_kv(&cluster, monitor_port).await);
    let other = node(&server).await;
    let _second = member(&other, "second").await;
    assert!(
        sees(&cluster, 2, WATCH_DELAY).await,
        "a join after the restart did not show"
    );
    other.simulate_crash().await;
    assert!(sees(&cluster, 1, TTL * 2 + WATCH_DELAY).await);
}
