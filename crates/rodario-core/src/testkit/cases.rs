//! The behaviours every backend must show. Each case panics with a message on failure.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_bytes::ByteBuf;
use tokio::time::Instant;

use super::actors::{Counter, CounterCluster, CounterProxy, FixedAnswer, Named};
use super::TestBroker;
use crate::actor::ParamInfo;
use crate::backend::Channel;
use crate::client::ClusterProxy;
use crate::client::{ActorProxy, TypedProxy};
use crate::error::{Error, FrameError, RemoteErrorKind};
use crate::frame::{encode_frame, Frame, Outcome, Reply, DEFAULT_MAX_FRAME};
use crate::handle::ActorHandle;
use crate::name::ActorId;
use crate::node::Node;

/// The call deadline the cases use: long enough for a loaded CI machine, short enough that
/// a case which waits for it fails quickly.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The liveness TTL of nodes in the liveness case.
pub const SHORT_TTL: Duration = Duration::from_millis(900);

async fn node(broker: &dyn TestBroker, namespace: &str) -> Node {
    Node::builder(broker.connect(namespace).await)
        .call_timeout(CALL_TIMEOUT)
        .build()
}

async fn counter(node: &Node, uuid: &str) -> ActorHandle<Counter> {
    node.spawn(Counter::named(uuid))
        .uuid(uuid)
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting actor {uuid}: {e}"))
}

/// `register`, `exists`, `actors` and `unregister` behave as the Python registry does.
pub async fn registry_register_exists_unregister(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let registry = node.registry();
    assert!(!registry.exists("r1").await.unwrap());
    registry.register("r1").await.unwrap();
    assert!(registry.exists("r1").await.unwrap());
    assert!(registry.actors().await.unwrap().contains("r1"));
    assert!(matches!(
        registry.register("r1").await,
        Err(Error::UuidInUse { uuid }) if uuid == "r1"
    ));
    assert!(registry.unregister("r1").await.unwrap());
    assert!(!registry.exists("r1").await.unwrap());
    assert!(!registry.unregister("r1").await.unwrap());
    assert!(!registry.actors().await.unwrap().contains("r1"));
}

/// Starting an actor under a UUID a live actor holds fails with `UuidInUse`, from any
/// process; invalid UUIDs are refused.
pub async fn taken_uuid_is_refused(broker: &dyn TestBroker) {
    let a = node(broker, "a").await;
    let b = node(broker, "a").await;
    let _first = counter(&a, "dup").await;
    let second = b.spawn(Counter::named("dup")).uuid("dup").start().await;
    assert!(
        matches!(second, Err(Error::UuidInUse { ref uuid }) if uuid == "dup"),
        "{second:?}"
    );
    let invalid = b.spawn(Counter::default()).uuid("has space").start().await;
    assert!(
        matches!(invalid, Err(Error::InvalidName { .. })),
        "{invalid:?}"
    );
}

/// Of many processes racing to register one UUID, exactly one wins.
pub async fn concurrent_registration_has_one_winner(broker: &dyn TestBroker) {
    let mut nodes = Vec::new();
    for _ in 0..8 {
        nodes.push(node(broker, "a").await);
    }
    let attempts = nodes
        .iter()
        .map(|n| n.spawn(Counter::named("race")).uuid("race").start());
    let results = futures_util::future::join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "exactly one registration must win");
    for result in &results {
        if let Err(e) = result {
            assert!(matches!(e, Error::UuidInUse { .. }), "loser saw {e}");
        }
    }
}

/// An actor without a given UUID gets a random v4 UUID and is registered under it.
pub async fn generated_uuid_is_v4(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let actor = node.spawn(Counter::default()).start().await.unwrap();
    let uuid = uuid::Uuid::parse_str(actor.uuid().as_str()).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 4);
    assert!(node.registry().exists(actor.uuid().as_str()).await.unwrap());
}

/// Calls from another process return pending replies that resolve in any order, with
/// `ready` telling without waiting.
pub async fn calls_resolve_out_of_order(broker: &dyn TestBroker) {
    let host = node(broker, "a").await;
    let caller = node(broker, "a").await;
    let _actor = counter(&host, "c1").await;
    let proxy: CounterProxy = caller.registry().get_proxy("c1").await.unwrap();
    let mut first = proxy.add(1).await.unwrap();
    let second = proxy.add(2).await.unwrap();
    assert_eq!(second.get(CALL_TIMEOUT).await.unwrap(), 3);
    assert!(
        first.ready(),
        "the earlier call must be ready once a later one resolved"
    );
    assert_eq!(first.await.unwrap(), 1);
}

/// `ready` is false while a call runs; `get` with a short timeout gives `Timeout`.
pub async fn pending_ready_and_get_timeout(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let actor = counter(&node, "slowpoke").await;
    let mut pending = actor.proxy().sleep_ms(500).await.unwrap();
    assert!(!pending.ready());
    let started = Instant::now();
    let result = pending.get(Duration::from_millis(100)).await;
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A proxy built from a UUID asks the actor for its methods; a typed proxy needs them all.
pub async fn proxy_from_uuid_checks_methods(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let _counter = counter(&node, "full").await;
    let _named = node
        .spawn(Named { name: "n".into() })
        .uuid("small")
        .start()
        .await
        .unwrap();
    let untyped: ActorProxy = node.registry().get_proxy("full").await.unwrap();
    let served: BTreeSet<&str> = untyped.methods().iter().map(String::as_str).collect();
    for method in CounterProxy::METHODS {
        assert!(served.contains(method), "{method} missing from {served:?}");
    }
    let wrong = node.registry().get_proxy::<CounterProxy>("small").await;
    assert!(
        matches!(wrong, Err(Error::InvalidProxy { .. })),
        "{wrong:?}"
    );
    let invalid = node.registry().get_proxy::<ActorProxy>("").await;
    assert!(
        matches!(invalid, Err(Error::InvalidName { .. })),
        "{invalid:?}"
    );
    let info = node.registry().describe("full").await.unwrap();
    assert_eq!(info.type_name, "Counter");
    let claim = info.methods.iter().find(|m| m.name == "claim").unwrap();
    assert_eq!(claim.tags, vec!["singular".to_owned()]);
    assert!(claim.params.is_empty());
    let add = info.methods.iter().find(|m| m.name == "add").unwrap();
    assert_eq!(
        add.params,
        vec![ParamInfo {
            name: "n".to_owned(),
            type_name: "u64".to_owned()
        }]
    );
    assert_eq!(
        node.registry().describe("small").await.unwrap().type_name,
        "Named"
    );
}

/// Discovery (`describe`, `get_proxy`) is answered by the actor's node, not through its
/// mailbox: an actor busy for seconds is described at once, and a discovery that gets no
/// answer ends at the registry's deadline with a timeout that names no internal method.
pub async fn discovery_answers_while_the_actor_is_busy(broker: &dyn TestBroker) {
    let host = node(broker, "a").await;
    let caller = node(broker, "a").await;
    let actor = counter(&host, "busy").await;
    let _busy = actor.proxy().sleep_ms(5_000).await.unwrap();
    let _queued = actor.proxy().add(1).await.unwrap();
    let started = Instant::now();
    let proxy: CounterProxy = caller.registry().get_proxy("busy").await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(50),
        "get_proxy on a busy actor took {took:?}"
    );
    assert_eq!(proxy.untyped().timeout(), CALL_TIMEOUT);
    let short = caller.registry().with_timeout(Duration::from_millis(300));
    let proxy: CounterProxy = short.get_proxy("busy").await.unwrap();
    assert_eq!(proxy.untyped().timeout(), Duration::from_millis(300));
    let missing = short.describe("nobody-here").await;
    assert!(
        matches!(missing, Err(Error::InvalidActor { .. })),
        "{missing:?}"
    );
}

/// A node lists the actors it runs with their methods' calls, errors and time spent,
/// counting direct and cluster calls alike.
pub async fn local_actors_count_method_use(broker: &dyn TestBroker) {
    let host = node(broker, "a").await;
    let caller = node(broker, "a").await;
    let actor = counter(&host, "counted").await;
    actor.join("counted-channel").await.unwrap();
    let proxy: CounterProxy = caller.registry().get_proxy("counted").await.unwrap();
    proxy.add(1).await.unwrap().await.unwrap();
    proxy.sleep_ms(20).await.unwrap().await.unwrap();
    let failed = proxy.fail("no luck".into()).await.unwrap().await;
    assert!(failed.is_err());
    let cluster: CounterCluster = caller.cluster("counted-channel").unwrap();
    cluster.add(2).await.unwrap().all().await.unwrap();

    assert!(caller.local_actors().is_empty());
    let actors = host.local_actors();
    assert_eq!(actors.len(), 1, "{actors:?}");
    assert_eq!(
        (actors[0].uuid.as_str(), actors[0].type_name.as_str()),
        ("counted", "Counter")
    );
    let method = |name: &str| {
        actors[0]
            .methods
            .iter()
            .find(|m| m.info.name == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
            .clone()
    };
    assert_eq!((method("add").calls, method("add").errors), (2, 0));
    assert_eq!(method("sleep_ms").calls, 1);
    assert!(method("sleep_ms").processing >= Duration::from_millis(20));
    let fail = method("fail");
    assert_eq!((fail.calls, fail.errors), (1, 1));
    assert!(fail.last_error.unwrap().contains("no luck"));
    assert_eq!(method("boom").calls, 0);
    actor.stop().await;
    assert!(host.local_actors().is_empty());
}

/// A call nobody receives fails at once with `InvalidActor`, not at the deadline.
pub async fn missing_actor_fails_fast(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let started = Instant::now();
    let result = node.registry().get_proxy::<ActorProxy>("nobody").await;
    assert!(
        matches!(result, Err(Error::InvalidActor { ref uuid }) if uuid == "nobody"),
        "{result:?}"
    );
    assert!(
        started.elapsed() < CALL_TIMEOUT / 2,
        "took {:?}",
        started.elapsed()
    );
}

/// A call's value, whether the call fails when published or through its pending reply (a
/// broker may say only later that nobody received it).
async fn outcome<T: serde::de::DeserializeOwned>(
    call: impl std::future::Future<Output = crate::error::Result<crate::client::Pending<T>>>,
) -> crate::error::Result<T> {
    call.await?.await
}

/// Stopping an actor unregisters it; later calls fail with `InvalidActor`, long before
/// their deadline.
pub async fn stop_unregisters(broker: &dyn TestBroker) {
    let host = node(broker, "a").await;
    let caller = node(broker, "a").await;
    let actor = counter(&host, "brief").await;
    let proxy: CounterProxy = caller.registry().get_proxy("brief").await.unwrap();
    assert!(actor.is_alive());
    actor.stop().await;
    assert!(!actor.is_alive());
    assert!(!caller.registry().exists("brief").await.unwrap());
    let started = Instant::now();
    let result = outcome(proxy.add(1)).await;
    assert!(
        matches!(result, Err(Error::InvalidActor { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < CALL_TIMEOUT / 2);
    actor.stop().await;
}

/// Unknown methods, handler errors, panics and bad arguments come back as errors, and the
/// actor keeps serving.
pub async fn remote_failures_are_reported_and_survived(broker: &dyn TestBroker) {
    let host = node(broker, "a").await;
    let caller = node(broker, "a").await;
    let actor = counter(&host, "sturdy").await;
    let proxy: CounterProxy = caller.registry().get_proxy("sturdy").await.unwrap();
    let untyped = proxy.untyped().clone();

    let unknown = untyped.call::<u64>("nope", ()).await.unwrap().await;
    assert!(
        matches!(unknown, Err(Error::UnknownMethod { ref method }) if method == "nope"),
        "{unknown:?}"
    );

    let failed = proxy.fail("bad input".into()).await.unwrap().await;
    assert!(
        matches!(failed, Err(Error::Remote { kind: RemoteErrorKind::Handler, ref message, .. }) if message == "bad input"),
        "{failed:?}"
    );

    let panicked = proxy.boom().await.unwrap().await;
    assert!(
        matches!(panicked, Err(Error::Remote { kind: RemoteErrorKind::Panic, ref message, .. }) if message.contains("boom")),
        "{panicked:?}"
    );

    let bad_args = untyped
        .call::<u64>("add", ("not a number",))
        .await
        .unwrap()
        .await;
    assert!(
        matches!(
            bad_args,
            Err(Error::Remote {
                kind: RemoteErrorKind::BadArguments,
                ..
            })
        ),
        "{bad_args:?}"
    );

    assert_eq!(proxy.add(5).await.unwrap().await.unwrap(), 5);
    assert!(actor.is_alive());
}

/// A slow actor gives `Timeout` at the deadline, never a hang, and serves later calls.
pub async fn slow_actor_times_out(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let actor = counter(&node, "slow").await;
    let proxy = actor.proxy().with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let result = proxy.sleep_ms(1500).await.unwrap().await;
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(actor.proxy().add(1).await.unwrap().await.unwrap(), 1);
}

/// Calls to one actor run one at a time, in the order they were sent.
pub async fn calls_run_in_order(broker: &dyn TestBroker) {
    let host = node(broker, "a").await;
    let caller = node(broker, "a").await;
    let _actor = counter(&host, "ordered").await;
    let proxy: CounterProxy = caller.registry().get_proxy("ordered").await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..50 {
        pending.push(proxy.add(1).await.unwrap());
    }
    for (i, reply) in pending.into_iter().enumerate() {
        assert_eq!(reply.await.unwrap(), i as u64 + 1);
    }
}

/// Malformed frames published straight to an actor's channel are dropped; the actor
/// keeps serving.
pub async fn malformed_frames_are_survived(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let actor = counter(&node, "target").await;
    let channel = Channel::Actor(ActorId::new("target").unwrap());
    let reply_frame = encode_frame(
        &Frame::Reply(Reply {
            id: 1,
            from: "x".into(),
            outcome: Outcome::Declined,
        }),
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    let mut bad_call = encode_frame(
        &Frame::Call(crate::frame::Call {
            id: 1,
            reply_to: "".into(),
            method: "add".into(),
            args: vec![],
            deadline_ms: u64::MAX,
            kwargs: None,
            trace: None,
            one_way: false,
        }),
        DEFAULT_MAX_FRAME,
    )
    .unwrap()
    .to_vec();
    bad_call.truncate(bad_call.len() - 2);
    let garbage: Vec<Bytes> = vec![
        Bytes::new(),
        Bytes::from_static(&[1]),
        Bytes::from_static(&[9, 1, 0x90]),
        Bytes::from_static(&[1, 77, 0x90]),
        Bytes::from_static(&[1, 1, 0xc1, 0xff, 0x00]),
        Bytes::from_static(b"\x01\x01\xdd\xff\xff\xff\xff"),
        Bytes::from(bad_call),
        reply_frame,
        Bytes::from(vec![0xAB; node.max_frame_bytes() / 2 + 1]),
    ];
    for bytes in garbage {
        // A broker may refuse some of these itself; that is fine too.
        let _ = node.backend().transport().publish(&channel, bytes).await;
    }
    assert_eq!(actor.proxy().add(2).await.unwrap().await.unwrap(), 2);
    assert!(actor.is_alive());
}

/// Arguments that make a frame over the limit are refused before sending, naming the limit.
pub async fn oversize_arguments_are_refused(broker: &dyn TestBroker) {
    let node = Node::builder(broker.connect("a").await)
        .call_timeout(CALL_TIMEOUT)
        .max_frame_bytes(4096)
        .build();
    let actor = counter(&node, "small-frames").await;
    let result = actor.proxy().size(ByteBuf::from(vec![7; 10_000])).await;
    match result {
        Err(Error::Frame(FrameError::TooLarge { limit, .. })) => assert_eq!(limit, 4096),
        other => panic!("expected a frame-too-large error, got {other:?}"),
    }
    assert_eq!(
        actor
            .proxy()
            .size(ByteBuf::from(vec![7; 100]))
            .await
            .unwrap()
            .await
            .unwrap(),
        100
    );
}

/// A cluster call reaches every member on every node; the gatherer knows how many replies
/// to expect and yields each.
pub async fn cluster_gathers_every_member(broker: &dyn TestBroker) {
    let a = node(broker, "a").await;
    let b = node(broker, "a").await;
    let caller = node(broker, "a").await;
    let mut actors = vec![counter(&a, "m1").await, counter(&a, "m2").await];
    actors.push(counter(&b, "m3").await);
    for actor in &actors {
        actor.join("workers").await.unwrap();
    }
    let cluster: CounterCluster = caller.cluster("workers").unwrap();
    let mut gather = cluster.name().await.unwrap();
    assert_eq!(gather.expected().await.unwrap(), 3);
    let mut names = BTreeSet::new();
    while let Some(name) = gather.next().await {
        names.insert(name.unwrap());
    }
    assert_eq!(
        names,
        BTreeSet::from(["m1".into(), "m2".into(), "m3".into()])
    );
    let values = cluster.add(1).await.unwrap().all().await.unwrap();
    assert_eq!(values, vec![1, 1, 1]);
}

/// One-way calls (`tell`) run in order with the caller's other calls and send nothing back,
/// not even an error; a `singular` one still runs on exactly one member; a tell to nobody
/// is a typed error where the broker can tell.
pub async fn one_way_calls_run_without_replies(broker: &dyn TestBroker) {
    let host = node(broker, "a").await;
    let other = node(broker, "a").await;
    let caller = node(broker, "a").await;
    let first = counter(&host, "told1").await;
    let second = counter(&other, "told2").await;
    let proxy: CounterProxy = caller.registry().get_proxy("told1").await.unwrap();
    proxy.tell_add(5).await.unwrap();
    proxy.tell_fail("ignored".into()).await.unwrap();
    proxy.tell_add(2).await.unwrap();
    assert_eq!(proxy.add(0).await.unwrap().await.unwrap(), 7);

    first.join("told").await.unwrap();
    second.join("told").await.unwrap();
    let cluster: CounterCluster = caller.cluster("told").unwrap();
    cluster.tell_add(1).await.unwrap();
    cluster.tell_claim().await.unwrap();
    let mut totals = cluster.add(0).await.unwrap().all().await.unwrap();
    totals.sort_unstable();
    assert_eq!(totals, vec![1, 8]);
    let mut claims = cluster.claims().await.unwrap().all().await.unwrap();
    claims.sort_unstable();
    assert_eq!(claims, vec![0, 1], "a singular one-way call runs once");

    let transport = caller.backend().transport();
    if transport.counts_receivers() {
        let nobody = caller
            .registry()
            .proxy::<CounterProxy>("nobody-told")
            .unwrap();
        let told = nobody.tell_add(1).await;
        assert!(matches!(told, Err(Error::InvalidActor { .. })), "{told:?}");
        let empty: CounterCluster = caller.cluster("nobody-listens").unwrap();
        let told = empty.tell_add(1).await;
        assert!(matches!(told, Err(Error::EmptyCluster { .. })), "{told:?}");
    }
}

/// `members(channel)` lists the actors on a cluster channel with their type names, from
/// every node, at once even when a member is busy; an empty channel lists nobody.
pub async fn members_of_a_channel_are_listed(broker: &dyn TestBroker) {
    let a = node(broker, "a").await;
    let b = node(broker, "a").await;
    let c1 = counter(&a, "c1").await;
    let c2 = counter(&b, "c2").await;
    let named = b
        .spawn(Named { name: "n".into() })
        .uuid("n1")
        .start()
        .await
        .unwrap();
    c1.join("crew").await.unwrap();
    c2.join("crew").await.unwrap();
    named.join("crew").await.unwrap();
    let _busy = c1.proxy().sleep_ms(3_000).await.unwrap();
    let registry = node(broker, "a").await.registry();
    let started = Instant::now();
    let members = registry.members("crew").await.unwrap();
    let took = started.elapsed();
    let listed: Vec<(&str, &str)> = members
        .iter()
        .map(|m| (m.uuid.as_str(), m.type_name.as_str()))
        .collect();
    assert_eq!(
        listed,
        vec![("c1", "Counter"), ("c2", "Counter"), ("n1", "Named")]
    );
    assert!(
        took < Duration::from_millis(500),
        "listing took {took:?} with a busy member"
    );
    assert!(c2.part("crew").await.unwrap());
    assert_eq!(registry.members("crew").await.unwrap().len(), 2);
    assert!(registry.members("nobody-joined").await.unwrap().is_empty());
}

/// `join_with` routes a channel's calls to a custom handler instead of the methods.
pub async fn cluster_custom_handler(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let actor = counter(&node, "custom").await;
    actor
        .join_with("custom-channel", FixedAnswer("fixed"))
        .await
        .unwrap();
    let cluster: ClusterProxy = node.cluster("custom-channel").unwrap();
    let replies: Vec<String> = cluster
        .call("anything", (1, 2))
        .await
        .unwrap()
        .all()
        .await
        .unwrap();
    assert_eq!(replies, vec!["fixed:anything".to_owned()]);
}

/// Parting leaves the cluster; with nobody left, calls fail with `EmptyCluster`.
pub async fn part_and_empty_cluster(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let caller = node.clone();
    let cluster: CounterCluster = caller.cluster("parting").unwrap();
    let empty = cluster.name().await;
    assert!(
        matches!(empty, Err(Error::EmptyCluster { ref channel }) if channel == "parting"),
        "{empty:?}"
    );
    let one = counter(&node, "p1").await;
    let two = counter(&node, "p2").await;
    one.join("parting").await.unwrap();
    two.join("parting").await.unwrap();
    assert_eq!(cluster.name().await.unwrap().expected().await.unwrap(), 2);
    assert!(one.part("parting").await.unwrap());
    assert!(!one.part("parting").await.unwrap());
    assert_eq!(
        cluster.name().await.unwrap().all().await.unwrap(),
        vec!["p2".to_owned()]
    );
    assert!(two.part("parting").await.unwrap());
    let empty = cluster.name().await;
    assert!(
        matches!(empty, Err(Error::EmptyCluster { .. })),
        "{empty:?}"
    );
}

/// Each singular cluster call runs on exactly one member; the others decline, counted but
/// not yielded.
pub async fn singular_runs_once_per_call(broker: &dyn TestBroker) {
    let a = node(broker, "a").await;
    let b = node(broker, "a").await;
    let mut actors = Vec::new();
    for (i, host) in [&a, &a, &b, &b].into_iter().enumerate() {
        let actor = counter(host, &format!("s{i}")).await;
        actor.join("singular").await.unwrap();
        actors.push(actor);
    }
    let cluster: CounterCluster = a.cluster("singular").unwrap();
    for _ in 0..10 {
        let mut gather = cluster.claim().await.unwrap();
        assert_eq!(gather.expected().await.unwrap(), 4);
        let mut winners = Vec::new();
        while let Some(winner) = gather.next().await {
            winners.push(winner.unwrap());
        }
        assert_eq!(winners.len(), 1, "one member runs it: {winners:?}");
        assert_eq!(gather.declined(), 3);
    }
    let mut total = 0;
    for actor in &actors {
        total += actor.proxy().claims().await.unwrap().await.unwrap();
    }
    assert_eq!(total, 10, "each call ran exactly once in all");
}

/// A singular broadcast ends as soon as the one member has run it: members busy with
/// other calls decline at once instead of after their current call, and the node hands the
/// call to an idle member.
pub async fn singular_broadcast_does_not_wait_for_busy_members(broker: &dyn TestBroker) {
    let host = node(broker, "a").await;
    let caller = node(broker, "a").await;
    let mut actors = Vec::new();
    for i in 0..3 {
        let actor = counter(&host, &format!("w{i}")).await;
        actor.join("jobs").await.unwrap();
        actors.push(actor);
    }
    let _busy = actors[0].proxy().sleep_ms(2_000).await.unwrap();
    // The busy member is in its call before the broadcast arrives.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cluster: CounterCluster = caller.cluster("jobs").unwrap();
    let started = Instant::now();
    let mut gather = cluster.claim().await.unwrap();
    assert_eq!(gather.expected().await.unwrap(), 3);
    let mut ran = Vec::new();
    while let Some(reply) = gather.next().await {
        ran.push(reply.unwrap());
    }
    let took = started.elapsed();
    assert_eq!(ran.len(), 1, "one member runs it: {ran:?}");
    assert_eq!(gather.declined(), 2);
    assert!(
        took < Duration::from_millis(200),
        "the singular broadcast took {took:?} with one member busy"
    );
    assert_ne!(ran[0], "w0", "the busy member was chosen");
}

/// A member that reaches a singular call after the winner finished still declines it.
pub async fn singular_late_member_declines(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let quick = counter(&node, "quick").await;
    let busy = counter(&node, "busy").await;
    quick.join("late").await.unwrap();
    busy.join("late").await.unwrap();
    // Keep `busy` in a long call; its direct channel and the cluster channel are read by
    // different tasks, so give the long call a head start before broadcasting.
    let busy_now = busy.proxy().sleep_ms(900).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let cluster: CounterCluster = node.cluster("late").unwrap();
    let mut gather = cluster.claim().await.unwrap();
    let first = gather.next().await.unwrap().unwrap();
    assert_eq!(first, "quick");
    assert!(gather.next().await.is_none());
    assert_eq!(gather.declined(), 1);
    busy_now.await.unwrap();
    assert_eq!(busy.proxy().claims().await.unwrap().await.unwrap(), 0);
    // A direct call of a singular method is not a cluster call: it runs.
    assert_eq!(busy.proxy().claim().await.unwrap().await.unwrap(), "busy");
}

/// A before hook can answer without running the method; after hooks replace the result in
/// the order attached; tags are listed.
pub async fn hooks_short_circuit_and_replace(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let actor = counter(&node, "hooked").await;
    let proxy = actor.proxy();
    assert_eq!(
        proxy.cached("k".into()).await.unwrap().await.unwrap(),
        "cached:k"
    );
    assert_eq!(
        proxy.fresh().await.unwrap().await.unwrap(),
        0,
        "the method must not run"
    );
    assert_eq!(
        proxy.suffixed("x".into()).await.unwrap().await.unwrap(),
        "x+a+b"
    );
    let info = node.registry().describe("hooked").await.unwrap();
    let suffixed = info.methods.iter().find(|m| m.name == "suffixed").unwrap();
    assert_eq!(suffixed.tags, vec!["suffixed".to_owned()]);
}

/// Leases: one holder at a time, released only by the holder, taken again after expiry.
pub async fn locks_are_leases(broker: &dyn TestBroker) {
    let a = node(broker, "a").await;
    let b = node(broker, "a").await;
    let lease = a.locks().acquire("job").await.unwrap().expect("free lock");
    assert!(b.locks().acquire("job").await.unwrap().is_none());
    assert!(b
        .locks()
        .acquire("job")
        .context("other.ctx")
        .await
        .unwrap()
        .is_some());
    assert!(lease.renew(Duration::from_secs(3)).await.unwrap());
    assert!(lease.release().await.unwrap());
    let short = b
        .locks()
        .acquire("job")
        .expiry(Duration::from_millis(300))
        .await
        .unwrap()
        .expect("released lock is free");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let taker = a
        .locks()
        .acquire("job")
        .await
        .unwrap()
        .expect("expired lease can be taken");
    assert!(
        !short.renew(Duration::from_secs(1)).await.unwrap(),
        "lost lease renewed"
    );
    assert!(
        !short.release().await.unwrap(),
        "a lost lease released someone else's"
    );
    assert!(b.locks().acquire("job").await.unwrap().is_none());
    assert!(taker.release().await.unwrap());
}

/// Many contenders never hold one lock at once.
pub async fn lock_contention_has_one_holder(broker: &dyn TestBroker) {
    let node = node(broker, "a").await;
    let holders = Arc::new(AtomicUsize::new(0));
    let wins = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let locks = node.locks().clone();
        let holders = holders.clone();
        let wins = wins.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                if let Some(lease) = locks
                    .acquire("contended")
                    .expiry(Duration::from_secs(5))
                    .await
                    .unwrap()
                {
                    assert_eq!(
                        holders.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once"
                    );
                    wins.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    assert!(lease.release().await.unwrap());
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(wins.load(Ordering::SeqCst) > 0);
}

/// Different prefixes (namespaces) do not see each other's actors, clusters or calls.
pub async fn prefixes_isolate(broker: &dyn TestBroker) {
    let a = node(broker, "a").await;
    let b = node(broker, "b").await;
    let in_a = counter(&a, "same").await;
    let in_b = counter(&b, "same").await;
    in_a.join("shared").await.unwrap();
    assert!(a.registry().actors().await.unwrap().contains("same"));
    assert_eq!(
        b.registry().actors().await.unwrap(),
        BTreeSet::from(["same".to_owned()])
    );
    in_b.stop().await;
    assert!(!b.registry().exists("same").await.unwrap());
    assert!(a.registry().exists("same").await.unwrap());
    let from_b = b.registry().get_proxy::<ActorProxy>("same").await;
    assert!(
        matches!(from_b, Err(Error::InvalidActor { .. })),
        "{from_b:?}"
    );
    let cluster: CounterCluster = b.cluster("shared").unwrap();
    assert!(matches!(
        cluster.name().await,
        Err(Error::EmptyCluster { .. })
    ));
}

/// A call waiting on an actor whose process dies fails with `ActorLost` once the actor's
/// registration lapses (within about its liveness TTL), not at the call's deadline, and a
/// monitor on the actor fires in the same bound; a monitor on an actor that stops fires
/// too.
pub async fn dead_actors_fail_waiting_calls_and_fire_monitors(broker: &dyn TestBroker) {
    let ttl = Duration::from_millis(600);
    let host = Node::builder(broker.connect("a").await)
        .liveness_ttl(ttl)
        .build();
    let caller = Node::builder(broker.connect("a").await)
        .call_timeout(Duration::from_secs(20))
        .liveness_ttl(ttl)
        .build();
    let mortal = counter(&host, "mortal").await;
    let proxy: CounterProxy = caller.registry().proxy("mortal").unwrap();
    let waiting = proxy.sleep_ms(10_000).await.unwrap();
    let registry = caller.registry();
    let monitor = tokio::spawn(async move {
        let started = Instant::now();
        registry.monitor("mortal").await.unwrap();
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = Instant::now();
    host.simulate_crash().await;
    drop(mortal);
    let outcome = waiting.await;
    let failed_after = killed.elapsed();
    assert!(
        matches!(&outcome, Err(Error::ActorLost { uuid }) if uuid == "mortal"),
        "{outcome:?}"
    );
    assert!(
        failed_after < ttl * 3,
        "the waiting call failed {failed_after:?} after the kill (liveness TTL {ttl:?})"
    );
    let fired = monitor.await.unwrap();
    assert!(
        fired < ttl * 3 + Duration::from_millis(100),
        "the monitor fired {fired:?} after it began"
    );

    let other = node(broker, "a").await;
    let survivor = counter(&other, "survivor").await;
    let registry = caller.registry();
    let watching = tokio::spawn(async move { registry.monitor("survivor").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watching.is_finished(), "the monitor fired on a live actor");
    survivor.stop().await;
    tokio::time::timeout(ttl * 2, watching)
        .await
        .expect("the monitor did not fire after the actor stopped")
        .unwrap()
        .unwrap();
}

/// A process that dies without stopping its actors loses them within the liveness TTL:
/// they leave the registry and their clusters, and calls fail with `InvalidActor`.
pub async fn crashed_process_actors_expire(broker: &dyn TestBroker) {
    let doomed = Node::builder(broker.connect("a").await)
        .call_timeout(CALL_TIMEOUT)
        .liveness_ttl(SHORT_TTL)
        .build();
    let survivor = node(broker, "a").await;
    let actor = counter(&doomed, "mortal").await;
    actor.join("mortals").await.unwrap();
    assert!(survivor.registry().exists("mortal").await.unwrap());
    doomed.simulate_crash().await;
    drop(actor);
    drop(doomed);
    let started = Instant::now();
    let bound = SHORT_TTL * 4 + Duration::from_secs(2);
    while survivor.registry().exists("mortal").await.unwrap() {
        assert!(
            started.elapsed() < bound,
            "still registered after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!survivor
        .registry()
        .actors()
        .await
        .unwrap()
        .contains("mortal"));
    let call = survivor.registry().get_proxy::<ActorProxy>("mortal").await;
    assert!(matches!(call, Err(Error::InvalidActor { .. })), "{call:?}");
    let cluster: CounterCluster = survivor.cluster("mortals").unwrap();
    loop {
        match cluster.name().await {
            Err(Error::EmptyCluster { .. }) => break,
            other => {
                assert!(
                    started.elapsed() < bound,
                    "cluster still has members: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `Node::shutdown` stops the node's actors and unregisters them.
pub async fn shutdown_stops_actors(broker: &dyn TestBroker) {
    let host = node(broker, "a").await;
    let other = node(broker, "a").await;
    let one = counter(&host, "sd1").await;
    let two = counter(&host, "sd2").await;
    host.registry().register("sd-placeholder").await.unwrap();
    host.shutdown().await;
    assert!(!one.is_alive() && !two.is_alive());
    assert!(!other.registry().exists("sd1").await.unwrap());
    assert!(!other.registry().exists("sd-placeholder").await.unwrap());
    let result = other.registry().get_proxy::<ActorProxy>("sd2").await;
    assert!(
        matches!(result, Err(Error::InvalidActor { .. })),
        "{result:?}"
    );
}

/// When an actor's mailbox is full, further calls are shed with `Overloaded` at once
/// instead of queueing without bound.
pub async fn full_mailbox_sheds_calls(broker: &dyn TestBroker) {
    let node = Node::builder(broker.connect("a").await)
        .call_timeout(CALL_TIMEOUT)
        .mailbox_capacity(1)
        .build();
    let actor = counter(&node, "swamped").await;
    let proxy = actor.proxy();
    let busy = proxy.sleep_ms(500).await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..10 {
        pending.push(proxy.add(1).await.unwrap());
    }
    let mut shed = 0;
    for reply in pending {
        match reply.await {
            Ok(_) => {}
            Err(Error::Overloaded { uuid }) => {
                assert_eq!(uuid, "swamped");
                shed += 1;
            }
            Err(other) => panic!("expected a value or Overloaded, got {other}"),
        }
    }
    assert!(shed >= 8, "only {shed} of 10 calls were shed");
    busy.await.unwrap();
}

/// A live process renews its registrations: its actors outlive many liveness TTLs, and a
/// registration the broker lost (removed by hand here) comes back on the next renewal.
pub async fn live_actors_stay_registered(broker: &dyn TestBroker) {
    let host = Node::builder(broker.connect("a").await)
        .call_timeout(CALL_TIMEOUT)
        .liveness_ttl(SHORT_TTL)
        .build();
    let other = node(broker, "a").await;
    let actor = counter(&host, "immortal").await;
    tokio::time::sleep(SHORT_TTL * 3).await;
    assert!(other.registry().exists("immortal").await.unwrap());
    let proxy: CounterProxy = other.registry().get_proxy("immortal").await.unwrap();
    assert_eq!(proxy.add(1).await.unwrap().await.unwrap(), 1);
    assert!(other.registry().unregister("immortal").await.unwrap());
    tokio::time::sleep(SHORT_TTL).await;
    assert!(
        other.registry().exists("immortal").await.unwrap(),
        "not re-registered"
    );
    assert!(actor.is_alive());
}

/// Cluster memberships outlive many liveness TTLs while their nodes live (backends that
/// cannot count receivers keep them in the registry, renewed with the node's actors).
pub async fn cluster_membership_is_renewed(broker: &dyn TestBroker) {
    let mut hosts = Vec::new();
    let mut actors = Vec::new();
    for i in 0..2 {
        let host = Node::builder(broker.connect("a").await)
            .call_timeout(CALL_TIMEOUT)
            .liveness_ttl(SHORT_TTL)
            .build();
        for j in 0..2 {
            let actor = counter(&host, &format!("r{i}{j}")).await;
            actor.join("renewed").await.unwrap();
            actors.push(actor);
        }
        hosts.push(host);
    }
    let caller = node(broker, "a").await;
    let cluster: CounterCluster = caller.cluster("renewed").unwrap();
    for _ in 0..4 {
        tokio::time::sleep(SHORT_TTL).await;
        let names = cluster.name().await.unwrap().all().await.unwrap();
        assert_eq!(names.len(), 4, "members lost: {names:?}");
    }
}
