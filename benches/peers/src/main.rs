//! rodario beside its peers, in one run on one machine:
//!
//! - a call to an actor in another process: ractor_cluster (two nodes over TCP) and rodario
//!   over Redis (a private `redis-server` on a free port), each on a 2-worker runtime;
//! - an ask to an actor in the same process: kameo, ractor, rodario's memory backend and the
//!   tokio channels under them, on a current-thread runtime.
//!
//! Each is timed one call after another (median time per call) and with 64 calls in
//! flight (calls/s); the two remote contenders' samples are interleaved, so that both see
//! the same load on a shared machine. Run from the repository's root:
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml            # about 35 s once built
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- --quick # a fast pass
//! ```

mod local;
mod measure;
mod remote;

use measure::{Figures, Settings, IN_FLIGHT};
use rodario_redis::testkit::RedisServer;
use tokio::runtime::Runtime;

/// The actor rodario's rows call: a running total, as the peers' actors keep.
#[derive(Default)]
pub struct Counter {
    total: u64,
}

#[rodario::actor]
impl Counter {
    /// Adds `n` and returns the new total.
    pub async fn add(&mut self, n: u64) -> u64 {
        self.total += n;
        self.total
    }
}

/// The runtime of the remote calls, on both sides: 2 workers, as in rodario's network
/// benches.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("no tokio runtime")
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("no tokio runtime")
}

/// One framework's measurement on a runtime made for it.
type Measure = fn(&Runtime, Settings) -> Figures;

const USAGE: &str = "usage: rodario-peers [--quick]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        // The child processes of the remote rows.
        ["ractor-host", port] => remote::ractor_host(port.parse().expect("a port number")),
        ["rodario-host", url, prefix] => remote::rodario_host(url, prefix),
        [] => run(Settings::full()),
        ["--quick"] => run(Settings::quick()),
        // `cargo bench` style arguments would be a mistake here: say what is accepted.
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

fn run(settings: Settings) {
    let redis = RedisServer::private(&[]);
    let mut rows: Vec<(&str, &str, Figures)> = Vec::new();

    eprintln!("remote calls (2-worker runtime, the actor in a second process)...");
    let rt = runtime();
    let ractor = remote::RactorRemote::start(&rt);
    let rodario = remote::RodarioRemote::start(&rt, redis.url());
    let (ractor_cluster, rodario_redis) =
        measure::compare(&rt, settings, || ractor.call(), || rodario.call());
    ractor.stop();
    rodario.stop(&rt);
    drop(rt);
    let remote_ratio = (
        rodario_redis.sequential.as_secs_f64() / ractor_cluster.sequential.as_secs_f64(),
        rodario_redis.in_flight_per_s / ractor_cluster.in_flight_per_s,
    );
    rows.push((
        "ractor_cluster 0.16, remote call",
        "TCP between the two nodes",
        ractor_cluster,
    ));
    rows.push((
        "rodario, remote call",
        "Redis pub/sub (a broker hop)",
        rodario_redis,
    ));

    eprintln!("local asks (current-thread runtime)...");
    let local_rows: [(&str, Measure); 4] = [
        ("kameo 0.22, local ask", local::kameo),
        ("ractor 0.16, local ask", local::ractor),
        ("rodario, local call", local::rodario_memory),
        ("tokio mpsc + oneshot (the floor)", local::tokio_channels),
    ];
    for (name, measure) in local_rows {
        // A fresh runtime each: no framework's leftover tasks run during another's figures.
        let rt = current_thread();
        let figures = measure(&rt, settings);
        rows.push((name, "in process", figures));
    }

    println!("| framework | transport | per sequential call | calls/s, {IN_FLIGHT} in flight |");
    println!("|---|---|---|---|");
    for (name, transport, figures) in &rows {
        println!(
            "| {name} | {transport} | {} | {} |",
            human_time(figures.sequential.as_secs_f64()),
            human_rate(figures.in_flight_per_s),
        );
    }
    println!();
    println!(
        "rodario over Redis / ractor_cluster: {:.2}× the time per sequential call, {:.2}× the \
         calls/s with {IN_FLIGHT} in flight",
        remote_ratio.0, remote_ratio.1
    );
    drop(redis);
}

fn human_time(seconds: f64) -> String {
    if seconds >= 1e-3 {
        format!("{:.2} ms", seconds * 1e3)
    } else if seconds >= 1e-6 {
        format!("{:.1} µs", seconds * 1e6)
    } else {
        format!("{:.0} ns", seconds * 1e9)
    }
}

fn human_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2}M/s", per_s / 1e6)
    } else {
        format!("{:.0}k/s", per_s / 1e3)
    }
}
