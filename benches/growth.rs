//! How the cost of a call grows, on every backend: calls/s against calls in flight, against
//! the payload's size and against the number of actors one node serves, and the latency
//! percentiles of sequential calls, idle and under a steady background load.
//!
//! ```text
//! cargo bench --all-features --bench growth              # about 80 s on 2 cores
//! cargo bench --all-features --bench growth -- --quick   # under a minute, rougher
//! cargo bench --all-features --bench growth -- redis     # only ids containing "redis"
//! python3 benches/growth.py                              # tables, and benches/growth.svg
//! ```
//!
//! Ids are `growth/<backend>/<series>` (series `in_flight`, `payload`, `actors`, `latency`);
//! positional arguments filter them as criterion's do. Each series is written to
//! `target/growth/<backend>/<series>.csv`, so that a filtered run updates only its own.
//! Private `redis-server` and `nats-server -js` on free ports, as the other benches; one
//! host node and one caller node, each on a connection of its own, both on one 2-worker
//! `multi_thread` runtime on every backend (memory included, so that the curves compare).
//! Not a criterion bench: a rate over a fixed time and an hdrhistogram of every call fit
//! these curves better than criterion's per-iteration estimates.

mod cli;

use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cli::Args;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rodario::backend::Backend;
use rodario::memory::MemoryBroker;
use rodario::nats::{NatsBackend, NatsConfig};
use rodario::redis::RedisConfig;
use rodario::Node;
use rodario_core::testkit::actors::{Counter, CounterProxy};
use rodario_core::testkit::unique;
use rodario_nats::testkit::NatsServer;
use rodario_redis::testkit::RedisServer;
use serde_bytes::ByteBuf;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;

/// Calls in flight at once, started together and awaited together, batch after batch.
const IN_FLIGHT: [usize; 5] = [1, 4, 16, 64, 256];

/// Argument sizes (bytes, as MessagePack bin) of sequential calls to `Counter::size`.
const PAYLOADS: [usize; 5] = [64, 1024, 16 * 1024, 64 * 1024, 512 * 1024];

/// Actors served by the host node; calls go to each in turn.
const ACTORS: [usize; 4] = [1, 10, 100, 1000];

/// Calls in flight in the `actors` series, as in `call_inflight64`.
const SPREAD_IN_FLIGHT: usize = 64;

/// The background load of the `latency` series: calls started every millisecond (10,000
/// calls/s) from a node of their own to another actor of the same host, without waiting
/// for each other's replies.
const LOAD_PER_MS: usize = 10;

/// The series a run measures, as they appear in ids and file names.
const SERIES: [&str; 4] = ["in_flight", "payload", "actors", "latency"];

struct Settings {
    warm_up: Duration,
    measure: Duration,
    latency: Duration,
    args: Args,
}

impl Settings {
    /// `--quick` shortens every measurement; positional arguments are filters (see `cli`).
    fn from_args() -> Self {
        let args = Args::parse();
        let (warm_up, measure, latency) = if args.quick {
            (100, 300, 1000)
        } else {
            (300, 1000, 3000)
        };
        Settings {
            warm_up: Duration::from_millis(warm_up),
            measure: Duration::from_millis(measure),
            latency: Duration::from_millis(latency),
            args,
        }
    }

    fn wants(&self, backend: &str, series: &str) -> bool {
        self.args.wants(&format!("growth/{backend}/{series}"))
    }
}

/// Where the series' CSV files go: `target/growth/<backend>/`.
fn out_dir(backend: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("growth")
        .join(backend)
}

fn write_csv(backend: &str, series: &str, header: &str, rows: &str) {
    let dir = out_dir(backend);
    std::fs::create_dir_all(&dir).expect("cannot create target/growth");
    let path = dir.join(format!("{series}.csv"));
    std::fs::write(&path, format!("{header}\n{rows}"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Calls per second of `op` (which makes `calls` calls), run back to back for the
/// measurement time after the warm-up.
async fn rate<F, Fut>(settings: &Settings, calls: usize, mut op: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    let warm_up = Instant::now();
    while warm_up.elapsed() < settings.warm_up {
        op().await;
    }
    let start = Instant::now();
    let mut ops = 0;
    while start.elapsed() < settings.measure {
        op().await;
        ops += 1;
    }
    (ops * calls) as f64 / start.elapsed().as_secs_f64()
}

async fn add(proxy: &CounterProxy) {
    proxy
        .add(1)
        .await
        .expect("the call was not sent")
        .await
        .expect("the call failed");
}

/// The host node, the caller node and the actors, added as the series need more.
struct Bench {
    name: &'static str,
    /// The prefix of the nodes' connections: nodes with the same one see each other.
    prefix: String,
    host: Node,
    caller: Node,
    proxies: Vec<CounterProxy>,
}

impl Bench {
    async fn new<C, F>(name: &'static str, connect: &C) -> Self
    where
        C: Fn(String) -> F,
        F: Future<Output = Backend>,
    {
        let prefix = unique("growth");
        let mut bench = Bench {
            name,
            host: Node::new(connect(prefix.clone()).await),
            caller: Node::new(connect(prefix.clone()).await),
            prefix,
            proxies: Vec::new(),
        };
        bench.grow(2).await;
        bench
    }

    /// Starts actors on the host until it serves `actors`, with a proxy to each.
    async fn grow(&mut self, actors: usize) {
        while self.proxies.len() < actors {
            let uuid = format!("growth-{}", self.proxies.len());
            let actor = self
                .host
                .spawn(Counter::named(&uuid))
                .uuid(&uuid)
                .start()
                .await
                .expect("the actor did not start");
            // The actor stays on the host without its handle.
            drop(actor);
            let proxy = self
                .caller
                .registry()
                .get_proxy(&uuid)
                .await
                .expect("no proxy to the actor");
            self.proxies.push(proxy);
        }
    }

    async fn in_flight(&self, settings: &Settings) {
        let proxy = &self.proxies[0];
        let mut rows = String::new();
        for calls in IN_FLIGHT {
            let per_s = rate(settings, calls, || join_all((0..calls).map(|_| add(proxy)))).await;
            self.report("in_flight", &format!("{calls} in flight"), per_s);
            writeln!(rows, "{calls},{per_s:.0}").expect("a String takes writes");
        }
        write_csv(self.name, "in_flight", "in_flight,calls_per_s", &rows);
    }

    async fn payload(&self, settings: &Settings) {
        let proxy = &self.proxies[0];
        let mut rows = String::new();
        for size in PAYLOADS {
            // Every byte value in turn, as arbitrary binary data would have; cloned into
            // each call, as a caller passing it by value would.
            let data = ByteBuf::from((0..size).map(|i| i as u8).collect::<Vec<u8>>());
            let per_s = rate(settings, 1, || async {
                let len = proxy
                    .size(data.clone())
                    .await
                    .expect("the call was not sent")
                    .await
                    .expect("the call failed");
                assert_eq!(len, size);
            })
            .await;
            self.report("payload", &format!("{size} B"), per_s);
            writeln!(rows, "{size},{per_s:.0}").expect("a String takes writes");
        }
        write_csv(self.name, "payload", "payload_bytes,calls_per_s", &rows);
    }

    async fn actors(&mut self, settings: &Settings) {
        let mut rows = String::new();
        let mut next = 0;
        for actors in ACTORS {
            self.grow(actors).await;
            let proxies = &self.proxies[..actors];
            let per_s = rate(settings, SPREAD_IN_FLIGHT, || {
                let first = next;
                next = (next + SPREAD_IN_FLIGHT) % actors;
                join_all((0..SPREAD_IN_FLIGHT).map(move |i| add(&proxies[(first + i) % actors])))
            })
            .await;
            self.report("actors", &format!("{actors} actors"), per_s);
            writeln!(rows, "{actors},{per_s:.0}").expect("a String takes writes");
        }
        write_csv(self.name, "actors", "actors,calls_per_s", &rows);
    }

    async fn latency<C, F>(&self, settings: &Settings, connect: &C)
    where
        C: Fn(String) -> F,
        F: Future<Output = Backend>,
    {
        let mut rows = String::new();
        let idle = self.histogram(settings).await;
        rows += &self.percentiles("idle", &idle, 0.0);

        // The load comes from a node of its own (as another process would send it) to the
        // second actor, so that the measured calls queue behind none of its calls.
        let loader = Node::new(connect(self.prefix.clone()).await);
        let target = loader
            .registry()
            .get_proxy("growth-1")
            .await
            .expect("no proxy to the second actor");
        let (stop, stopped) = oneshot::channel();
        let done = Arc::new(AtomicU64::new(0));
        let load = tokio::spawn(background_load(target, stopped, done.clone()));
        let started = Instant::now();
        let loaded = self.histogram(settings).await;
        let load_per_s = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        stop.send(()).expect("the background load ended early");
        load.await.expect("the background load panicked");
        loader.shutdown().await;
        rows += &self.percentiles("loaded", &loaded, load_per_s);
        write_csv(
            self.name,
            "latency",
            "load,load_calls_per_s,calls,p50_ns,p99_ns,p99_9_ns,max_ns",
            &rows,
        );
    }

    /// Sequential calls to the first actor for the latency time, after the warm-up, each in
    /// the histogram (nanoseconds).
    async fn histogram(&self, settings: &Settings) -> Histogram<u64> {
        let proxy = &self.proxies[0];
        let mut histogram =
            Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
        let warm_up = Instant::now();
        while warm_up.elapsed() < settings.warm_up {
            add(proxy).await;
        }
        let start = Instant::now();
        while start.elapsed() < settings.latency {
            let call = Instant::now();
            add(proxy).await;
            histogram.saturating_record(call.elapsed().as_nanos() as u64);
        }
        histogram
    }

    fn percentiles(&self, load: &str, h: &Histogram<u64>, load_per_s: f64) -> String {
        let [p50, p99, p999] = [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q));
        let us = |ns: u64| ns as f64 / 1e3;
        println!(
            "growth/{}/latency {load:>6}: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs \
             ({} calls; background {load_per_s:.0} calls/s)",
            self.name,
            us(p50),
            us(p99),
            us(p999),
            us(h.max()),
            h.len(),
        );
        format!(
            "{load},{load_per_s:.0},{},{p50},{p99},{p999},{}\n",
            h.len(),
            h.max()
        )
    }

    fn report(&self, series: &str, point: &str, per_s: f64) {
        println!(
            "growth/{}/{series} {point:>12}: {per_s:.0} calls/s",
            self.name
        );
    }

    async fn shutdown(self) {
        self.caller.shutdown().await;
        self.host.shutdown().await;
    }
}

/// [`LOAD_PER_MS`] calls every millisecond to `target` until `stop` fires, counting the
/// replies in `done`; then waits for the calls still in flight.
async fn background_load(
    target: CounterProxy,
    mut stop: oneshot::Receiver<()>,
    done: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    // After a stall, carry on at the steady rate rather than catch up in a burst.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut calls = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                for _ in 0..LOAD_PER_MS {
                    calls.push(add(&target));
                }
            }
            Some(()) = calls.next() => {
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    while calls.next().await.is_some() {}
}

/// Runs the wanted series of one backend.
async fn run<C, F>(settings: &Settings, name: &'static str, connect: C)
where
    C: Fn(String) -> F,
    F: Future<Output = Backend>,
{
    let mut bench = Bench::new(name, &connect).await;
    if settings.wants(name, "in_flight") {
        bench.in_flight(settings).await;
    }
    if settings.wants(name, "payload") {
        bench.payload(settings).await;
    }
    if settings.wants(name, "latency") {
        bench.latency(settings, &connect).await;
    }
    // Last: it leaves the host with 1,000 actors.
    if settings.wants(name, "actors") {
        bench.actors(settings).await;
    }
    bench.shutdown().await;
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("no tokio runtime")
}

fn main() {
    let settings = Settings::from_args();
    let wants = |backend| SERIES.iter().any(|series| settings.wants(backend, series));
    let rt = runtime();
    if wants("memory") {
        let broker = MemoryBroker::new();
        rt.block_on(run(&settings, "memory", |_: String| {
            let backend = broker.backend();
            async move { backend }
        }));
    }
    if wants("redis") {
        let server = RedisServer::private(&[]);
        let url = server.url().to_owned();
        rt.block_on(run(&settings, "redis", |prefix: String| {
            let config = RedisConfig::new(url.clone()).prefix(format!("{prefix}:"));
            async move { config.connect().await.expect("cannot connect to Redis") }
        }));
    }
    if wants("nats") {
        let server = NatsServer::private(&[]);
        let url = server.url().to_owned();
        rt.block_on(run(&settings, "nats", |prefix: String| {
            let config = NatsConfig::from_url(&url).prefix(prefix);
            async move {
                NatsBackend::connect(config)
                    .await
                    .expect("cannot connect to NATS")
            }
        }));
    }
}
