//! Whole nodes on Redis: a server restart under running actors, and frames published by a
//! plain Redis client.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use rodario_core::error::BackendErrorKind;
use rodario_core::testkit::actors::{Counter, CounterCluster, CounterProxy};
use rodario_core::testkit::until_ok;
use rodario_core::{Error, Node};
use rodario_redis::testkit::RedisServer;

async fn node(server: &RedisServer) -> Node {
    let backend = server
        .config("node")
        .command_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    Node::builder(backend)
        .call_timeout(Duration::from_secs(5))
        .liveness_ttl(Duration::from_secs(3))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_proxies_and_clusters_work_again_after_a_restart() {
    let mut server = RedisServer::private(&[]);
    let host = node(&server).await;
    let caller = node(&server).await;
    let actor = host
        .spawn(Counter::named("svc"))
        .uuid("svc")
        .start()
        .await
        .unwrap();
    actor.join("workers").await.unwrap();
    let proxy: CounterProxy = caller.registry().get_proxy("svc").await.unwrap();
    assert_eq!(proxy.add(1).await.unwrap().await.unwrap(), 1);

    // A call in flight when the server dies fails at once with a connection error.
    let slow = proxy.sleep_ms(3000).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.stop();
    let outcome = slow.await;
    assert!(
        matches!(&outcome, Err(Error::Backend(e)) if e.kind() == BackendErrorKind::Connection),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the call in flight took {:?} to fail",
        started.elapsed()
    );
    // New calls fail with a connection error too, within the command timeout.
    let started = Instant::now();
    let refused = proxy.add(1).await;
    assert!(
        matches!(&refused, Err(Error::Backend(e)) if e.kind() == BackendErrorKind::Connection),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart();

    // The restarted server forgot everything; nobody does anything, and all works again.
    let count = until_ok(Duration::from_secs(20), "the proxy", || async {
        proxy.add(1).await?.await
    })
    .await;
    assert!(count >= 2, "the actor kept its state: {count}");
    until_ok(Duration::from_secs(20), "re-registration", || async {
        caller
            .registry()
            .exists("svc")
            .await?
            .then_some(())
            .ok_or(Error::InvalidActor { uuid: "svc".into() })
    })
    .await;
    let fresh: CounterProxy = caller.registry().get_proxy("svc").await.unwrap();
    assert!(fresh.add(1).await.unwrap().await.unwrap() > count);
    let cluster: CounterCluster = caller.cluster("workers").unwrap();
    let names = until_ok(Duration::from_secs(20), "the cluster", || async {
        cluster.name().await?.all().await
    })
    .await;
    assert_eq!(names, vec!["svc".to_owned()]);
    assert!(actor.is_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_from_a_plain_client_are_refused_and_the_actor_keeps_serving() {
    let server = RedisServer::start().await;
    let host = node(&server).await;
    let actor = host
        .spawn(Counter::named("target"))
        .uuid("target")
        .start()
        .await
        .unwrap();
    let mut plain = server.plain().await;
    let channel = format!("{}actor:target", server.prefix("node"));
    let oversize = vec![0x01u8; host.max_frame_bytes() + 1];
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![1],
        b"hello".to_vec(),
        br#"{"method":"add","args":[1]}"#.to_vec(),
        vec![1, 1, 0xc1, 0xff],
        vec![0xff; 64],
        oversize,
    ];
    for frame in garbage {
        let receivers: usize = plain.publish(&channel, frame).await.unwrap();
        assert_eq!(receivers, 1, "the actor is not subscribed to {channel}");
    }
    assert_eq!(actor.proxy().add(2).await.unwrap().await.unwrap(), 2);
    assert!(actor.is_alive());
}

/// A node's subscriptions and its commands take a connection each. When the server drops
/// either kind alone (`CLIENT KILL TYPE pubsub`, then `TYPE normal`: each node's one
/// connection of that kind), the nodes reconnect it (resubscribing) and calls between
/// them work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_either_connection_alone_is_recovered() {
    let server = RedisServer::private(&[]);
    let host = node(&server).await;
    let caller = node(&server).await;
    let _actor = host
        .spawn(Counter::named("svc"))
        .uuid("svc")
        .start()
        .await
        .unwrap();
    let proxy: CounterProxy = caller.registry().get_proxy("svc").await.unwrap();
    assert_eq!(proxy.add(1).await.unwrap().await.unwrap(), 1);
    let mut plain = server.plain().await;
    for kind in ["pubsub", "normal"] {
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .arg("SKIPME")
            .arg("yes")
            .query_async(&mut plain)
            .await
            .unwrap();
        assert_eq!(killed, 2, "{kind} connections killed (one per node)");
        let started = Instant::now();
        let total = until_ok(Duration::from_secs(10), "a call after the kill", || async {
            proxy.add(1).await?.await
        })
        .await;
        eprintln!(
            "{kind}: calls work again {:?} after the kill",
            started.elapsed()
        );
        for _ in 0..20 {
            assert!(proxy.add(1).await.unwrap().await.unwrap() > total);
        }
    }
}

/// `CLIENT LIST` shows the node's connection by the node's id, also after the server
/// restarted (Redis forgets a connection's name with the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_is_named_after_its_node() {
    let mut server = RedisServer::private(&[]);
    let node = node(&server).await;
    let name = format!("name=rodario:{}", node.id());
    let named = |server: &RedisServer| {
        let url = server.url().to_owned();
        let name = name.clone();
        async move {
            let Ok(client) = redis::Client::open(url.as_str()) else {
                return false;
            };
            let Ok(mut plain) = client.get_multiplexed_async_connection().await else {
                return false;
            };
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut plain)
                .await
                .unwrap_or_default();
            list.lines()
                .any(|line| line.split(' ').any(|field| field == name))
        }
    };
    assert!(
        rodario_core::testkit::eventually(Duration::from_secs(5), || named(&server)).await,
        "no connection named {name}"
    );
    server.restart();
    assert!(
        rodario_core::testkit::eventually(Duration::from_secs(10), || named(&server)).await,
        "not named {name} again after the restart"
    );
}

/// The commands a server ran, from `INFO commandstats` (the INFO itself included).
async fn commands_run(plain: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(plain)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| line.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// Keeping actors registered costs the broker per node, not per actor: a node of 300 idle
/// actors renewing every 100 ms runs a handful of commands per renewal (the lease script
/// and what it calls), where renewing each actor's entry would run about 900.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_cost_the_broker_per_node() {
    let server = RedisServer::private(&[]);
    let host = Node::builder(server.backend("idle").await)
        .liveness_ttl(Duration::from_millis(300))
        .build();
    let mut actors = Vec::new();
    for i in 0..300 {
        let actor = host
            .spawn(Counter::named("idle"))
            .uuid(format!("idle-{i}"))
            .start()
            .await
            .unwrap();
        actors.push(actor);
    }
    let mut plain = server.plain().await;
    let window = Duration::from_secs(2);
    let before = commands_run(&mut plain).await;
    tokio::time::sleep(window).await;
    let ran = commands_run(&mut plain).await - before;
    // 20 renewals in the window, each one EVALSHA running a GET and a SET: about 60.
    assert!(
        ran <= 150,
        "{ran} commands in {window:?} with 300 idle actors renewed every 100 ms"
    );
    assert_eq!(host.registry().actors().await.unwrap().len(), 300);
}
