//! A private server killed and restarted under a live backend: commands fail with a
//! Connection error within the command timeout instead of hanging, and afterwards the
//! subscriptions made before the outage receive again, with no user action.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use rodario_core::backend::{
    Backend, Channel, ConnectionState, Delivery, Group, LockKey, TransportExt,
};
use rodario_core::error::BackendErrorKind;
use rodario_core::name::{ActorId, ClusterName};
use rodario_core::testkit::eventually;
use rodario_redis::testkit::RedisServer;

const COMMAND_TIMEOUT: Duration = Duration::from_millis(1000);

async fn backend(server: &RedisServer) -> Backend {
    server
        .config("restart")
        .command_timeout(COMMAND_TIMEOUT)
        .connect()
        .await
        .unwrap()
}

/// Publishes `frame` until one connection receives it; panics after 20 s.
async fn publish_until_received(backend: &Backend, channel: &Channel, frame: &'static [u8]) {
    let received = eventually(Duration::from_secs(20), || async {
        let delivery = backend
            .transport()
            .publish(channel, Bytes::from_static(frame))
            .await;
        matches!(delivery, Ok(Delivery::Exact(1)))
    })
    .await;
    assert!(
        received,
        "no subscriber on {channel} 20 s after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_commands_survive_a_long_restart() {
    let mut server = RedisServer::private(&[]);
    let a = backend(&server).await;
    let b = backend(&server).await;
    let actor = Channel::Actor(ActorId::new("survivor").unwrap());
    let cluster = Channel::Cluster(ClusterName::new("workers").unwrap());
    let mut actor_sub = a.transport().subscribe_stream(&actor).await.unwrap();
    let mut cluster_sub = a.transport().subscribe_stream(&cluster).await.unwrap();
    let doomed = a
        .transport()
        .subscribe_stream(&Channel::Actor(ActorId::new("closed-in-outage").unwrap()))
        .await
        .unwrap();
    assert_eq!(
        b.transport()
            .publish(&actor, Bytes::from_static(b"before"))
            .await
            .unwrap(),
        Delivery::Exact(1)
    );
    assert_eq!(actor_sub.next().await.unwrap(), "before");

    let mut state = a
        .transport()
        .connection_state()
        .expect("the redis backend watches its connection");
    assert_eq!(*state.borrow(), ConnectionState::Connected);

    server.stop();

    // The loss is reported at once (nodes fail the calls waiting for replies on it).
    tokio::time::timeout(
        Duration::from_secs(2),
        state.wait_for(|s| *s == ConnectionState::Disconnected),
    )
    .await
    .expect("the lost connection was reported within 2 s")
    .unwrap();

    // While the server is down every command fails, as a Connection error, in bounded time.
    let started = Instant::now();
    let err = b
        .transport()
        .publish(&actor, Bytes::from_static(b"lost"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
    let err = a
        .presence()
        .contains(Group::Actors, "survivor")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
    let err = a
        .transport()
        .subscribe_stream(&Channel::Actor(ActorId::new("new").unwrap()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
    doomed.close().await;
    assert!(
        started.elapsed() < 4 * COMMAND_TIMEOUT + Duration::from_secs(1),
        "commands took {:?} to fail while the server was down",
        started.elapsed()
    );

    // An outage longer than redis-rs's default reconnect budget (about 6 s).
    tokio::time::sleep(Duration::from_secs(8)).await;
    server.restart();

    // Reported connected again once commands work (after resubscribing).
    tokio::time::timeout(
        Duration::from_secs(15),
        state.wait_for(|s| *s == ConnectionState::Connected),
    )
    .await
    .expect("the restored connection was reported within 15 s")
    .unwrap();

    // The subscriptions made before the outage receive again, with no user action, and
    // their streams stayed open.
    publish_until_received(&b, &actor, b"after").await;
    let frame = tokio::time::timeout(Duration::from_secs(5), actor_sub.next())
        .await
        .expect("a frame after the restart")
        .expect("the stream stayed open");
    assert_eq!(frame, "after");
    publish_until_received(&b, &cluster, b"cluster-after").await;
    let frame = tokio::time::timeout(Duration::from_secs(5), cluster_sub.next())
        .await
        .expect("a frame after the restart")
        .expect("the stream stayed open");
    assert_eq!(frame, "cluster-after");

    // The channel closed during the outage is resubscribed by the reconnect, then
    // unsubscribed on its own (no frame needed): a publisher is not told it has a receiver.
    let wire = format!("{}actor:closed-in-outage", server.prefix("restart"));
    assert!(
        eventually(Duration::from_secs(5), || async {
            server.numsub(&wire).await == 0
        })
        .await,
        "a subscription closed during the outage came back"
    );

    // Commands work again (scripts are reloaded into the fresh server).
    let registry = a.presence();
    registry
        .keep_alive("node-a", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(registry
        .insert(Group::Actors, "survivor", "node-a")
        .await
        .unwrap());
    assert!(b
        .presence()
        .contains(Group::Actors, "survivor")
        .await
        .unwrap());
    let key = LockKey {
        context: "global.lock".into(),
        name: "after".into(),
    };
    assert!(a
        .locks()
        .acquire(&key, "t", Duration::from_secs(5))
        .await
        .unwrap());
    assert!(a.locks().release(&key, "t").await.unwrap());
    let mut fresh = b.transport().subscribe_stream(&actor).await.unwrap();
    assert_eq!(
        a.transport()
            .publish(&actor, Bytes::from_static(b"both"))
            .await
            .unwrap(),
        Delivery::Exact(2)
    );
    assert_eq!(fresh.next().await.unwrap(), "both");
    assert_eq!(actor_sub.next().await.unwrap(), "both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_when_the_server_dies_fail_fast() {
    let mut server = RedisServer::private(&[]);
    let backend = backend(&server).await;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let backend = backend.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let channel = Channel::Actor(ActorId::new(format!("busy-{worker}")).unwrap());
                let mut slowest = Duration::ZERO;
                let mut connection_errors = 0;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = backend
                        .transport()
                        .publish(&channel, Bytes::from_static(b"x"))
                        .await;
                    slowest = slowest.max(started.elapsed());
                    match result {
                        Ok(_) => {}
                        Err(e) => {
                            assert_eq!(e.kind(), BackendErrorKind::Connection, "{e}");
                            connection_errors += 1;
                        }
                    }
                }
                (slowest, connection_errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let (slowest, connection_errors) = tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("a publish hung after the server died")
            .unwrap();
        assert!(connection_errors > 0);
        assert!(
            slowest < COMMAND_TIMEOUT + Duration::from_millis(500),
            "a publish took {slowest:?}"
        );
    }
}
