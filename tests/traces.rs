//! One trace per call across processes (feature `opentelemetry`): node A's `rodario.call`
//! span is the parent of node B's `rodario.handle` span, on every backend, checked with
//! OpenTelemetry's in-memory span exporter.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rodario::backend::Backend;
use rodario::prelude::*;
use rodario_core::testkit::actors::{Counter, CounterCluster, CounterProxy};
use rodario_core::testkit::unique;
use tracing_subscriber::layer::SubscriberExt;

/// The exporter behind the process-wide subscriber (the host's spans are made on runtime
/// threads, so a thread-local subscriber would miss them).
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("rodario-test"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the first subscriber");
        exporter
    })
}

/// Polls `found` until it finds what it looks for, for up to 5 s.
async fn poll<T>(what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    for _ in 0..250 {
        if let Some(value) = found() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "no {what} within 5 s: {:#?}",
        exporter().get_finished_spans()
    );
}

fn spans_named(name: &str, attribute: (&str, &str)) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .expect("spans")
        .into_iter()
        .filter(|span| span.name == name)
        .filter(|span| {
            span.attributes
                .iter()
                .any(|kv| kv.key.as_str() == attribute.0 && kv.value.as_str() == attribute.1)
        })
        .collect()
}

/// A call from one node to an actor on another, then a cluster call to two members.
async fn one_trace_per_call(backends: [Backend; 2]) {
    exporter();
    let [caller_backend, host_backend] = backends;
    let caller = Node::builder(caller_backend)
        .call_timeout(Duration::from_secs(5))
        .build();
    let host = Node::new(host_backend);
    let uuid = unique("traced");
    let channel = unique("traced-channel");
    let first = host
        .spawn(Counter::named("a"))
        .uuid(&uuid)
        .start()
        .await
        .unwrap();
    let second = host.spawn(Counter::named("b")).start().await.unwrap();
    first.join(&channel).await.unwrap();
    second.join(&channel).await.unwrap();

    let proxy: CounterProxy = caller.registry().get_proxy(&uuid).await.unwrap();
    assert_eq!(proxy.add(2).await.unwrap().await.unwrap(), 2);
    let (call, handle) = poll("caller and host span of the direct call", || {
        let calls = spans_named("rodario.call", ("target", &uuid));
        let calls: Vec<_> = calls
            .into_iter()
            .filter(|s| s.attributes.iter().any(|kv| kv.value.as_str() == "add"))
            .collect();
        let handles = spans_named("rodario.handle", ("uuid", &uuid));
        let handles: Vec<_> = handles
            .into_iter()
            .filter(|s| s.attributes.iter().any(|kv| kv.value.as_str() == "add"))
            .collect();
        match (calls.as_slice(), handles.as_slice()) {
            ([call], [handle]) => Some((call.clone(), handle.clone())),
            _ => None,
        }
    })
    .await;
    assert_eq!(call.span_context.trace_id(), handle.span_context.trace_id());
    assert_eq!(handle.parent_span_id, call.span_context.span_id());
    assert_eq!(
        call.parent_span_id,
        SpanId::INVALID,
        "the call is the trace's root"
    );
    let outcome = |span: &SpanData| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == "outcome")
            .map(|kv| kv.value.as_str().into_owned())
    };
    assert_eq!(outcome(&call).as_deref(), Some("ok"));
    assert_eq!(outcome(&handle).as_deref(), Some("ok"));
    let actor_type = handle
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "actor_type")
        .map(|kv| kv.value.as_str().into_owned());
    assert_eq!(actor_type.as_deref(), Some("Counter"));

    // A cluster call: one caller span, one host span per member, all in one trace.
    let cluster: CounterCluster = caller.cluster(&channel).unwrap();
    assert_eq!(cluster.add(1).await.unwrap().all().await.unwrap().len(), 2);
    let target = format!("cluster:{channel}");
    let (call, handles) = poll("caller and host spans of the cluster call", || {
        let calls = spans_named("rodario.call", ("target", &target));
        let handles: Vec<SpanData> = exporter()
            .get_finished_spans()
            .expect("spans")
            .into_iter()
            .filter(|s| s.name == "rodario.handle")
            .filter(|s| {
                calls
                    .first()
                    .is_some_and(|c| s.parent_span_id == c.span_context.span_id())
            })
            .collect();
        match (calls.as_slice(), handles.len()) {
            ([call], 2) => Some((call.clone(), handles)),
            _ => None,
        }
    })
    .await;
    for handle in handles {
        assert_eq!(handle.span_context.trace_id(), call.span_context.trace_id());
    }
    caller.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_call_on_memory() {
    let broker = rodario::memory::MemoryBroker::new();
    one_trace_per_call([broker.backend(), broker.backend()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_call_on_redis() {
    let server = rodario::redis::testkit::RedisServer::start().await;
    one_trace_per_call([server.backend("a").await, server.backend("a").await]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_call_on_nats() {
    let server = rodario::nats::testkit::NatsServer::start().await;
    one_trace_per_call([server.backend().await, server.backend().await]).await;
}
