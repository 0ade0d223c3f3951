//! The Redis backend on a private Redis Cluster of six servers (three primaries, three
//! replicas), started once for this binary: the whole conformance suite (namespaces as
//! prefixes unique to the test), the cluster key layout and where subscriptions live
//! (checked with plain clients on single nodes), and a channel whose slot moves to another
//! primary.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use rodario_core::backend::{Channel, Delivery, Group, TransportExt};
use rodario_core::error::BackendErrorKind;
use rodario_core::name::{ActorId, ClusterName};
use rodario_core::node::Node;
use rodario_core::testkit::actors::{Counter, CounterProxy};
use rodario_core::testkit::{eventually, next_frame};
use rodario_redis::testkit::RedisCluster;
use rodario_redis::RedisConfig;

mod conformance {
    rodario_core::conformance_suite!(async {
        rodario_redis::testkit::RedisCluster::shared().await
    });
}

async fn query<T: redis::FromRedisValue>(
    connection: &mut MultiplexedConnection,
    cmd: &redis::Cmd,
) -> T {
    cmd.query_async(connection)
        .await
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// How many clients of the node on `port` subscribe to the sharded `channel`.
async fn shard_numsub(cluster: &RedisCluster, port: u16, channel: &str) -> usize {
    let counts: Vec<(String, usize)> = query(
        &mut cluster.node(port).await,
        redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel),
    )
    .await;
    counts.first().map_or(0, |(_, count)| *count)
}

/// Registry, membership and lease keys share the hash tag `{<prefix>rodario}` (one slot),
/// lock keys keep their single-node names (each on its own slot), and an actor's channel
/// is a sharded channel subscribed on its slot's primary only, which `SPUBLISH` counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_keys_share_a_slot_and_channels_live_on_their_primary() {
    let cluster = RedisCluster::shared().await;
    let prefix = cluster.prefix("layout");
    let node = Node::new(cluster.backend("layout").await);
    let _actor = node
        .spawn(Counter::named("x"))
        .uuid("x")
        .start()
        .await
        .unwrap();
    // Redis counts receivers, so nodes record no memberships: one recorded directly.
    let caller = cluster.backend("layout").await;
    let workers = ClusterName::new("workers").unwrap();
    let ttl = Duration::from_secs(30);
    caller.presence().keep_alive("node-a", ttl).await.unwrap();
    let joined = caller
        .presence()
        .insert(Group::Members(&workers), "node-a", "node-a");
    assert!(joined.await.unwrap());
    let lease = node
        .locks()
        .acquire("job")
        .await
        .unwrap()
        .expect("a free lease");

    let tag = format!("{{{prefix}rodario}}");
    let presence = [
        format!("{tag}actors"),
        format!("{tag}actors:lease:x"),
        format!("{tag}members:workers"),
        format!("{tag}members:workers:lease:node-a"),
        format!("{tag}owner:node-a"),
        format!("{tag}owner:{}", node.id()),
    ];
    let slot = cluster.slot(&presence[0]).await;
    let primary = cluster.primary_of(&presence[0]).await;
    let mut on_primary = cluster.node(primary).await;
    for key in &presence {
        assert_eq!(cluster.slot(key).await, slot, "{key} is on another slot");
        let exists: bool = query(&mut on_primary, redis::cmd("EXISTS").arg(key)).await;
        assert!(exists, "{key} is missing");
    }
    let actors: Vec<String> =
        query(&mut on_primary, redis::cmd("SMEMBERS").arg(&presence[0])).await;
    assert_eq!(actors, ["x"]);

    let lock = format!("{prefix}global.lock:job");
    let lock_primary = cluster.primary_of(&lock).await;
    let holder: Option<String> = query(
        &mut cluster.node(lock_primary).await,
        redis::cmd("GET").arg(&lock),
    )
    .await;
    assert!(holder.is_some(), "the lease is not at {lock}");
    assert!(lease.release().await.unwrap());

    let channel = format!("{prefix}actor:x");
    let channel_primary = cluster.primary_of(&channel).await;
    for node in cluster.nodes().await {
        let expected = usize::from(node.port == channel_primary);
        assert_eq!(
            shard_numsub(&cluster, node.port, &channel).await,
            expected,
            "subscribers of {channel} on node {} (primary {channel_primary})",
            node.port
        );
    }
    let delivery = caller
        .transport()
        .publish(
            &Channel::Actor(ActorId::new("x").unwrap()),
            bytes::Bytes::from_static(b"not a frame"),
        )
        .await
        .unwrap();
    assert_eq!(delivery, Delivery::Exact(1));
    node.shutdown().await;
}

/// Settings the cluster mode cannot use fail at connect with `InvalidInput`, a cluster
/// nobody runs with `Connection`, and seed URLs work as a `redis+cluster://` URL does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cluster_settings_fail_at_connect() {
    let cluster = RedisCluster::shared().await;
    let with_db = format!("{}/1", cluster.url());
    for config in [
        RedisConfig::new("redis+cluster://"),
        RedisConfig::new(with_db),
        RedisConfig::cluster(Vec::<String>::new()),
        cluster.config("braces").prefix("{tenant}:"),
    ] {
        let error = match config.connect().await {
            Ok(_) => panic!("{config:?} connected"),
            Err(e) => e,
        };
        assert_eq!(
            error.kind(),
            BackendErrorKind::InvalidInput,
            "{config:?}: {error}"
        );
    }
    // Nothing listens on a fresh free port: refused, not misconfigured.
    let port = rodario_core::testkit::server::free_port().unwrap();
    let refused = RedisConfig::new(format!("redis+cluster://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(500))
        .command_timeout(Duration::from_millis(500));
    match refused.connect().await {
        Ok(_) => panic!("connected to a cluster nobody runs"),
        Err(e) => assert_eq!(e.kind(), BackendErrorKind::Connection, "{e}"),
    }
    let seeds: Vec<String> = cluster
        .ports()
        .iter()
        .map(|port| format!("redis://127.0.0.1:{port}"))
        .collect();
    let config = RedisConfig::cluster(seeds).prefix(cluster.prefix("seeds"));
    assert!(config.is_cluster());
    config.connect().await.expect("connecting with seed URLs");
}

/// Moves the slot of an actor's channel to another primary (`CLUSTER SETSLOT .. NODE`,
/// after migrating the slot's keys): the old primary unsubscribes the channel itself
/// (`SUNSUBSCRIBE` push), the backend subscribes it again on the new primary, and calls
/// reach the actor again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_whose_slot_moves_is_subscribed_again() {
    let cluster = RedisCluster::shared().await;
    let prefix = cluster.prefix("moving");
    let host = Node::new(cluster.backend("moving").await);
    let caller = Node::builder(cluster.backend("moving").await)
        .call_timeout(Duration::from_millis(500))
        .build();
    let _actor = host
        .spawn(Counter::named("mover"))
        .uuid("mover")
        .start()
        .await
        .unwrap();
    let proxy: CounterProxy = caller.registry().proxy("mover").unwrap();
    assert_eq!(proxy.add(1).await.unwrap().await.unwrap(), 1);
    // A raw subscriber of its own on a second channel of the same slot is moved too.
    let raw = cluster.backend("moving").await;
    let channel = format!("{prefix}actor:mover");
    let slot = cluster.slot(&channel).await;
    let mut frames = raw
        .transport()
        .subscribe_stream(&Channel::Actor(ActorId::new("mover").unwrap()))
        .await
        .unwrap();

    let source = cluster.primary_of(&channel).await;
    let target = cluster
        .nodes()
        .await
        .into_iter()
        .find(|node| node.primary && !node.failed && node.port != source)
        .expect("another primary")
        .port;
    move_slot(&cluster, slot, source, target).await;

    assert!(
        eventually(Duration::from_secs(3), || async {
            shard_numsub(&cluster, target, &channel).await == 2
        })
        .await,
        "the channel was not subscribed again on the slot's new primary"
    );
    assert_eq!(shard_numsub(&cluster, source, &channel).await, 0);
    assert!(
        eventually(Duration::from_secs(3), || async {
            match proxy.add(1).await {
                Ok(pending) => pending.await.is_ok(),
                Err(_) => false,
            }
        })
        .await,
        "calls did not reach the actor after its slot moved"
    );
    assert!(!next_frame(&mut frames).await.is_empty());
    host.shutdown().await;
    caller.shutdown().await;
}

async fn node_id(cluster: &RedisCluster, port: u16) -> String {
    query(
        &mut cluster.node(port).await,
        redis::cmd("CLUSTER").arg("MYID"),
    )
    .await
}

/// Moves `slot` from the primary on `source` to the one on `target`, keys included, and
/// tells every primary.
async fn move_slot(cluster: &RedisCluster, slot: u16, source: u16, target: u16) {
    let (source_id, target_id) = (
        node_id(cluster, source).await,
        node_id(cluster, target).await,
    );
    let mut to = cluster.node(target).await;
    let mut from = cluster.node(source).await;
    let _: () = query(
        &mut to,
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(&source_id),
    )
    .await;
    let _: () = query(
        &mut from,
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&target_id),
    )
    .await;
    loop {
        let keys: Vec<String> = query(
            &mut from,
            redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100),
        )
        .await;
        if keys.is_empty() {
            break;
        }
        let _: () = query(
            &mut from,
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(target)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys),
        )
        .await;
    }
    let _: () = query(
        &mut to,
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&target_id),
    )
    .await;
    let _: () = query(
        &mut from,
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&target_id),
    )
    .await;
    for node in cluster.nodes().await {
        if node.primary && !node.failed && node.port != source && node.port != target {
            let _: () = query(
                &mut cluster.node(node.port).await,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&target_id),
            )
            .await;
        }
    }
}
