//! Cluster membership across 1-second SIGKILL restarts of nats-server under steady traffic.
//!
//! Two host nodes each run a `Counter` joined to one cluster channel; a caller node makes
//! direct and cluster calls all along. Each run kills the server at a different point of the
//! nodes' heartbeat period, restarts it (same store) after about a second, then checks every
//! 100 ms for 7 s that a cluster gather reaches both members and that direct calls work. It
//! prints per run: the timings, which member a gather missed, and what KV held for the
//! membership keys then (revision, server timestamp, age), then asserts that every call
//! ended within its deadline plus 100 ms and that after each restart a gather reached both
//! members within 1 s and kept reaching them.
//!
//! For investigating, these environment variables change the runs:
//! - `RESTART_FAULTS_VERBOSE=1` prints every change of the membership keys (polled every
//!   50 ms) and the library's log lines (info and up), on one clock.
//! - `RESTART_FAULTS_AT_TICK=1` kills the server within 1.5 ms of a host's heartbeat tick, so
//!   that its registry renewal is in flight when the connection drops.
//! - `RESTART_FAULTS_DEFAULTS=1` connects with `NatsConfig`'s defaults (reconnect backoff up
//!   to 2 s) instead of the fixtures' 250 ms backoff cap.
//! - `RESTART_FAULTS_RUNS=n` makes `n` runs instead of 20.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::{Operation, Store};
use common::{config_for, unique, PrivateServer};
use futures_util::StreamExt;
use rodario_core::node::Node;
use rodario_core::testkit::actors::{Counter, CounterCluster, CounterProxy};
use rodario_nats::NatsBackend;

const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How late a call may end past its deadline.
const SLACK: Duration = Duration::from_millis(100);
const RUNS: usize = 20;
/// The whole loop's budget: runs take about 11 s each.
const BUDGET: Duration = Duration::from_secs(300);
const OUTAGE: Duration = Duration::from_secs(1);
/// How long after the restart each run keeps checking the gathers.
const WATCH: Duration = Duration::from_secs(7);
/// After the restart, a gather must reach every member within this.
const RECOVERY: Duration = Duration::from_secs(1);
const CHANNEL: &str = "workers";

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Seconds since the test started, for the printed timelines.
fn t() -> f64 {
    start().elapsed().as_secs_f64()
}

fn verbose() -> bool {
    std::env::var_os("RESTART_FAULTS_VERBOSE").is_some_and(|v| !v.is_empty() && v != "0")
}

fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Prints the library's log lines (info and up) with the test's clock, when verbose.
struct Log;

impl tracing::Subscriber for Log {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        eprintln!(
            "t={:8.3} log {} {}:{}",
            t(),
            event.metadata().level(),
            event.metadata().target(),
            fields.0
        );
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// One membership key as KV holds it.
#[derive(Clone, Debug, PartialEq)]
struct KvState {
    revision: u64,
    created_ns: i128,
    ttl_ms: i128,
    put: bool,
}

impl KvState {
    fn describe(&self, now_ns: i128) -> String {
        let age_ms = (now_ns - self.created_ns) / 1_000_000;
        let live = self.put && age_ms < self.ttl_ms;
        format!(
            "rev {} {} age {} ms of {} ({})",
            self.revision,
            if self.put { "put" } else { "delete" },
            age_ms,
            self.ttl_ms,
            if live { "live" } else { "EXPIRED" }
        )
    }
}

/// Reads the membership keys with a client of its own.
struct KvProbe {
    store: Store,
    /// Host name ("a", "b") to its membership key.
    keys: BTreeMap<&'static str, String>,
}

impl KvProbe {
    async fn read(&self, key: &str) -> Result<Option<KvState>, String> {
        let entry = tokio::time::timeout(Duration::from_millis(300), self.store.entry(key))
            .await
            .map_err(|_| "no answer".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(entry.map(|entry| {
            let text = String::from_utf8_lossy(&entry.value);
            let ttl_ms = text
                .split_once(' ')
                .and_then(|(ttl, _)| ttl.parse().ok())
                .unwrap_or(0);
            KvState {
                revision: entry.revision,
                created_ns: entry.created.unix_timestamp_nanos(),
                ttl_ms,
                put: entry.operation == Operation::Put,
            }
        }))
    }

    async fn describe(&self) -> String {
        let mut out = String::new();
        for (host, key) in &self.keys {
            let state = match self.read(key).await {
                Ok(Some(state)) => state.describe(unix_ns()),
                Ok(None) => "absent".to_owned(),
                Err(e) => format!("unreadable: {e}"),
            };
            let _ = write!(out, " [{host}: {state}]");
        }
        out
    }
}

/// Prints every change of the membership keys, polling every 50 ms (verbose only).
async fn watch_kv(probe: Arc<KvProbe>, stop: Arc<AtomicBool>) {
    let mut last: BTreeMap<&str, Option<KvState>> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        for (host, key) in &probe.keys {
            if let Ok(state) = probe.read(key).await {
                if last.get(host) != Some(&state) {
                    let shown = state
                        .as_ref()
                        .map_or("absent".to_owned(), |s| s.describe(unix_ns()));
                    eprintln!("t={:8.3} kv   {host}: {shown}", t());
                    last.insert(host, state);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One call the steady traffic made.
struct CallRecord {
    kind: &'static str,
    at: f64,
    took: Duration,
    outcome: String,
}

/// The names a gather collected, or why it failed.
async fn gather(cluster: &CounterCluster) -> Result<BTreeSet<String>, String> {
    let mut gather = cluster.name().await.map_err(|e| e.to_string())?;
    let mut names = BTreeSet::new();
    while let Some(name) = gather.next().await {
        names.insert(name.map_err(|e| e.to_string())?);
    }
    Ok(names)
}

async fn direct(proxy: &CounterProxy) -> Result<u64, String> {
    proxy
        .add(1)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

/// Direct and cluster calls, one after another, until `stop`.
async fn traffic(
    caller: Node,
    proxies: Vec<CounterProxy>,
    records: Arc<Mutex<Vec<CallRecord>>>,
    stop: Arc<AtomicBool>,
) {
    let cluster: CounterCluster = caller.cluster(CHANNEL).unwrap();
    while !stop.load(Ordering::Relaxed) {
        for proxy in &proxies {
            let at = t();
            let started = Instant::now();
            let outcome = direct(proxy).await;
            records.lock().unwrap().push(CallRecord {
                kind: "direct",
                at,
                took: started.elapsed(),
                outcome: outcome.map_or_else(|e| e, |_| "ok".to_owned()),
            });
        }
        let at = t();
        let started = Instant::now();
        let outcome = gather(&cluster).await;
        records.lock().unwrap().push(CallRecord {
            kind: "cluster",
            at,
            took: started.elapsed(),
            outcome: outcome.map_or_else(|e| e, |names| format!("{names:?}")),
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn node(url: &str, prefix: &str) -> Node {
    // The backend's default operation timeout, as in the reported runs; a short reconnect
    // backoff so that "within 1 s of the restart" measures the library, not the backoff.
    let config = if std::env::var_os("RESTART_FAULTS_DEFAULTS").is_some() {
        rodario_nats::NatsConfig::from_url(url).prefix(prefix)
    } else {
        config_for(url, prefix).timeout(Duration::from_secs(5))
    };
    let backend = NatsBackend::connect(config).await.unwrap();
    Node::builder(backend).call_timeout(CALL_TIMEOUT).build()
}

/// What one run saw.
#[derive(Default)]
struct Run {
    /// From the restart to the first gather that reached both members.
    recovered_after: Option<Duration>,
    /// From the restart to the first direct calls to both actors that succeeded.
    direct_after: Option<Duration>,
    /// Gathers after recovery that missed a member: (seconds after the restart, what).
    misses: Vec<(f64, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_gathers_every_member_after_restarts() {
    start();
    if verbose() {
        let _ = tracing::subscriber::set_global_default(Log);
    }
    let mut server = PrivateServer::start(&[]);
    let prefix = unique("restart");
    let host_a = node(&server.url, &prefix).await;
    let host_b = node(&server.url, &prefix).await;
    let caller = node(&server.url, &prefix).await;
    let mut actors = Vec::new();
    for (host, name) in [(&host_a, "a"), (&host_b, "b")] {
        let actor = host
            .spawn(Counter::named(name))
            .uuid(name)
            .start()
            .await
            .unwrap();
        actor.join(CHANNEL).await.unwrap();
        actors.push(actor);
    }

    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(50))
        .connect(server.url.as_str())
        .await
        .unwrap();
    let store = async_nats::jetstream::new(client)
        .get_key_value(prefix.clone())
        .await
        .unwrap();
    let keys = BTreeMap::from([
        ("a", format!("m.{CHANNEL}.{}", host_a.id())),
        ("b", format!("m.{CHANNEL}.{}", host_b.id())),
    ]);
    let probe = Arc::new(KvProbe { store, keys });
    eprintln!(
        "nodes: a={} b={} caller={}",
        host_a.id(),
        host_b.id(),
        caller.id()
    );

    let proxies: Vec<CounterProxy> = vec![
        caller.registry().get_proxy("a").await.unwrap(),
        caller.registry().get_proxy("b").await.unwrap(),
    ];
    let cluster: CounterCluster = caller.cluster(CHANNEL).unwrap();
    assert_eq!(
        gather(&cluster).await.unwrap(),
        BTreeSet::from(["a".into(), "b".into()])
    );

    let stop = Arc::new(AtomicBool::new(false));
    let records = Arc::new(Mutex::new(Vec::new()));
    let traffic = tokio::spawn(traffic(
        caller.clone(),
        proxies.clone(),
        records.clone(),
        stop.clone(),
    ));
    let watcher = verbose().then(|| tokio::spawn(watch_kv(probe.clone(), stop.clone())));

    let everyone = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
    let began = Instant::now();
    let mut runs = Vec::new();
    let runs_wanted = std::env::var("RESTART_FAULTS_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(RUNS);
    while runs.len() < runs_wanted && began.elapsed() < BUDGET {
        let n = runs.len();
        // Kill at a different point of the heartbeat period (a third of the 10 s liveness
        // TTL) in each run.
        let steady = Duration::from_millis(500 + (n as u64 * 370) % 3_333);
        tokio::time::sleep(steady).await;
        let before = probe.describe().await;
        if std::env::var_os("RESTART_FAULTS_AT_TICK").is_some() {
            // Kill while host a's heartbeat renewal is in flight: its next tick is a whole
            // number of periods after the server's stamp of its last renewal.
            let period_ns = 10_000_000_000i128 / 3;
            let offset_ns = (n as i128 % 5 - 1) * 500_000;
            if let Ok(Some(last)) = probe.read(&probe.keys["a"]).await {
                let mut target = last.created_ns + period_ns + offset_ns;
                while target < unix_ns() + 200_000_000 {
                    target += period_ns;
                }
                let wait = target - unix_ns() - 5_000_000;
                tokio::time::sleep(Duration::from_nanos(wait as u64)).await;
                while unix_ns() < target {
                    std::hint::spin_loop();
                }
                eprintln!(
                    "run {n:2}: killing {} µs after a's predicted tick",
                    offset_ns / 1000
                );
            }
        }
        let killed_at = t();
        server.stop();
        tokio::time::sleep(OUTAGE).await;
        server.restart();
        let restarted = Instant::now();
        let restarted_at = t();
        eprintln!(
            "run {n:2}: killed at t={killed_at:.3}, restarted at t={restarted_at:.3}; \
             KV before the kill:{before}"
        );
        let mut run = Run::default();
        while restarted.elapsed() < WATCH {
            let tick = Instant::now();
            let (names, a, b) =
                tokio::join!(gather(&cluster), direct(&proxies[0]), direct(&proxies[1]));
            let since = restarted.elapsed();
            if run.direct_after.is_none() && a.is_ok() && b.is_ok() {
                run.direct_after = Some(since);
            }
            match names {
                Ok(names) if names == everyone && run.recovered_after.is_none() => {
                    run.recovered_after = Some(since);
                    eprintln!(
                        "run {n:2}:   gather reached both {:.3} s after the restart",
                        since.as_secs_f64()
                    );
                }
                Ok(names) if names == everyone => {}
                outcome if run.recovered_after.is_some() => {
                    let missing: Vec<&String> = match &outcome {
                        Ok(names) => everyone.difference(names).collect(),
                        Err(_) => Vec::new(),
                    };
                    let what = format!(
                        "gather {outcome:?} (missing {missing:?}); KV:{}",
                        probe.describe().await
                    );
                    eprintln!(
                        "run {n:2}:   MISS {:.3} s after the restart: {what}",
                        since.as_secs_f64()
                    );
                    run.misses.push((since.as_secs_f64(), what));
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed())).await;
        }
        eprintln!(
            "run {n:2}: gather complete after {:?}, direct calls after {:?}, {} misses later",
            run.recovered_after,
            run.direct_after,
            run.misses.len()
        );
        runs.push(run);
    }
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    if let Some(watcher) = watcher {
        watcher.await.unwrap();
    }

    let records = std::mem::take(&mut *records.lock().unwrap());
    let late: Vec<&CallRecord> = records
        .iter()
        .filter(|r| r.took > CALL_TIMEOUT + SLACK)
        .collect();
    let longest = records.iter().map(|r| r.took).max().unwrap_or_default();
    let failed = records.iter().filter(|r| r.outcome != "ok").count();
    eprintln!(
        "traffic: {} calls, {} failed, longest {:?}, {} past deadline + {:?}",
        records.len(),
        failed,
        longest,
        late.len(),
        SLACK
    );
    for r in &late {
        eprintln!(
            "  late {} call at t={:.3} took {:?}: {}",
            r.kind, r.at, r.took, r.outcome
        );
    }
    let slow: Vec<(usize, Option<Duration>)> = runs
        .iter()
        .enumerate()
        .filter(|(_, run)| run.recovered_after.is_none_or(|d| d > RECOVERY))
        .map(|(n, run)| (n, run.recovered_after))
        .collect();
    let missed: Vec<usize> = runs
        .iter()
        .enumerate()
        .filter(|(_, run)| !run.misses.is_empty())
        .map(|(n, _)| n)
        .collect();
    eprintln!(
        "{} runs in {:?}: recovery over {RECOVERY:?} in runs {slow:?}, \
         members missed after recovery in runs {missed:?}",
        runs.len(),
        began.elapsed()
    );
    assert_eq!(
        runs.len(),
        runs_wanted,
        "the runs did not fit in {BUDGET:?}"
    );
    assert!(
        missed.is_empty(),
        "gathers missed members in runs {missed:?}"
    );
    assert!(slow.is_empty(), "slow or no recovery: {slow:?}");
    assert!(
        late.is_empty(),
        "{} calls ended past their deadline",
        late.len()
    );
}
