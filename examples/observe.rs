//! Traces and metrics of calls between two nodes: the spans of one trace with their parent
//! links, then a metrics snapshot.
//!
//! ```text
//! cargo run --example observe --features opentelemetry,metrics
//! ```
//!
//! The two nodes share an in-memory broker here; over Redis or NATS the trace context rides
//! in the call frame in the same way. In a service, install your own OpenTelemetry pipeline
//! and metrics exporter instead of the in-memory ones used here to print what they got.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use rodario::memory::MemoryBroker;
use rodario::prelude::*;
use tracing_subscriber::layer::SubscriberExt;

/// Greets, or refuses to.
struct Greeter;

#[rodario::actor]
impl Greeter {
    /// A greeting for `name`.
    pub fn greet(&self, name: String) -> String {
        format!("Hello, {name}")
    }

    /// Always fails.
    pub fn refuse(&self) -> Result<String, String> {
        Err("not today".into())
    }
}

#[tokio::main]
async fn main() -> rodario::Result<()> {
    let spans = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("observe"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the first subscriber");
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("the first recorder");

    let broker = MemoryBroker::new();
    let host = Node::new(broker.backend());
    let caller = Node::builder(broker.backend())
        .call_timeout(Duration::from_secs(2))
        .build();
    let _greeter = host.spawn(Greeter).uuid("greeter").start().await?;
    let proxy: GreeterProxy = caller.registry().get_proxy("greeter").await?;
    println!("{}", proxy.greet("Ann".into()).await?.await?);
    println!("refuse: {:?}", proxy.refuse().await?.await.err());
    // The host's span ends just after its reply is on the way.
    tokio::time::sleep(Duration::from_millis(50)).await;

    println!("\nspans (trace id / span id <- parent id):");
    let mut finished = spans.get_finished_spans().expect("spans");
    finished.sort_by_key(|span| span.start_time);
    for span in &finished {
        let field = |name: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == name)
                .map(|kv| kv.value.as_str().into_owned())
                .unwrap_or_default()
        };
        println!(
            "  {:032x} / {:016x} <- {:016x}  {:<15} {:<7} outcome={}",
            span.span_context.trace_id(),
            span.span_context.span_id(),
            span.parent_span_id,
            span.name,
            field("method"),
            field("outcome"),
        );
    }

    println!("\nmetrics:");
    let mut metrics: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key().clone();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let value = match value {
                DebugValue::Counter(n) => n.to_string(),
                DebugValue::Gauge(g) => g.to_string(),
                DebugValue::Histogram(samples) => format!("{} samples", samples.len()),
            };
            format!("  {}{{{}}} {value}", key.name(), labels.join(","))
        })
        .collect();
    metrics.sort();
    for line in metrics {
        println!("{line}");
    }
    caller.shutdown().await;
    host.shutdown().await;
    Ok(())
}
