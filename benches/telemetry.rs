//! What traces and metrics cost a call (features `opentelemetry` and `metrics`), on the
//! memory backend, where the call itself is cheapest and their share largest.
//!
//! ```text
//! cargo bench --features memory,opentelemetry,metrics --bench telemetry
//! ```
//!
//! `telemetry/memory/compiled_in` runs with both features built in but no subscriber and no
//! recorder installed (what a user who enables the features and installs nothing pays);
//! `telemetry/memory/recording` then installs a `tracing-opentelemetry` layer whose spans go
//! to an exporter that drops them, and a `metrics` recorder (metrics-util's debugging
//! recorder), so every call makes and exports two spans and records its metrics. The figure
//! without the features is `call_sequential/memory/rodario` of `benches/memory.rs`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use metrics_util::debugging::DebuggingRecorder;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use rodario::memory::MemoryBroker;
use rodario::Node;
use rodario_core::testkit::actors::{Counter, CounterProxy};
use tracing_subscriber::layer::SubscriberExt;

/// Exports nothing: the cost measured is making and handing over the spans.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

fn install_telemetry() {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(Discard)
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the bench's only subscriber");
    DebuggingRecorder::new()
        .install()
        .expect("the bench's only recorder");
}

fn telemetry(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let broker = MemoryBroker::new();
    let (host, caller) = (Node::new(broker.backend()), Node::new(broker.backend()));
    let proxy: CounterProxy = rt.block_on(async {
        host.spawn(Counter::named("bench"))
            .uuid("bench")
            .start()
            .await
            .unwrap();
        caller.registry().get_proxy("bench").await.unwrap()
    });
    let mut group = c.benchmark_group("telemetry");
    for stage in ["compiled_in", "recording"] {
        if stage == "recording" {
            install_telemetry();
        }
        group.bench_function(BenchmarkId::new("memory", stage), |b| {
            b.to_async(&rt)
                .iter(|| async { proxy.add(1).await.unwrap().await.unwrap() })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = telemetry
}
criterion_main!(benches);
