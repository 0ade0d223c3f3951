//! The metrics a node records (feature `metrics`), as a recorder sees them after calls that
//! succeed, fail, time out, are shed, and name no method; the recorder is installed after
//! the nodes made their first call (and the metric keys they keep).

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use rodario::memory::MemoryBroker;
use rodario::prelude::*;
use rodario::ActorProxy;
use rodario_core::testkit::actors::{Counter, CounterProxy};

/// `name{labels}` → value, for the counters and gauges; histograms → sample count.
fn read(snapshotter: &Snapshotter) -> HashMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let value = match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => n as f64,
                (MetricKind::Gauge, DebugValue::Gauge(g)) => g.into_inner(),
                (MetricKind::Histogram, DebugValue::Histogram(samples)) => samples.len() as f64,
                _ => f64::NAN,
            };
            (name, value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_actor_type_method_and_outcome() {
    let broker = MemoryBroker::new();
    let host = Node::builder(broker.backend()).mailbox_capacity(1).build();
    let caller = Node::builder(broker.backend())
        .call_timeout(Duration::from_secs(2))
        .build();
    let _counter = host
        .spawn(Counter::named("c"))
        .uuid("metered")
        .start()
        .await
        .unwrap();
    let proxy: CounterProxy = caller.registry().get_proxy("metered").await.unwrap();
    // Before any recorder: counted nowhere, but both nodes make the keys they keep.
    proxy.add(1).await.unwrap().await.unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    proxy.add(1).await.unwrap().await.unwrap();
    assert!(proxy.fail("no luck".into()).await.unwrap().await.is_err());
    let untyped: ActorProxy = caller.registry().get_proxy("metered").await.unwrap();
    let unknown = untyped.call::<u64>("nope", ()).await.unwrap().await;
    assert!(unknown.is_err());
    // A busy actor with a mailbox of one: the third call is shed.
    let busy = proxy.sleep_ms(400).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued = proxy.add(1).await.unwrap();
    let shed = proxy.add(1).await.unwrap().await;
    assert!(matches!(shed, Err(Error::Overloaded { .. })), "{shed:?}");
    busy.await.unwrap();
    queued.await.unwrap();
    // Times out at the caller; the actor finishes it 200 ms later.
    let short = proxy
        .untyped()
        .clone()
        .with_timeout(Duration::from_millis(100));
    let timed_out = short
        .call::<u64>("sleep_ms", (300u64,))
        .await
        .unwrap()
        .await;
    assert!(
        matches!(timed_out, Err(Error::Timeout { .. })),
        "{timed_out:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;

    let seen = read(&snapshotter);
    let get = |key: &str| {
        *seen
            .get(key)
            .unwrap_or_else(|| panic!("{key} not recorded; recorded: {:#?}", seen.keys()))
    };
    let sent = "rodario_calls_sent_total{actor_type=Counter,kind=actor,method=";
    assert_eq!(get(&format!("{sent}add,outcome=ok}}")), 2.0);
    assert_eq!(get(&format!("{sent}fail,outcome=remote_error}}")), 1.0);
    assert_eq!(get(&format!("{sent}nope,outcome=unknown_method}}")), 1.0);
    assert_eq!(get(&format!("{sent}add,outcome=shed}}")), 1.0);
    assert_eq!(get(&format!("{sent}sleep_ms,outcome=timeout}}")), 1.0);
    let handled = "rodario_calls_handled_total{actor_type=Counter,method=";
    assert_eq!(get(&format!("{handled}add,outcome=ok}}")), 2.0);
    assert_eq!(get(&format!("{handled}fail,outcome=remote_error}}")), 1.0);
    assert_eq!(
        get(&format!("{handled}(unknown),outcome=unknown_method}}")),
        1.0
    );
    assert_eq!(get(&format!("{handled}add,outcome=shed}}")), 1.0);
    assert!(get("rodario_call_duration_seconds{actor_type=Counter,method=add,outcome=ok}") >= 2.0);
    assert!(get("rodario_handle_duration_seconds{actor_type=Counter,method=sleep_ms}") >= 1.0);
    assert!(seen.contains_key("rodario_mailbox_depth{actor_type=Counter,uuid=metered}"));
    assert_eq!(get("rodario_pending_calls{}"), 0.0, "every call has ended");
}
