//! rodario beside its peers, in one run on one machine:
//!
//! - a call to an actor in another process: ractor_cluster (two nodes over TCP), rodario
//!   over Redis (a private `redis-server` on a free port), and the same request and reply
//!   written by hand with redis-rs alone over the same Redis (the raw baseline of rodario's
//!   `benches/redis.rs`), each on a 2-worker runtime;
//! - an ask to an actor in the same process: kameo, ractor, rodario's memory backend and the
//!   tokio channels under them, on a current-thread runtime.
//!
//! Each is timed one call after another (median time per call) and with 64 calls in
//! flight (calls/s); the three remote contenders' samples are interleaved, so that all see
//! the same load on a shared machine. Run from the repository's root:
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml            # about 35 s once built
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- --quick # a fast pass
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- --runs 3 # medians of 3 runs
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

const USAGE: &str = "usage: rodario-peers [--quick] [--runs N]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        // The child processes of the remote rows.
        ["ractor-host", port] => remote::ractor_host(port.parse().expect("a port number")),
        ["rodario-host", url, prefix] => remote::rodario_host(url, prefix),
        ["raw-redis-host", url, prefix] => remote::raw_redis_host(url, prefix),
        options => match parse(options) {
            Some((settings, runs)) => run(settings, runs),
            None => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        },
    }
}

/// `--quick` and `--runs N` (N ≥ 1), in any order; `None` for anything else.
fn parse(args: &[&str]) -> Option<(Settings, usize)> {
    let mut settings = Settings::full();
    let mut runs = 1;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--quick" => settings = Settings::quick(),
            "--runs" => runs = args.next()?.parse().ok().filter(|&n| n > 0)?,
            _ => return None,
        }
    }
    Some((settings, runs))
}

/// One framework's line of the table.
struct Row {
    name: &'static str,
    transport: &'static str,
    figures: Figures,
}

/// The remote rows against ractor_cluster, as (time per sequential call, calls/s with
/// [`IN_FLIGHT`] in flight): rodario over Redis, and the raw Redis request/reply beside it.
struct RemoteRatios {
    rodario: (f64, f64),
    raw_redis: (f64, f64),
}

fn measure_once(settings: Settings, redis_url: &str, run: usize) -> (Vec<Row>, RemoteRatios) {
    eprintln!("remote calls (2-worker runtime, the callee in a second process)...");
    let rt = runtime();
    let prefix = format!("peers-{run}");
    let ractor = remote::RactorRemote::start(&rt);
    let rodario = remote::RodarioRemote::start(&rt, redis_url, &prefix);
    let raw_redis = remote::RawRedisRemote::start(&rt, redis_url, &prefix);
    let mut figures = measure::compare(&rt, settings, &[&ractor, &rodario, &raw_redis]).into_iter();
    let (Some(ractor_cluster), Some(rodario_redis), Some(raw_redis_figures)) =
        (figures.next(), figures.next(), figures.next())
    else {
        unreachable!("compare measures each contender it is given");
    };
    ractor.stop();
    rodario.stop(&rt);
    drop(raw_redis);
    drop(rt);
    let against_ractor = |figures: &Figures| {
        (
            figures.sequential.as_secs_f64() / ractor_cluster.sequential.as_secs_f64(),
            figures.in_flight_per_s / ractor_cluster.in_flight_per_s,
        )
    };
    let ratios = RemoteRatios {
        rodario: against_ractor(&rodario_redis),
        raw_redis: against_ractor(&raw_redis_figures),
    };
    let mut rows = vec![
        Row {
            name: "ractor_cluster 0.16, remote call",
            transport: "TCP between the two nodes",
            figures: ractor_cluster,
        },
        Row {
            name: "rodario, remote call",
            transport: "Redis pub/sub (a broker hop)",
            figures: rodario_redis,
        },
        Row {
            name: "redis-rs alone, PUBLISH/SUBSCRIBE request and reply",
            transport: "Redis pub/sub (a broker hop)",
            figures: raw_redis_figures,
        },
    ];

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
        rows.push(Row {
            name,
            transport: "in process",
            figures: measure(&rt, settings),
        });
    }
    (rows, ratios)
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn run(settings: Settings, runs: usize) {
    let redis = RedisServer::private(&[]);
    let results: Vec<(Vec<Row>, RemoteRatios)> = (1..=runs)
        .map(|n| {
            eprintln!("run {n} of {runs}");
            measure_once(settings, redis.url(), n)
        })
        .collect();
    drop(redis);

    if runs > 1 {
        println!("Each figure the median of {runs} runs.\n");
    }
    println!("| framework | transport | per sequential call | calls/s, {IN_FLIGHT} in flight |");
    println!("|---|---|---|---|");
    for (i, row) in results[0].0.iter().enumerate() {
        let rows = || results.iter().map(move |(rows, _)| &rows[i].figures);
        println!(
            "| {} | {} | {} | {} |",
            row.name,
            row.transport,
            human_time(median(rows().map(|f| f.sequential.as_secs_f64()))),
            human_rate(median(rows().map(|f| f.in_flight_per_s))),
        );
    }
    println!();
    println!(
        "Against ractor_cluster (time per sequential call; calls/s, {IN_FLIGHT} in flight), \
         rodario over Redis and the raw Redis request/reply:"
    );
    for (n, (_, ratios)) in results.iter().enumerate() {
        let (time, rate) = ratios.rodario;
        let (raw_time, raw_rate) = ratios.raw_redis;
        println!(
            "- run {}: rodario {time:.2}× the time, {rate:.2}× the calls/s; \
             raw Redis {raw_time:.2}× the time, {raw_rate:.2}× the calls/s",
            n + 1
        );
    }
    if runs > 1 {
        let spread = |ratio: fn(&RemoteRatios) -> f64| {
            let values: Vec<f64> = results.iter().map(|(_, ratios)| ratio(ratios)).collect();
            let (min, max) = values
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            format!("{:.2}× ({min:.2}–{max:.2})", median(values.into_iter()))
        };
        println!(
            "- median (min–max): rodario {} the time, {} the calls/s; \
             raw Redis {} the time, {} the calls/s",
            spread(|r| r.rodario.0),
            spread(|r| r.rodario.1),
            spread(|r| r.raw_redis.0),
            spread(|r| r.raw_redis.1),
        );
    }
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
