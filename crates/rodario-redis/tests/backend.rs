//! What is particular to Redis: the wire layout and server-side state (checked with a plain
//! client), authentication and connection failures. The behaviour of the three backend
//! traits is checked by the conformance suite (`tests/conformance.rs`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::AsyncCommands;
use rodario_core::backend::{Backend, Channel, Delivery, Group, LockKey, TransportExt};
use rodario_core::error::BackendErrorKind;
use rodario_core::name::{ActorId, ClusterName, NodeId};
use rodario_core::testkit::{eventually, next_frame, no_frame};
use rodario_redis::testkit::RedisServer;
use rodario_redis::{RedisBackend, RedisConfig};

fn actor(name: &str) -> Channel {
    Channel::Actor(ActorId::new(name).unwrap())
}

async fn publish(backend: &Backend, channel: &Channel, frame: &'static [u8]) -> Delivery {
    backend
        .transport()
        .publish(channel, Bytes::from_static(frame))
        .await
        .unwrap()
}

/// Closing and dropping unsubscribe at the server, checked with `PUBSUB NUMSUB` (that no
/// frames arrive afterwards is in the conformance suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_drop_unsubscribe_at_the_server() {
    let server = RedisServer::start().await;
    let a = server.backend("close").await;
    let b = server.backend("close").await;
    let channel = Channel::Cluster(ClusterName::new("workers").unwrap());
    let wire = format!("{}cluster:workers", server.prefix("close"));

    let sub = a.transport().subscribe_stream(&channel).await.unwrap();
    assert_eq!(server.numsub(&wire).await, 1);
    sub.close().await;
    // close returns once the server was told.
    assert_eq!(server.numsub(&wire).await, 0);

    // Dropped without close: delivery stops, lazily but promptly.
    let sub = a.transport().subscribe_stream(&channel).await.unwrap();
    assert_eq!(server.numsub(&wire).await, 1);
    drop(sub);
    assert!(
        eventually(Duration::from_secs(3), || async {
            server.numsub(&wire).await == 0
        })
        .await,
        "a dropped subscription was not unsubscribed"
    );

    // A subscription that nobody reads does not hold up the others on the connection:
    // the connection is read continuously and each subscription queues its own frames.
    let other = server.backend("close").await;
    let mut slow = other.transport().subscribe_stream(&channel).await.unwrap();
    let mut fast = a.transport().subscribe_stream(&channel).await.unwrap();
    for _ in 0..20 {
        assert_eq!(publish(&b, &channel, b"flood").await, Delivery::Exact(2));
    }
    for _ in 0..20 {
        assert_eq!(next_frame(&mut fast).await, "flood");
    }
    for _ in 0..20 {
        assert_eq!(next_frame(&mut slow).await, "flood");
    }
    no_frame(&mut slow).await;
}

/// Members whose owner's lease expired leave the group's SET itself, and their entry keys
/// go, not only the listings (the behaviour of expiry is in the conformance suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_members_leave_the_set() {
    let server = RedisServer::start().await;
    let backend = server.backend("live").await;
    let registry = backend.presence();
    registry
        .keep_alive("node1", Duration::from_millis(300))
        .await
        .unwrap();
    registry
        .keep_alive("node2", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(registry
        .insert(Group::Actors, "gone", "node1")
        .await
        .unwrap());
    assert!(registry
        .insert(Group::Actors, "kept", "node2")
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        registry.members(Group::Actors).await.unwrap(),
        BTreeSet::from(["kept".to_owned()])
    );
    let mut plain = server.plain().await;
    let set = format!("{}actors", server.prefix("live"));
    let in_set: bool = plain.sismember(&set, "gone").await.unwrap();
    assert!(!in_set, "an expired member stayed in the SET");
    let entry: bool = plain.exists(format!("{set}:lease:gone")).await.unwrap();
    assert!(!entry, "an expired member's entry key stayed");
    let in_set: bool = plain.sismember(&set, "kept").await.unwrap();
    assert!(in_set);
}
/// The names on the wire, checked with a plain client.
async fn check_layout(server: &RedisServer, backend: &Backend, prefix: &str) {
    let mut plain = server.plain().await;
    let run = server.prefix("layout-ids");
    let uuid = format!("{}actor", run.replace(':', ""));
    let owner = "owner-node";

    // Registry: the owner's lease `owner:{owner}` (PX), SET `actors` plus an entry key
    // naming the owner, with no expiry of its own.
    let registry = backend.presence();
    registry
        .keep_alive(owner, Duration::from_secs(30))
        .await
        .unwrap();
    let lease: Option<String> = plain.get(format!("{prefix}owner:{owner}")).await.unwrap();
    assert_eq!(lease.as_deref(), Some("live"));
    let ttl: i64 = plain.pttl(format!("{prefix}owner:{owner}")).await.unwrap();
    assert!(ttl > 0 && ttl <= 30_000, "owner lease PTTL {ttl}");
    assert!(registry.insert(Group::Actors, &uuid, owner).await.unwrap());
    let in_set: bool = plain
        .sismember(format!("{prefix}actors"), &uuid)
        .await
        .unwrap();
    assert!(in_set, "{uuid} not in SET {prefix}actors");
    let lease: Option<String> = plain
        .get(format!("{prefix}actors:lease:{uuid}"))
        .await
        .unwrap();
    assert_eq!(lease.as_deref(), Some(owner));
    let ttl: i64 = plain
        .pttl(format!("{prefix}actors:lease:{uuid}"))
        .await
        .unwrap();
    assert_eq!(ttl, -1, "an entry key has no expiry of its own");

    let cluster = ClusterName::new(format!("{}workers", run.replace(':', ""))).unwrap();
    assert!(registry
        .insert(Group::Members(&cluster), "node-a", owner)
        .await
        .unwrap());
    let in_set: bool = plain
        .sismember(format!("{prefix}members:{cluster}"), "node-a")
        .await
        .unwrap();
    assert!(in_set);
    assert!(plain
        .exists::<_, bool>(format!("{prefix}members:{cluster}:lease:node-a"))
        .await
        .unwrap());

    // Locks: `{context}:{name}` holding the token, with a PX expiry.
    let key = LockKey {
        context: "global.lock".into(),
        name: format!("{}method", run.replace(':', "")),
    };
    assert!(backend
        .locks()
        .acquire(&key, "token-1", Duration::from_secs(3))
        .await
        .unwrap());
    let wire_key = format!("{prefix}global.lock:{}", key.name);
    let token: Option<String> = plain.get(&wire_key).await.unwrap();
    assert_eq!(token.as_deref(), Some("token-1"));
    let ttl: i64 = plain.pttl(&wire_key).await.unwrap();
    assert!(ttl > 0 && ttl <= 3000, "lock PTTL {ttl}");

    // Channels: our subscriptions are on `actor:`, `proxy:`, `cluster:`; a plain PUBLISH
    // there reaches them, and our PUBLISH reaches a plain subscriber.
    let channels = [
        (actor(&uuid), format!("{prefix}actor:{uuid}")),
        (
            Channel::Reply(NodeId::new(format!("{uuid}-proxy")).unwrap()),
            format!("{prefix}proxy:{uuid}-proxy"),
        ),
        (
            Channel::Cluster(cluster.clone()),
            format!("{prefix}cluster:{cluster}"),
        ),
    ];
    for (channel, wire) in channels {
        let mut sub = backend
            .transport()
            .subscribe_stream(&channel)
            .await
            .unwrap();
        let receivers: usize = plain.publish(&wire, "from-plain").await.unwrap();
        assert_eq!(receivers, 1, "nobody subscribed to {wire}");
        assert_eq!(next_frame(&mut sub).await, "from-plain");
        sub.close().await;

        let client = redis::Client::open(server.url()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe(&wire).await.unwrap();
        assert_eq!(
            backend
                .transport()
                .publish(&channel, Bytes::from_static(b"from-rodario"))
                .await
                .unwrap(),
            Delivery::Exact(1)
        );
        let message = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.get_channel_name(), wire);
        assert_eq!(message.get_payload_bytes(), b"from-rodario");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_without_prefix_is_the_python_librarys() {
    let server = RedisServer::start().await;
    let backend = RedisBackend::connect(server.url()).await.unwrap();
    check_layout(&server, &backend, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_prefix_every_name_carries_it() {
    let server = RedisServer::start().await;
    let prefix = server.prefix("tenant");
    let backend = server.backend("tenant").await;
    check_layout(&server, &backend, &prefix).await;
    // Nothing outside the prefix was written by it.
    let mut plain = server.plain().await;
    let keys: Vec<String> = plain.keys("*").await.unwrap();
    let run = server.prefix("layout-ids").replace(':', "");
    for key in keys.iter().filter(|k| k.contains(&run)) {
        assert!(
            key.starts_with(&prefix),
            "key {key} lacks the prefix {prefix}"
        );
    }
    // And another prefix does not see it.
    let other = server.backend("other-tenant").await;
    assert!(other
        .presence()
        .members(Group::Actors)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirepass_auth() {
    let server = RedisServer::private(&["--requirepass", "s3cret"]);
    let port = server.port();
    let err = RedisBackend::connect(server.url()).await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Auth, "{err}");
    let err = RedisBackend::connect(&format!("redis://:wrong@127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Auth, "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "the password leaked: {err}"
    );
    let backend = RedisBackend::connect(&format!("redis://:s3cret@127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut sub = backend
        .transport()
        .subscribe_stream(&actor("auth"))
        .await
        .unwrap();
    assert_eq!(
        publish(&backend, &actor("auth"), b"x").await,
        Delivery::Exact(1)
    );
    assert_eq!(next_frame(&mut sub).await, "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_auth_and_permissions() {
    let server = RedisServer::private(&[
        "--user", "alice", "on", ">alicepw", "~*", "&*", "+@all",
        // bob may only touch keys and channels under `bob:`.
        "--user", "bob", "on", ">bobpw", "~bob:*", "&bob:*", "+@all", "--user", "default", "off",
    ]);
    let err = RedisBackend::connect(&server.url_with("alice", "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Auth, "{err}");
    let err = RedisBackend::connect(server.url()).await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Auth, "{err}");

    let alice = RedisBackend::connect(&server.url_with("alice", "alicepw"))
        .await
        .unwrap();
    alice
        .presence()
        .keep_alive("n", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(alice
        .presence()
        .insert(Group::Actors, "a", "n")
        .await
        .unwrap());

    let bob = RedisConfig::new(server.url_with("bob", "bobpw"))
        .prefix("bob:")
        .connect()
        .await
        .unwrap();
    bob.presence()
        .keep_alive("n", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(bob
        .presence()
        .insert(Group::Actors, "b", "n")
        .await
        .unwrap());
    let bob_outside = RedisBackend::connect(&server.url_with("bob", "bobpw"))
        .await
        .unwrap();
    let err = bob_outside
        .locks()
        .acquire(
            &LockKey {
                context: "global.lock".into(),
                name: "m".into(),
            },
            "t",
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Auth, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_and_bad_urls_fail_at_connect() {
    let port = rodario_core::testkit::server::free_port().unwrap();
    let started = Instant::now();
    let err = RedisBackend::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains(&port.to_string()), "{err}");

    let err = RedisBackend::connect("http://127.0.0.1:1")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::InvalidInput, "{err}");
    let err = RedisBackend::connect("not a url").await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::InvalidInput, "{err}");
}

#[test]
fn config_debug_hides_the_password() {
    let config = RedisConfig::new("redis://alice:hunter2@example:6379/0").prefix("p:");
    let shown = format!("{config:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("alice:***@example:6379/0"), "{shown}");
    assert_eq!(config.url(), "redis://alice:hunter2@example:6379/0");
    assert_eq!(config.key_prefix(), "p:");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_per_handle_closed_when_dropped() {
    let server = RedisServer::private(&[]);
    let plain = server.plain().await;
    let clients = || {
        let mut plain = plain.clone();
        async move {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut plain)
                .await
                .unwrap();
            list.lines().count()
        }
    };
    let before = clients().await;
    let backend = server.backend("conns").await;
    let mut subs = Vec::new();
    for i in 0..20 {
        subs.push(
            backend
                .transport()
                .subscribe_stream(&actor(&format!("a{i}")))
                .await
                .unwrap(),
        );
    }
    let registry = backend.presence();
    registry
        .keep_alive("n", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(registry.insert(Group::Actors, "x", "n").await.unwrap());
    // Twenty subscriptions share one connection, the commands another.
    assert!(
        eventually(Duration::from_secs(3), || async {
            clients().await == before + 2
        })
        .await,
        "expected {} connections, found {}",
        before + 2,
        clients().await
    );
    drop(subs);
    drop(backend);
    assert!(
        eventually(Duration::from_secs(3), || async {
            clients().await == before
        })
        .await,
        "the dropped backend's connections are still open"
    );
}
