//! The NATS service API: nodes answer `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` (alone,
//! with the service name, with the name and node id), as `nats micro ls / info / stats`
//! ask, with their actors' methods as endpoints. Answers are read with async-nats's own
//! service types, so they follow the schema its client expects.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::service::{endpoint, Info, PingResponse, Stats};
use async_nats::{Client, RequestErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;
use rodario_core::backend::ConnectionState;
use rodario_core::node::Node;
use rodario_core::testkit::actors::{Counter, CounterProxy};
use rodario_core::testkit::{unique, until_ok};
use rodario_nats::testkit::{config_for, NatsServer};
use rodario_nats::NatsBackend;
use tokio::time::Instant;

/// The service name of the fixture's prefix (escaped as bucket names are; test prefixes
/// have nothing to escape).
fn service_name(fx: &NatsServer) -> String {
    fx.prefix().to_owned()
}

async fn client(fx: &NatsServer) -> Client {
    async_nats::connect(fx.url()).await.unwrap()
}

/// The first answer to a request on `subject`, once the node serves it (it starts serving
/// in a task when built).
async fn ask(client: &Client, subject: String) -> Bytes {
    until_ok(Duration::from_secs(5), &subject.clone(), || {
        let subject = subject.clone();
        async move { client.request(subject, Bytes::new()).await }
    })
    .await
    .payload
}

/// The answers to one request on `subject` that `wanted` keeps: waits up to 5 s for
/// `expected` of them, then 200 ms more for any beyond (which the caller then sees).
async fn gather(
    client: &Client,
    subject: &str,
    expected: usize,
    wanted: impl Fn(&[u8]) -> bool,
) -> Vec<Bytes> {
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply(subject.to_owned(), inbox, Bytes::new())
        .await
        .unwrap();
    let mut gathered = Vec::new();
    let mut deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(Some(answer)) = tokio::time::timeout_at(deadline, answers.next()).await {
        if wanted(&answer.payload) {
            gathered.push(answer.payload);
            if gathered.len() == expected {
                deadline = Instant::now() + Duration::from_millis(200);
            }
        }
    }
    gathered
}

/// The (service, id) pairs of the ping answers on `subject` from the given services,
/// `expected` of them.
async fn pings(
    client: &Client,
    subject: &str,
    expected: usize,
    services: &[&str],
) -> BTreeSet<(String, String)> {
    let ping = |answer: &[u8]| serde_json::from_slice::<PingResponse>(answer).unwrap();
    gather(client, subject, expected, |answer| {
        services.contains(&ping(answer).name.as_str())
    })
    .await
    .iter()
    .map(|answer| {
        let ping = ping(answer);
        (ping.name, ping.id)
    })
    .collect()
}

fn endpoint_of<'a>(
    endpoints: &'a [endpoint::Stats],
    name: &str,
    actor: &str,
) -> &'a endpoint::Stats {
    endpoints
        .iter()
        .find(|e| e.name == name && e.subject.ends_with(&format!(".{actor}")))
        .unwrap_or_else(|| panic!("no endpoint {name} of {actor}"))
}

/// A node with two counters answers with its id, lists each actor's methods as endpoints
/// on the actor's subject, and counts the calls made to each, failed ones as errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_lists_the_actors_methods_and_stats_count_the_calls() {
    let fx = NatsServer::start().await;
    let node = Node::new(fx.backend().await);
    let id = node.id().to_string();
    let name = service_name(&fx);
    let _first = node
        .spawn(Counter::named("one"))
        .uuid("one")
        .start()
        .await
        .unwrap();
    let _second = node
        .spawn(Counter::named("two"))
        .uuid("two")
        .start()
        .await
        .unwrap();
    let one: CounterProxy = node.registry().get_proxy("one").await.unwrap();
    let two: CounterProxy = node.registry().get_proxy("two").await.unwrap();
    assert_eq!(one.add(2).await.unwrap().await.unwrap(), 2);
    assert_eq!(one.add(3).await.unwrap().await.unwrap(), 5);
    assert!(one
        .fail("out of stock".into())
        .await
        .unwrap()
        .await
        .is_err());
    assert_eq!(two.name().await.unwrap().await.unwrap(), "two");

    let nats = client(&fx).await;
    let ping: PingResponse =
        serde_json::from_slice(&ask(&nats, format!("$SRV.PING.{name}.{id}")).await).unwrap();
    assert_eq!(ping.kind, "io.nats.micro.v1.ping_response");
    assert_eq!(
        (ping.name.as_str(), ping.id.as_str()),
        (name.as_str(), id.as_str())
    );
    assert_eq!(ping.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        ping.metadata.get("prefix").map(String::as_str),
        Some(fx.prefix())
    );

    // The verb alone reaches every service on the server: this one's answer is among them.
    let pings = pings(&nats, "$SRV.PING", 1, &[&name]).await;
    assert_eq!(pings, BTreeSet::from([(name.clone(), id.clone())]));

    for subject in ["$SRV.INFO".to_owned(), format!("$SRV.INFO.{name}")] {
        let info = |answer: &[u8]| serde_json::from_slice::<Info>(answer).unwrap();
        let answers = gather(&nats, &subject, 1, |answer| info(answer).name == name).await;
        assert_eq!(answers.len(), 1, "INFO answers on {subject}");
        let info = info(&answers[0]);
        assert_eq!(info.kind, "io.nats.micro.v1.info_response");
        assert_eq!(info.id, id);
        assert!(
            info.description.contains(fx.prefix()),
            "{}",
            info.description
        );
        for actor in ["one", "two"] {
            let methods: BTreeSet<&str> = info
                .endpoints
                .iter()
                .filter(|e| e.metadata.get("actor").map(String::as_str) == Some(actor))
                .map(|e| {
                    assert_eq!(e.subject, format!("{}.node.{id}.{actor}", fx.prefix()));
                    assert_eq!(e.metadata["type"], "Counter");
                    assert_eq!(e.name, format!("Counter-{}", e.metadata["method"]));
                    e.metadata["method"].as_str()
                })
                .collect();
            for method in ["add", "name", "fail", "boom", "claim", "cached"] {
                assert!(
                    methods.contains(method),
                    "{actor} lacks {method}: {methods:?}"
                );
            }
        }
        let add = info
            .endpoints
            .iter()
            .find(|e| e.name == "Counter-add")
            .unwrap();
        assert_eq!(add.metadata["params"], "n: u64");
        let cached = info
            .endpoints
            .iter()
            .find(|e| e.name == "Counter-cached")
            .unwrap();
        assert_eq!(cached.metadata["tags"], "cached");
    }

    let answer = ask(&nats, format!("$SRV.STATS.{name}.{id}")).await;
    let stats: Stats = serde_json::from_slice(&answer).unwrap();
    assert_eq!(stats.kind, "io.nats.micro.v1.stats_response");
    assert_eq!(
        (stats.name.as_str(), stats.id.as_str()),
        (name.as_str(), id.as_str())
    );
    let add = endpoint_of(&stats.endpoints, "Counter-add", "one");
    assert_eq!((add.requests, add.errors), (2, 0));
    assert!(add.last_error.is_none());
    assert!(add.processing_time >= add.average_processing_time);
    assert!(add.average_processing_time > Duration::ZERO);
    let fail = endpoint_of(&stats.endpoints, "Counter-fail", "one");
    assert_eq!((fail.requests, fail.errors), (1, 1));
    let last_error = fail.last_error.as_ref().unwrap();
    assert!(last_error.status.contains("out of stock"), "{last_error:?}");
    let name_of_two = endpoint_of(&stats.endpoints, "Counter-name", "two");
    assert_eq!((name_of_two.requests, name_of_two.errors), (1, 0));
    let unused = endpoint_of(&stats.endpoints, "Counter-add", "two");
    assert_eq!(
        (unused.requests, unused.average_processing_time),
        (0, Duration::ZERO)
    );
    // The fields async-nats's types leave out are there too.
    let raw: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(raw["metadata"]["prefix"], fx.prefix());
    assert_eq!(raw["endpoints"][0]["queue_group"], "");
    node.shutdown().await;
}

/// Each node is one instance: a ping without a name is answered by both nodes of a
/// prefix, one with the node id by that node only; a node on another prefix is another
/// service, named after its prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_is_an_instance_and_each_prefix_a_service() {
    let fx = NatsServer::start().await;
    let a = Node::new(fx.backend().await);
    let b = Node::new(fx.backend().await);
    let other_prefix = format!("{}.other", fx.prefix());
    let other = Node::new(
        NatsBackend::connect(fx.config().prefix(other_prefix.clone()))
            .await
            .unwrap(),
    );
    let name = service_name(&fx);
    let other_name = format!("{name}_2Eother");
    let nats = client(&fx).await;
    for (node, service) in [(&a, &name), (&b, &name), (&other, &other_name)] {
        ask(&nats, format!("$SRV.PING.{service}.{}", node.id())).await;
    }

    let services = [name.as_str(), other_name.as_str()];
    let all = BTreeSet::from([
        (name.clone(), a.id().to_string()),
        (name.clone(), b.id().to_string()),
        (other_name.clone(), other.id().to_string()),
    ]);
    assert_eq!(pings(&nats, "$SRV.PING", 3, &services).await, all);
    assert_eq!(
        pings(&nats, &format!("$SRV.PING.{name}"), 2, &services).await,
        BTreeSet::from([
            (name.clone(), a.id().to_string()),
            (name.clone(), b.id().to_string()),
        ])
    );
    assert_eq!(
        pings(&nats, &format!("$SRV.PING.{name}.{}", b.id()), 1, &services).await,
        BTreeSet::from([(name.clone(), b.id().to_string())])
    );
    let info: Info =
        serde_json::from_slice(&ask(&nats, format!("$SRV.INFO.{other_name}")).await).unwrap();
    assert_eq!(info.metadata["prefix"], other_prefix);
    for node in [a, b, other] {
        node.shutdown().await;
    }
}

/// Answering follows the connection through a server restart, also for a node built
/// while the server was down, and ends when the node shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_after_a_restart_and_not_after_shutdown() {
    let mut server = NatsServer::private(&[]);
    let name = service_name(&server);
    let before = Node::new(server.backend().await);
    let _actor = before
        .spawn(Counter::named("x"))
        .uuid("x")
        .start()
        .await
        .unwrap();
    let ping = |node: &Node| format!("$SRV.PING.{name}.{}", node.id());
    ask(&client(&server).await, ping(&before)).await;

    let during = server.backend().await;
    let mut state = during.transport().connection_state().unwrap();
    server.stop();
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|state| *state == ConnectionState::Disconnected),
    )
    .await
    .unwrap()
    .unwrap();
    let during = Node::new(during);
    // Its discovery task runs (and subscribes) while the server is down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart();
    // A new client: the first one may still be reconnecting.
    let nats = client(&server).await;
    for node in [&before, &during] {
        let answer: PingResponse = serde_json::from_slice(&ask(&nats, ping(node)).await).unwrap();
        assert_eq!(answer.id, node.id().to_string());
    }

    for node in [before, during] {
        node.shutdown().await;
        let err = nats.request(ping(&node), Bytes::new()).await.unwrap_err();
        assert_eq!(err.kind(), RequestErrorKind::NoResponders);
    }
}

/// With the service API off, a node answers none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_service_api_off_does_not_answer() {
    let fx = NatsServer::start().await;
    let node = Node::new(
        NatsBackend::connect(fx.config().service_api(false))
            .await
            .unwrap(),
    );
    let on = Node::new(fx.backend().await);
    let nats = client(&fx).await;
    let name = service_name(&fx);
    // The other node answers: the service API works on this server.
    ask(&nats, format!("$SRV.PING.{name}.{}", on.id())).await;
    let err = nats
        .request(format!("$SRV.PING.{name}.{}", node.id()), Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RequestErrorKind::NoResponders);
    node.shutdown().await;
    on.shutdown().await;
}

/// A user the server does not let subscribe to `$SRV.>` still runs and calls actors: its
/// node only does not answer the service API (the server's refusals are logged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_denied_the_service_subjects_still_runs_actors() {
    let conf = std::env::temp_dir().join(format!("{}.conf", unique("rodario-srv-")));
    std::fs::write(
        &conf,
        r#"authorization {
  users = [
    { user: app, password: pw, permissions: { subscribe: { deny: ["$SRV.>"] } } }
    { user: ops, password: pw }
  ]
}
"#,
    )
    .unwrap();
    let server = NatsServer::private(&["-c", conf.to_str().unwrap()]);
    let backend =
        NatsBackend::connect(config_for(server.url(), "denied").user_password("app", "pw"))
            .await
            .unwrap();
    let node = Node::new(backend);
    // The node's discovery task has subscribed and been refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _actor = node
        .spawn(Counter::named("x"))
        .uuid("x")
        .start()
        .await
        .unwrap();
    let proxy: CounterProxy = node.registry().get_proxy("x").await.unwrap();
    assert_eq!(proxy.add(4).await.unwrap().await.unwrap(), 4);

    let ops = async_nats::ConnectOptions::with_user_and_password("ops".into(), "pw".into())
        .connect(server.url())
        .await
        .unwrap();
    let err = ops
        .request(format!("$SRV.PING.denied.{}", node.id()), Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), RequestErrorKind::NoResponders);
    assert_eq!(proxy.add(1).await.unwrap().await.unwrap(), 5);
    node.shutdown().await;
    let _ = std::fs::remove_file(conf);
}
