//! Actors on NATS across a server restart: in-flight calls fail with a clear error, then
//! everything works again without user action.

use std::time::{Duration, Instant};

use rodario_core::error::{BackendErrorKind, Error};
use rodario_core::node::Node;
use rodario_core::testkit::actors::{Counter, CounterProxy};
use rodario_core::testkit::until_ok;
use rodario_nats::testkit::{config_for, NatsServer};
use rodario_nats::NatsBackend;

const CALL_TIMEOUT: Duration = Duration::from_secs(2);

async fn node(url: &str) -> Node {
    let backend = NatsBackend::connect(config_for(url, "nodes"))
        .await
        .unwrap();
    Node::builder(backend).call_timeout(CALL_TIMEOUT).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_work_again_after_a_server_restart() {
    let mut server = NatsServer::private(&[]);
    let host = node(server.url()).await;
    let caller = node(server.url()).await;
    let _actor = host
        .spawn(Counter::named("steady"))
        .uuid("steady")
        .start()
        .await
        .unwrap();
    let proxy: CounterProxy = caller.registry().get_proxy("steady").await.unwrap();
    assert_eq!(proxy.add(1).await.unwrap().await.unwrap(), 1);

    // A call under way when the server dies fails at once with a connection error: its
    // reply would be lost with the connection.
    let in_flight = proxy.sleep_ms(500).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop();
    let started = Instant::now();
    match in_flight.await {
        Err(Error::Backend(err)) => assert_eq!(err.kind(), BackendErrorKind::Connection),
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // While it is down, a call fails at once with a connection error.
    let started = Instant::now();
    match proxy.add(1).await {
        Err(Error::Backend(err)) => assert_eq!(err.kind(), BackendErrorKind::Connection),
        Err(other) => panic!("expected a connection error, got {other:?}"),
        Ok(pending) => panic!(
            "a call was sent while the server is down: {:?}",
            pending.await
        ),
    }
    assert!(started.elapsed() < Duration::from_secs(1));

    server.restart();
    // No user action: the nodes reconnect, the actor's subscription comes back.
    let value = until_ok(
        Duration::from_secs(15),
        "a call after the restart",
        || async { proxy.add(10).await?.await },
    )
    .await;
    // 1, then maybe the in-flight sleep's nothing, then 10 more (no retried add ran twice
    // unless its reply was lost).
    assert!(value >= 11, "{value}");
    assert!(caller.registry().exists("steady").await.unwrap());
    let fresh: CounterProxy = caller.registry().get_proxy("steady").await.unwrap();
    assert_eq!(fresh.add(0).await.unwrap().await.unwrap(), value);
}
