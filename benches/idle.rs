//! What idle actors cost, on every backend: N actors on one node that nobody calls. How
//! long they take to start, how much memory the node holds per actor, and how much work
//! the broker does per second once they rest (the liveness renewals, mostly).
//!
//! ```text
//! cargo bench --all-features --bench idle                               # 10,000 actors, 30 s windows
//! RODARIO_IDLE_ACTORS=1000 cargo bench --all-features --bench idle      # a quick check
//! cargo bench --all-features --bench idle -- --quick                    # 1,000 actors, 10 s windows
//! RODARIO_IDLE_WINDOW_SECS=60 cargo bench --all-features --bench idle   # a longer window
//! cargo bench --all-features --bench idle -- redis                      # backends containing "redis"
//! ```
//!
//! Environment: `RODARIO_IDLE_ACTORS` (N, 10,000 by default, 1,000 with `--quick`),
//! `RODARIO_IDLE_WINDOW_SECS` (the window at rest, 30 s by default: nine renewal passes at
//! the default liveness TTL of 10 s, renewed every third of it; 10 s with `--quick`),
//! `RODARIO_IDLE_IN_FLIGHT` (starts in flight, 256 by default). Private `redis-server` and
//! `nats-server -js -m <port>` on free ports (the monitoring port through
//! `NatsServer::private`'s extra arguments), as the other benches; one node with default
//! settings per backend, on a 2-worker `multi_thread` runtime. Each backend runs in a child
//! process of its own (this program again, told which backend by `RODARIO_IDLE_BACKEND`),
//! so that memory a backend's run freed, which the allocator keeps, does not hide the next
//! one's RSS growth. Not a criterion bench: each figure is one measurement of a long-lived
//! state, not a repeated operation.
//!
//! - **Start-up**: the wall time from the first `start()` to the last one's return. The
//!   actors are started as a user in a hurry would with the public API: `node.spawn(actor)
//!   .start()` is an `async fn` (register, subscribe, start the worker) and the node is
//!   shared, so many starts are kept in flight at once (`buffer_unordered`, 256 by default)
//!   rather than awaited one after another. Bounded rather than all N at once, since each
//!   start's deadline (the call timeout) then covers a queue of 256 on the connection, not
//!   one of N; on 2 cores 64, 256 and all 10,000 in flight took about the same time (0.8 to
//!   1.3 s on Redis and NATS), one at a time 2.8 s on Redis and 5.3 s on NATS. Each actor
//!   gets a generated v4 UUID (what `start()` does without `.uuid(..)`), and its handle is
//!   dropped (the actor runs on without it), so only what the node holds is measured.
//! - **Memory per actor**: a counting `#[global_allocator]` over `System` keeps the bytes
//!   allocated minus the bytes freed. Heap per actor is (live bytes at rest − live bytes
//!   before the backend connection and the node are made) / N, where "at rest" is the least
//!   of the samples taken every 100 ms over the window, after a 2 s settle: between renewal
//!   passes, which hold memory per actor while they run (their most is printed too, as is
//!   the most during start-up). The node's connection and fixed state are in the
//!   difference, small once divided by N (printed on their own). On memory the broker lives
//!   in this process, so its registry, leases and subscriptions are counted too; on Redis
//!   and NATS the server is another process and is not. RSS growth is `/proc/self/statm`'s
//!   resident pages at the window's end minus before the node: coarser, as an allocator
//!   keeps freed pages and fragments.
//! - **Broker work at rest**: the broker's counters are read at both ends of the window.
//!   Redis: the sum of `calls=` over `INFO commandstats` (commands run inside Lua scripts
//!   are counted there too: the work the scripts do), without the `INFO` calls themselves
//!   (the bench's; rodario sends none); the commands are printed one by one. NATS:
//!   `in_msgs` of the monitoring endpoint's `/varz` (messages from clients into the server,
//!   JetStream API requests included), fetched with a plain HTTP/1.0 GET. Memory: n/a
//!   (there is no broker process).

mod cli;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cli::Args;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use rodario::backend::Backend;
use rodario::memory::MemoryBroker;
use rodario::nats::{NatsBackend, NatsConfig};
use rodario::redis::RedisConfig;
use rodario::Node;
use rodario_core::testkit::actors::Counter;
use rodario_core::testkit::server::free_port;
use rodario_core::testkit::unique;
use rodario_nats::testkit::{varz, NatsServer};
use rodario_redis::testkit::RedisServer;
use tokio::runtime::Runtime;

/// The system allocator, counting the bytes it holds for the process.
struct Counting;

/// Bytes allocated and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most `LIVE` reached since the last [`reset_peak`].
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            grew(new_size);
            shrank(layout.size());
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_heap() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn reset_peak() {
    PEAK.store(live_heap(), Ordering::Relaxed);
}

fn peak_heap() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// The process's resident set in bytes: `/proc/self/statm`'s second field, in pages.
fn rss(page_size: usize) -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("no /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("/proc/self/statm has no resident field");
    pages * page_size
}

/// The page size `statm` counts in (`getconf PAGESIZE`; 4 KiB if that cannot run).
fn page_size() -> usize {
    std::process::Command::new("getconf")
        .arg("PAGESIZE")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(4096)
}

/// How long the node is left alone after start-up before the window opens: the last
/// starts' tasks end.
const SETTLE: Duration = Duration::from_secs(2);

/// How often the live heap is read during the window.
const SAMPLE: Duration = Duration::from_millis(100);

struct Settings {
    actors: usize,
    window: Duration,
    in_flight: usize,
    args: Args,
    page_size: usize,
}

impl Settings {
    fn from_env() -> Self {
        fn number(name: &str, default: usize) -> usize {
            match std::env::var(name) {
                Ok(value) if !value.is_empty() => value
                    .trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|e| panic!("{name}={value}: not a number: {e}")),
                _ => default,
            }
        }
        // `--quick` shrinks the defaults (for `cargo bench --all-features -- --quick`, which
        // reaches every bench); positional arguments are filters.
        let args = Args::parse();
        let (actors, window) = if args.quick {
            (1_000, 10)
        } else {
            (10_000, 30)
        };
        Settings {
            actors: number("RODARIO_IDLE_ACTORS", actors).max(1),
            window: Duration::from_secs(number("RODARIO_IDLE_WINDOW_SECS", window) as u64),
            in_flight: number("RODARIO_IDLE_IN_FLIGHT", 256).max(1),
            args,
            page_size: page_size(),
        }
    }

    fn wants(&self, backend: &str) -> bool {
        self.args.wants(backend)
    }
}

/// A broker's counter of work done, read at both ends of the window.
enum Meter {
    /// No broker process: nothing to read.
    None,
    /// `INFO commandstats` of the private Redis.
    Redis(String),
    /// `/varz` of the private NATS server's monitoring port.
    Nats(u16),
}

/// One reading: the total, and its parts by name.
type Reading = (u64, BTreeMap<String, u64>);

impl Meter {
    async fn read(&self) -> Option<Reading> {
        match self {
            Meter::None => None,
            Meter::Redis(url) => Some(redis_commands(url).await),
            Meter::Nats(port) => Some(nats_in_msgs(*port).await),
        }
    }
}

/// Calls per command since the server started, `INFO` left out (the bench's own).
async fn redis_commands(url: &str) -> Reading {
    let client = redis::Client::open(url).expect("a valid Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("cannot connect to Redis for INFO");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .expect("INFO commandstats");
    // Lines such as `cmdstat_evalsha:calls=9,usec=..,..`.
    let mut commands = BTreeMap::new();
    for line in info.lines() {
        let Some((name, stats)) = line.trim().split_once(':') else {
            continue;
        };
        let Some(command) = name.strip_prefix("cmdstat_") else {
            continue;
        };
        if command == "info" {
            continue;
        }
        let calls = stats
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .and_then(|calls| calls.parse().ok())
            .unwrap_or_else(|| panic!("no calls= in {line:?}"));
        commands.insert(command.to_owned(), calls);
    }
    (commands.values().sum(), commands)
}

/// `in_msgs`, `in_bytes` and `out_msgs` from the monitoring endpoint's `/varz`.
async fn nats_in_msgs(port: u16) -> Reading {
    let varz = varz(port).await;
    let field = |name: &str| -> u64 {
        varz[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no number {name} in /varz"))
    };
    let in_msgs = field("in_msgs");
    let parts = BTreeMap::from([
        ("in_msgs".to_owned(), in_msgs),
        ("in_bytes".to_owned(), field("in_bytes")),
        ("out_msgs".to_owned(), field("out_msgs")),
    ]);
    (in_msgs, parts)
}

/// The heap and RSS over the window at rest.
struct Rest {
    /// The least live heap seen: the node at rest, between renewal passes.
    heap_min: usize,
    /// The most: during a renewal pass.
    heap_max: usize,
    rss_end: usize,
    seconds: f64,
}

/// Samples the live heap every [`SAMPLE`] for the window.
async fn at_rest(settings: &Settings) -> Rest {
    let opened = Instant::now();
    let mut tick = tokio::time::interval(SAMPLE);
    let (mut heap_min, mut heap_max) = (usize::MAX, 0);
    while opened.elapsed() < settings.window {
        tick.tick().await;
        let heap = live_heap();
        heap_min = heap_min.min(heap);
        heap_max = heap_max.max(heap);
    }
    Rest {
        heap_min,
        heap_max,
        rss_end: rss(settings.page_size),
        seconds: opened.elapsed().as_secs_f64(),
    }
}

/// What one backend's run measured.
struct Row {
    backend: &'static str,
    actors: usize,
    startup: Duration,
    heap_per_actor: f64,
    rss_per_actor: f64,
    /// Broker commands (Redis) or messages in (NATS) per second at rest; `None` on memory.
    broker_per_s: Option<f64>,
}

/// Starts the actors on a node of `connect`'s backend, measures, and shuts the node down.
async fn run<F>(
    settings: &Settings,
    backend: &'static str,
    meter: Meter,
    connect: impl FnOnce() -> F,
) -> Row
where
    F: Future<Output = Backend>,
{
    let n = settings.actors;
    let heap_before = live_heap();
    let rss_before = rss(settings.page_size);
    let node = Node::new(connect().await);
    let heap_node = live_heap();

    reset_peak();
    let started = Instant::now();
    stream::iter(0..n)
        .map(|_| {
            let start = node.spawn(Counter::default()).start();
            // The actor runs on without its handle.
            async move { start.await.map(drop) }
        })
        .buffer_unordered(settings.in_flight)
        .try_collect::<()>()
        .await
        .unwrap_or_else(|e| panic!("{backend}: an actor did not start: {e}"));
    let startup = started.elapsed();
    let startup_peak = peak_heap();
    println!(
        "idle/{backend}: {n} actors started in {:.2} s ({:.0} actors/s, {} in flight)",
        startup.as_secs_f64(),
        n as f64 / startup.as_secs_f64(),
        settings.in_flight,
    );

    tokio::time::sleep(SETTLE).await;
    let first = meter.read().await;
    let rest = at_rest(settings).await;
    let last = meter.read().await;
    let heap = rest.heap_min as f64 - heap_before as f64;
    let rss_growth = rest.rss_end as f64 - rss_before as f64;
    let fixed = heap_node as f64 - heap_before as f64;
    let per_actor = |bytes: f64| bytes / n as f64;
    println!(
        "idle/{backend}: heap at rest {:.1} MiB above the start ({:.0} B/actor; the connected \
         node with no actor {:.0} KiB of it); at most {:.0} B/actor during start-up and {:.0} \
         B/actor during the window (renewal passes); RSS {:.1} MiB above the start by the \
         window's end ({:.0} B/actor)",
        heap / 1048576.0,
        per_actor(heap),
        fixed / 1024.0,
        per_actor(startup_peak as f64 - heap_before as f64),
        per_actor(rest.heap_max as f64 - heap_before as f64),
        rss_growth / 1048576.0,
        per_actor(rss_growth),
    );

    let broker_per_s = match (first, last) {
        (Some((first, first_parts)), Some((last, last_parts))) => {
            let seconds = rest.seconds;
            let per_s = (last - first) as f64 / seconds;
            let parts: Vec<String> = last_parts
                .iter()
                .filter_map(|(name, count)| {
                    let diff = count - first_parts.get(name).copied().unwrap_or(0);
                    (diff > 0).then(|| format!("{name} {diff}"))
                })
                .collect();
            println!(
                "idle/{backend}: broker at rest: {per_s:.1}/s over {seconds:.1} s ({})",
                parts.join(", ")
            );
            Some(per_s)
        }
        _ => {
            println!("idle/{backend}: broker work at rest: n/a (no broker process)");
            None
        }
    };

    let stopping = Instant::now();
    node.shutdown().await;
    println!(
        "idle/{backend}: shutdown (unregistering every actor) took {:.2} s",
        stopping.elapsed().as_secs_f64()
    );
    Row {
        backend,
        actors: n,
        startup,
        heap_per_actor: heap / n as f64,
        rss_per_actor: rss_growth / n as f64,
        broker_per_s,
    }
}

/// The environment variable that makes the process a child measuring one backend.
const CHILD_ENV: &str = "RODARIO_IDLE_BACKEND";

/// The start of the line a child reports its [`Row`] on, for the parent.
const ROW_TAG: &str = "idle-row";

impl Row {
    fn to_line(&self) -> String {
        let broker = self
            .broker_per_s
            .map_or_else(|| "n/a".to_owned(), |per_s| format!("{per_s:.1}"));
        format!(
            "{ROW_TAG} {} {} {:.3} {:.0} {:.0} {broker}",
            self.backend,
            self.actors,
            self.startup.as_secs_f64(),
            self.heap_per_actor,
            self.rss_per_actor,
        )
    }

    fn from_line(line: &str) -> Option<Self> {
        let mut fields = line.strip_prefix(ROW_TAG)?.split_whitespace();
        let name = fields.next()?;
        let backend = BACKENDS.into_iter().find(|b| *b == name)?;
        let actors = fields.next()?.parse().ok()?;
        let startup = Duration::from_secs_f64(fields.next()?.parse().ok()?);
        let heap_per_actor = fields.next()?.parse().ok()?;
        let rss_per_actor = fields.next()?.parse().ok()?;
        let broker_per_s = fields.next()?.parse().ok();
        Some(Row {
            backend,
            actors,
            startup,
            heap_per_actor,
            rss_per_actor,
            broker_per_s,
        })
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| backend | actors | start-up s | heap bytes/actor | RSS bytes/actor | broker commands/s at rest |"
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        let broker = row
            .broker_per_s
            .map_or_else(|| "n/a".to_owned(), |per_s| format!("{per_s:.1}"));
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.0} | {broker} |",
            row.backend,
            row.actors,
            row.startup.as_secs_f64(),
            row.heap_per_actor,
            row.rss_per_actor,
        );
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("no tokio runtime")
}

const BACKENDS: [&str; 3] = ["memory", "redis", "nats"];

/// Measures `backend` in this process and reports its row on stdout.
fn child(settings: &Settings, backend: &str) {
    let rt = runtime();
    let row = match backend {
        // The broker is made inside the measured span: on memory it is part of the process.
        "memory" => rt.block_on(run(settings, "memory", Meter::None, || async {
            MemoryBroker::new().backend()
        })),
        "redis" => {
            let server = RedisServer::private(&[]);
            let url = server.url().to_owned();
            let config = RedisConfig::new(url.clone()).prefix(format!("{}:", unique("idle")));
            rt.block_on(run(settings, "redis", Meter::Redis(url), || async {
                config.connect().await.expect("cannot connect to Redis")
            }))
        }
        "nats" => {
            let monitor = free_port().expect("no free port for NATS monitoring");
            let server = NatsServer::private(&["-m", &monitor.to_string()]);
            let config = NatsConfig::from_url(server.url()).prefix(unique("idle"));
            rt.block_on(run(settings, "nats", Meter::Nats(monitor), || async {
                NatsBackend::connect(config)
                    .await
                    .expect("cannot connect to NATS")
            }))
        }
        other => panic!("{CHILD_ENV}={other}: not one of {BACKENDS:?}"),
    };
    println!("{}", row.to_line());
}

/// Runs each wanted backend in a child process of its own (this program again), so that
/// one backend's freed memory, which the allocator keeps, does not hide the next one's RSS
/// growth; echoes the children's lines and prints the table of their rows.
fn main() {
    let settings = Settings::from_env();
    if let Ok(backend) = std::env::var(CHILD_ENV) {
        child(&settings, &backend);
        return;
    }
    let program = std::env::current_exe().expect("no path to this program");
    let mut rows = Vec::new();
    for backend in BACKENDS.into_iter().filter(|b| settings.wants(b)) {
        let mut process = std::process::Command::new(&program)
            .args(std::env::args().skip(1))
            .env(CHILD_ENV, backend)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        let stdout = process.stdout.take().expect("the child's stdout is piped");
        // Line by line as they come: a backend's run takes a minute or more.
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("the child's output is not text");
            match Row::from_line(&line) {
                Some(row) => rows.push(row),
                None => println!("{line}"),
            }
        }
        let status = process.wait().expect("cannot wait for the child");
        if !status.success() {
            println!("idle/{backend}: failed ({status}); no row");
        }
    }
    print_table(&rows);
}
