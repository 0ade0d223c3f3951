//! The NATS backend against real servers: what is particular to NATS (subject names, KV
//! buckets and limits, delivery checks), auth and faults. The behaviour of the three
//! backend traits is checked by the conformance suite (`tests/conformance.rs`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rodario_core::backend::{
    Backend, Channel, Delivery, Group, LeaseRenewal, LockKey, TransportExt,
};
use rodario_core::error::BackendErrorKind;
use rodario_core::name::{ActorId, ClusterName, NodeId};
use rodario_core::node::Node;
use rodario_core::testkit::actors::{Counter, CounterProxy};
use rodario_core::testkit::server::free_port;
use rodario_core::testkit::tls::Certificates;
use rodario_core::testkit::{eventually, next_frame, no_frame, until_ok};
use rodario_nats::testkit::{config_for, varz, NatsServer};
use rodario_nats::{NatsBackend, NatsConfig};

fn actor(name: &str) -> Channel {
    Channel::Actor(ActorId::new(name).unwrap())
}

/// Takes (or renews) `owner`'s lease for `ttl` and inserts `member` for it.
async fn register(
    backend: &Backend,
    group: Group<'_>,
    member: &str,
    owner: &str,
    ttl: Duration,
) -> bool {
    let presence = backend.presence();
    presence.keep_alive(owner, ttl).await.unwrap();
    presence.insert(group, member, owner).await.unwrap()
}

/// With delivery checks on (the default), a publish reports what the server's "no
/// responders" answer tells: `AtLeastOne` when someone subscribed (also on the publishing
/// connection), `Exact(0)` when nobody did or the subscriptions were closed or dropped (so
/// the server was told; on an actor's subject, once the first unreceived publish's status
/// came back); reply channels are not checked. (That frames arrive and stop after
/// a close is in the conformance suite.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checked_publish_reports_no_responders() {
    let fx = NatsServer::start().await;
    let a = fx.backend().await;
    let b = fx.backend().await;
    let publish = |backend: &Backend, channel: &Channel| {
        let transport = backend.transport().clone();
        let channel = channel.clone();
        async move {
            transport
                .publish(&channel, Bytes::from_static(b"x"))
                .await
                .unwrap()
        }
    };
    let channel = actor("greeter");
    assert!(!a.transport().counts_receivers());
    assert!(a.transport().max_payload().unwrap() >= 1024);
    assert_eq!(publish(&b, &channel).await, Delivery::Exact(0));

    let sub = a.transport().subscribe_stream(&channel).await.unwrap();
    assert_eq!(publish(&b, &channel).await, Delivery::AtLeastOne);
    // The same connection's own subscription counts too.
    assert_eq!(publish(&a, &channel).await, Delivery::AtLeastOne);

    let reply = Channel::Reply(NodeId::new("node-1").unwrap());
    assert_eq!(publish(&b, &reply).await, Delivery::Unknown);
    let _replies = a.transport().subscribe_stream(&reply).await.unwrap();
    assert_eq!(publish(&b, &reply).await, Delivery::Unknown);

    let cluster = Channel::Cluster(ClusterName::new("workers").unwrap());
    let c1 = a.transport().subscribe_stream(&cluster).await.unwrap();
    let c2 = b.transport().subscribe_stream(&cluster).await.unwrap();
    assert_eq!(publish(&b, &cluster).await, Delivery::AtLeastOne);

    sub.close().await;
    // A subject found received stays presumed so for a while, each publish there still
    // asking the server: the first that nobody receives ends it, and publishes are checked
    // (and report `Exact(0)`) again within a round trip.
    let reported = eventually(Duration::from_secs(1), || async {
        publish(&b, &channel).await == Delivery::Exact(0)
    })
    .await;
    assert!(
        reported,
        "publishes to a closed subscription are still presumed received"
    );
    drop(c1);
    drop(c2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(publish(&a, &cluster).await, Delivery::Exact(0));
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchecked_publish_is_unknown() {
    let fx = NatsServer::start().await;
    let a = NatsBackend::connect(fx.config().check_delivery(false))
        .await
        .unwrap();
    let channel = actor("x");
    let mut sub = a.transport().subscribe_stream(&channel).await.unwrap();
    let delivery = a
        .transport()
        .publish(&channel, Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(delivery, Delivery::Unknown);
    assert_eq!(next_frame(&mut sub).await, Bytes::from_static(b"1"));
    let delivery = a
        .transport()
        .publish(&actor("nobody"), Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(delivery, Delivery::Unknown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_are_not_subject_tokens_are_refused() {
    let fx = NatsServer::start().await;
    let a = fx.backend().await;
    for bad in ["a.b", "a*", "*", ">", "a>b", "."] {
        let channel = actor(bad);
        let err = a
            .transport()
            .publish(&channel, Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::InvalidInput, "{bad}: {err}");
        assert!(err.to_string().contains(bad), "{err}");
        let err = a.transport().subscribe_stream(&channel).await.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::InvalidInput, "{bad}: {err}");
        let cluster = Channel::Cluster(ClusterName::new(bad).unwrap());
        let err = a.transport().subscribe_stream(&cluster).await.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::InvalidInput, "{bad}: {err}");
    }
    // A wildcard subscription would otherwise catch another actor's frames.
    let mut other = a
        .transport()
        .subscribe_stream(&actor("other"))
        .await
        .unwrap();
    no_frame(&mut other).await;

    // The registry and the leases carry any name, reversibly.
    let weird = ["a.b", "a_2Eb", "*", ">", "ü/=", "global.lock"];
    for name in weird {
        assert!(register(&a, Group::Actors, name, "owner", Duration::from_secs(10)).await);
    }
    let members = a.presence().members(Group::Actors).await.unwrap();
    assert_eq!(members, weird.iter().map(|s| s.to_string()).collect());
    let channel = ClusterName::new("c.with.dots").unwrap();
    assert!(
        register(
            &a,
            Group::Members(&channel),
            "n.1",
            "n.1",
            Duration::from_secs(10)
        )
        .await
    );
    let other = ClusterName::new("c").unwrap();
    assert!(a
        .presence()
        .members(Group::Members(&other))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        a.presence()
            .members(Group::Members(&channel))
            .await
            .unwrap(),
        BTreeSet::from(["n.1".to_owned()])
    );

    // Lease keys whose context and name hold dots and colons do not collide.
    let split = |context: &str, name: &str| LockKey {
        context: context.to_owned(),
        name: name.to_owned(),
    };
    let ttl = Duration::from_secs(10);
    assert!(a
        .locks()
        .acquire(&split("global.lock", "method"), "t1", ttl)
        .await
        .unwrap());
    assert!(a
        .locks()
        .acquire(&split("global", "lock.method"), "t2", ttl)
        .await
        .unwrap());
    assert!(a
        .locks()
        .acquire(&split("global", "lock:method"), "t3", ttl)
        .await
        .unwrap());

    // A bad prefix is refused at connect time.
    for bad in ["", "a..b", "a.*", "a b", "x."] {
        let err = NatsBackend::connect(fx.config().prefix(bad))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::InvalidInput, "{bad:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_longer_than_max_age_is_refused() {
    let fx = NatsServer::start().await;
    let a = NatsBackend::connect(fx.config().kv_max_age(Duration::from_secs(60)))
        .await
        .unwrap();
    let err = a
        .presence()
        .keep_alive("o", Duration::from_secs(61))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::InvalidInput, "{err}");
    assert!(register(&a, Group::Actors, "x", "o", Duration::from_secs(60)).await);
    // Entries are written once: the node rewrites them before the bucket's max_age.
    assert_eq!(a.presence().refresh_every(), Some(Duration::from_secs(30)));
}

/// A single server cannot hold three replicas: connecting says so, naming the bucket and the
/// setting, and leaves no bucket behind, so the same prefix connects with one replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_replicas_than_servers_is_refused_by_name() {
    let fx = NatsServer::private(&[]);
    let err = NatsBackend::connect(fx.config().kv_replicas(3))
        .await
        .map(drop)
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::InvalidInput, "{err}");
    let message = err.to_string();
    assert!(message.contains("3 replicas"), "{message}");
    assert!(message.contains("kv_replicas"), "{message}");
    assert!(message.contains(fx.prefix()), "{message}");
    let one = NatsBackend::connect(fx.config().kv_replicas(1))
        .await
        .unwrap();
    assert!(register(&one, Group::Actors, "x", "o", Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_are_isolated() {
    let fx = NatsServer::start().await;
    let a = fx.backend().await;
    let other = NatsBackend::connect(fx.config().prefix(format!("{}.other", fx.prefix())))
        .await
        .unwrap();
    let channel = actor("same");
    let mut sub = a.transport().subscribe_stream(&channel).await.unwrap();
    let delivery = other
        .transport()
        .publish(&channel, Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(delivery, Delivery::Exact(0));
    no_frame(&mut sub).await;
    assert!(register(&a, Group::Actors, "same", "o", Duration::from_secs(10)).await);
    assert!(!other
        .presence()
        .contains(Group::Actors, "same")
        .await
        .unwrap());
    assert!(other
        .presence()
        .members(Group::Actors)
        .await
        .unwrap()
        .is_empty());
    // Owners' leases are per prefix too.
    assert_eq!(
        other
            .presence()
            .keep_alive("o", Duration::from_secs(10))
            .await
            .unwrap(),
        LeaseRenewal::Lost
    );
    assert!(other
        .presence()
        .insert(Group::Actors, "same", "o")
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frames_are_refused_with_the_limit() {
    let fx = NatsServer::start().await;
    let a = fx.backend().await;
    let limit = a.transport().max_payload().unwrap();
    let channel = actor("big");
    let mut sub = a.transport().subscribe_stream(&channel).await.unwrap();
    let err = a
        .transport()
        .publish(&channel, Bytes::from(vec![0u8; limit + 1]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("max_payload"), "{err}");
    // The connection still works.
    a.transport()
        .publish(&channel, Bytes::from(vec![1u8; 1000]))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut sub).await.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth() {
    let server = NatsServer::private(&["--auth", "s3cret"]);
    let ok = NatsBackend::connect(config_for(server.url(), "auth").token("s3cret"))
        .await
        .unwrap();
    let mut sub = ok.transport().subscribe_stream(&actor("a")).await.unwrap();
    ok.transport()
        .publish(&actor("a"), Bytes::from_static(b"in"))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut sub).await, Bytes::from_static(b"in"));
    for config in [
        config_for(server.url(), "auth").token("wrong"),
        config_for(server.url(), "auth"),
    ] {
        let err = NatsBackend::connect(config).await.unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Auth, "{err}");
        assert!(!err.to_string().contains("wrong"), "leaks the token: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password_auth() {
    let server = NatsServer::private(&["--user", "app", "--pass", "pw"]);
    let ok = NatsBackend::connect(config_for(server.url(), "auth").user_password("app", "pw"))
        .await
        .unwrap();
    assert!(register(&ok, Group::Actors, "x", "o", Duration::from_secs(5)).await);
    // Credentials in the URL work too.
    let in_url = server.url().replace("nats://", "nats://app:pw@");
    NatsBackend::connect(config_for(&in_url, "auth"))
        .await
        .unwrap();
    let err = NatsBackend::connect(config_for(server.url(), "auth").user_password("app", "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Auth, "{err}");
    let err = NatsBackend::connect(config_for(server.url(), "auth"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Auth, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_a_connection_error() {
    let port = rodario_core::testkit::server::free_port().unwrap();
    let started = Instant::now();
    let err = NatsBackend::connect(
        NatsConfig::from_url(&format!("nats://127.0.0.1:{port}"))
            .connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = NatsBackend::connect(NatsConfig::from_url("not a url ::"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::InvalidInput, "{err}");
    let err = NatsBackend::connect(NatsConfig::new().credentials_file("/nonexistent/x.creds"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::InvalidInput, "{err}");
}

/// Waits until `backend` can publish again (its client reconnected); until then every
/// publish must fail with a connection error.
async fn until_reconnected(backend: &Backend) {
    until_ok(Duration::from_secs(15), "reconnecting", || async {
        let published = backend
            .transport()
            .publish(&actor("probe"), Bytes::new())
            .await;
        if let Err(err) = &published {
            assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
        }
        published
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_server_restart() {
    let mut server = NatsServer::private(&[]);
    let a = NatsBackend::connect(config_for(server.url(), "restart"))
        .await
        .unwrap();
    let b = NatsBackend::connect(config_for(server.url(), "restart"))
        .await
        .unwrap();
    let channel = actor("survivor");
    let mut sub = a.transport().subscribe_stream(&channel).await.unwrap();
    assert!(register(&a, Group::Actors, "survivor", "A", Duration::from_secs(60)).await);

    server.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While it is down, operations fail promptly with a connection error.
    let started = Instant::now();
    let err = b
        .transport()
        .publish(&channel, Bytes::from_static(b"lost"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
    let err = b
        .presence()
        .contains(Group::Actors, "survivor")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
    let err = b
        .locks()
        .acquire(
            &LockKey {
                context: "c".into(),
                name: "n".into(),
            },
            "t",
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    server.restart();
    until_reconnected(&a).await;
    until_reconnected(&b).await;
    // The existing subscription receives frames published after the restart (the client
    // may not have re-sent its SUB at once).
    let restored = eventually(Duration::from_secs(10), || async {
        let delivery = b
            .transport()
            .publish(&channel, Bytes::from_static(b"after"))
            .await
            .unwrap();
        delivery == Delivery::AtLeastOne
    })
    .await;
    assert!(restored, "subscription not restored");
    assert_eq!(next_frame(&mut sub).await, Bytes::from_static(b"after"));
    // The registry survived (file storage) and works again.
    assert!(b
        .presence()
        .contains(Group::Actors, "survivor")
        .await
        .unwrap());
    assert!(register(&b, Group::Actors, "newcomer", "B", Duration::from_secs(60)).await);
    assert_eq!(
        a.presence().members(Group::Actors).await.unwrap(),
        BTreeSet::from(["newcomer".to_owned(), "survivor".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_groups_are_listed_whole_and_listings_leave_no_consumer() {
    let fx = NatsServer::start().await;
    let a = fx.backend().await;
    let names: BTreeSet<String> = (0..300).map(|i| format!("actor.{i}")).collect();
    a.presence()
        .keep_alive("owner", Duration::from_secs(60))
        .await
        .unwrap();
    let inserts = names
        .iter()
        .map(|name| a.presence().insert(Group::Actors, name, "owner"));
    for inserted in futures_util::future::join_all(inserts).await {
        assert!(inserted.unwrap());
    }
    // Deleted and expired entries are not listed.
    assert!(a
        .presence()
        .remove(Group::Actors, "actor.7", None)
        .await
        .unwrap());
    assert!(register(&a, Group::Actors, "brief", "o", Duration::from_millis(50)).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut expected = names.clone();
    expected.remove("actor.7");
    for _ in 0..3 {
        assert_eq!(a.presence().members(Group::Actors).await.unwrap(), expected);
    }

    let client = async_nats::connect(fx.url()).await.unwrap();
    let context = async_nats::jetstream::new(client);
    let stream = context
        .get_stream(format!("KV_{}", fx.prefix()))
        .await
        .unwrap();
    let consumers = std::cell::Cell::new(0);
    let none_left = eventually(Duration::from_secs(5), || async {
        consumers.set(stream.get_info().await.unwrap().state.consumer_count);
        consumers.get() == 0
    })
    .await;
    assert!(none_left, "{} listing consumers left", consumers.get());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresponsive_server_gives_bounded_connection_errors() {
    let server = NatsServer::private(&[]);
    let timeout = Duration::from_secs(1);
    let a = NatsBackend::connect(config_for(server.url(), "frozen").timeout(timeout))
        .await
        .unwrap();
    let channel = actor("frozen");
    let mut sub = a.transport().subscribe_stream(&channel).await.unwrap();
    assert!(register(&a, Group::Actors, "frozen", "o", Duration::from_secs(60)).await);

    server.freeze();
    let key = LockKey {
        context: "c".into(),
        name: "n".into(),
    };
    let other = actor("other");
    let started = Instant::now();
    let (publish, contains, members, acquire, subscribe) = tokio::join!(
        a.transport().publish(&channel, Bytes::from_static(b"x")),
        a.presence().contains(Group::Actors, "frozen"),
        a.presence().members(Group::Actors),
        a.locks().acquire(&key, "t", Duration::from_secs(5)),
        a.transport().subscribe_stream(&other),
    );
    let elapsed = started.elapsed();
    assert_eq!(publish.unwrap_err().kind(), BackendErrorKind::Connection);
    assert_eq!(contains.unwrap_err().kind(), BackendErrorKind::Connection);
    assert_eq!(members.unwrap_err().kind(), BackendErrorKind::Connection);
    assert_eq!(acquire.unwrap_err().kind(), BackendErrorKind::Connection);
    assert_eq!(subscribe.unwrap_err().kind(), BackendErrorKind::Connection);
    assert!(elapsed < timeout * 3, "took {elapsed:?}");

    server.thaw();
    let delivery = until_ok(Duration::from_secs(10), "publishing after the thaw", || {
        a.transport().publish(&channel, Bytes::from_static(b"back"))
    })
    .await;
    assert_eq!(delivery, Delivery::AtLeastOne);
    // The frame of the failed publish may have been delivered late: skip it.
    loop {
        let frame = next_frame(&mut sub).await;
        if frame == Bytes::from_static(b"back") {
            break;
        }
    }
    assert!(a
        .presence()
        .contains(Group::Actors, "frozen")
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let certificates = Certificates::generate();
    let path = |file: std::path::PathBuf| file.to_str().unwrap().to_owned();
    let server = NatsServer::private(&[
        "--tls",
        "--tlscert",
        &path(certificates.server_cert()),
        "--tlskey",
        &path(certificates.server_key()),
        "--tlsverify",
        "--tlscacert",
        &path(certificates.ca()),
    ]);
    let tls_url = server.url().replace("nats://", "tls://");

    let ok = NatsBackend::connect(
        config_for(&tls_url, "tls")
            .root_certificate(certificates.ca())
            .client_certificate(certificates.client_cert(), certificates.client_key()),
    )
    .await
    .unwrap();
    let mut sub = ok
        .transport()
        .subscribe_stream(&actor("secure"))
        .await
        .unwrap();
    ok.transport()
        .publish(&actor("secure"), Bytes::from_static(b"s"))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut sub).await, Bytes::from_static(b"s"));
    // require_tls with a nats:// URL upgrades too.
    NatsBackend::connect(
        config_for(server.url(), "tls")
            .require_tls(true)
            .root_certificate(certificates.ca())
            .client_certificate(certificates.client_cert(), certificates.client_key()),
    )
    .await
    .unwrap();

    // An untrusted server certificate, or no client certificate, is refused at connect.
    let untrusted = NatsBackend::connect(
        config_for(&tls_url, "tls")
            .client_certificate(certificates.client_cert(), certificates.client_key())
            .connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert_eq!(
        untrusted.kind(),
        BackendErrorKind::Connection,
        "{untrusted}"
    );
    let anonymous = NatsBackend::connect(
        config_for(&tls_url, "tls")
            .root_certificate(certificates.ca())
            .connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            anonymous.kind(),
            BackendErrorKind::Connection | BackendErrorKind::Auth
        ),
        "{anonymous}"
    );
}

/// One-way calls to an actor found reachable skip the delivery round trip; once the actor
/// is gone, the first tell nobody receives brings the server's word back, and tells fail
/// with `InvalidActor` again within a round trip (the tells sent meanwhile, about a hundred
/// in a tight loop here, are lost without an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_to_a_stopped_actor_fail_soon() {
    use rodario_core::testkit::actors::{Counter, CounterProxy};
    use rodario_core::{Error, Node};

    let fx = NatsServer::start().await;
    let host = Node::new(fx.backend().await);
    let caller = Node::new(fx.backend().await);
    let actor = host
        .spawn(Counter::named("told"))
        .uuid("told")
        .start()
        .await
        .unwrap();
    let proxy: CounterProxy = caller.registry().proxy("told").unwrap();
    for _ in 0..10 {
        proxy.tell_add(1).await.unwrap();
    }
    assert_eq!(proxy.add(0).await.unwrap().await.unwrap(), 10);
    actor.stop().await;
    let started = Instant::now();
    let mut lost = 0;
    loop {
        match proxy.tell_add(1).await {
            Ok(()) => lost += 1,
            Err(Error::InvalidActor { uuid }) => {
                assert_eq!(uuid, "told");
                break;
            }
            Err(other) => panic!("a tell to a stopped actor failed with {other}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{lost} tells to a stopped actor succeeded over {:?}",
            started.elapsed()
        );
    }
}

/// An entry written before entries lived by their owner's lease, `{ttl ms} {owner}`, is
/// live by its own TTL (nodes of both kinds share a prefix during an upgrade); its owner's
/// `held` rewrites it in the new form, which lives by the owner's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_older_versions_live_by_their_own_ttl() {
    let fx = NatsServer::start().await;
    let a = fx.backend().await;
    let client = async_nats::connect(fx.url()).await.unwrap();
    let store = async_nats::jetstream::new(client)
        .get_key_value(fx.prefix())
        .await
        .unwrap();
    store.put("a.old", "1500 old-node".into()).await.unwrap();
    store.put("a.converted", "1500 n".into()).await.unwrap();
    let presence = a.presence();
    assert!(presence.contains(Group::Actors, "old").await.unwrap());
    assert_eq!(
        presence.members(Group::Actors).await.unwrap(),
        BTreeSet::from(["converted".to_owned(), "old".to_owned()])
    );
    assert!(!register(&a, Group::Actors, "old", "n", Duration::from_secs(10)).await);
    assert_eq!(
        presence
            .held(Group::Actors, &["converted", "old"], "n")
            .await
            .unwrap(),
        [true, false]
    );
    let converted = store.get("a.converted").await.unwrap().unwrap();
    assert_eq!(&converted[..], b"@n");

    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(!presence.contains(Group::Actors, "old").await.unwrap());
    assert!(presence.contains(Group::Actors, "converted").await.unwrap());
    assert_eq!(
        presence.members(Group::Actors).await.unwrap(),
        BTreeSet::from(["converted".to_owned()])
    );
    assert!(presence.insert(Group::Actors, "old", "n").await.unwrap());
}

/// The server deletes messages older than the bucket's max_age: a node's registrations,
/// written once, outlive it because the node has them rewritten every half max_age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_outlive_the_buckets_max_age() {
    let fx = NatsServer::start().await;
    let max_age = Duration::from_secs(2);
    let connect = || async {
        NatsBackend::connect(fx.config().kv_max_age(max_age))
            .await
            .unwrap()
    };
    let host = Node::builder(connect().await)
        .liveness_ttl(Duration::from_millis(900))
        .build();
    let caller = Node::new(connect().await);
    let _actor = host
        .spawn(Counter::named("kept"))
        .uuid("kept")
        .start()
        .await
        .unwrap();
    tokio::time::sleep(max_age * 3).await;
    assert!(caller.registry().exists("kept").await.unwrap());
    let proxy: CounterProxy = caller.registry().get_proxy("kept").await.unwrap();
    assert_eq!(proxy.add(1).await.unwrap().await.unwrap(), 1);
}

/// Marking a lease disturbed rewrites it with the time it had left: it expires when it
/// would have, and a renewal after that finds it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disturbed_lease_keeps_its_time() {
    let fx = NatsServer::start().await;
    let a = fx.backend().await;
    let presence = a.presence();
    let ttl = Duration::from_millis(1500);
    assert!(register(&a, Group::Actors, "taken", "o", ttl).await);
    assert!(presence.insert(Group::Actors, "kept", "o").await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(presence.remove(Group::Actors, "taken", None).await.unwrap());
    assert!(presence.contains(Group::Actors, "kept").await.unwrap());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!presence.contains(Group::Actors, "kept").await.unwrap());
    assert_eq!(
        presence.keep_alive("o", ttl).await.unwrap(),
        LeaseRenewal::Lost
    );
}

/// A node subscribes once for all of its actors (`{prefix}.node.{node id}.*`), not once per
/// actor: the server's count of subscriptions stays where the node's first actor left it
/// while 49 more start, and each actor still gets its own calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscription_serves_all_of_a_nodes_actors() {
    let monitor_port = free_port().unwrap();
    let server = NatsServer::private(&["-m", &monitor_port.to_string()]);
    let connect = || async { NatsBackend::connect(config_for(server.url(), "routes")).await };
    let host = Node::new(connect().await.unwrap());
    let caller = Node::new(connect().await.unwrap());
    let subscriptions = || async {
        let varz = varz(monitor_port).await;
        varz["subscriptions"].as_u64().unwrap()
    };
    let start = |i: usize| {
        let name = format!("c{i}");
        host.spawn(Counter::named(&name)).uuid(&name).start()
    };
    let mut actors = vec![start(0).await.unwrap()];
    let before = subscriptions().await;
    for i in 1..50 {
        actors.push(start(i).await.unwrap());
    }
    assert_eq!(subscriptions().await, before);
    for i in [0, 17, 49] {
        let proxy: CounterProxy = caller.registry().proxy(&format!("c{i}")).unwrap();
        assert_eq!(proxy.name().await.unwrap().await.unwrap(), format!("c{i}"));
    }
}

/// A caller keeps the node each actor it called runs on; when the actor moves to another
/// node (stopped on one, started with the same UUID on another), the next call and the
/// next one-way call still reach it: the old node answers that it does not run it, and the
/// caller reads the registry again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_follow_an_actor_to_another_node() {
    let fx = NatsServer::start().await;
    let a = Node::new(fx.backend().await);
    let b = Node::new(fx.backend().await);
    let caller = Node::new(fx.backend().await);
    let on_a = a.spawn(Counter::named("on a")).uuid("mover").start();
    let on_a = on_a.await.unwrap();
    let proxy: CounterProxy = caller.registry().proxy("mover").unwrap();
    assert_eq!(proxy.name().await.unwrap().await.unwrap(), "on a");

    on_a.stop().await;
    let on_b = b.spawn(Counter::named("on b")).uuid("mover").start();
    let on_b = on_b.await.unwrap();
    assert_eq!(proxy.name().await.unwrap().await.unwrap(), "on b");

    on_b.stop().await;
    let on_a = a.spawn(Counter::named("on a again")).uuid("mover").start();
    let on_a = on_a.await.unwrap();
    proxy.tell_add(5).await.unwrap();
    assert_eq!(proxy.add(0).await.unwrap().await.unwrap(), 5);
    assert_eq!(proxy.name().await.unwrap().await.unwrap(), "on a again");

    // Gone from every node: the node the caller knew says so, the registry names no other,
    // nobody listens on the actor's own subject, and the call fails at once.
    on_a.stop().await;
    let started = Instant::now();
    let call = async { proxy.name().await?.await };
    let gone = call.await;
    assert!(
        matches!(gone, Err(rodario_core::Error::InvalidActor { ref uuid }) if uuid == "mover"),
        "{gone:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}
