//! What one sequential call costs on the memory backend, for instruction counts: a `Node`
//! pair on one memory broker (a current-thread runtime, as `call_sequential/memory`) makes
//! 100 calls of `proxy.add(1)` to warm up, then N more, and prints the time per call.
//! `benches/callgrind.sh` runs it under callgrind at 5,000 and 10,000 calls and prints the
//! difference divided by 5,000: the instructions of one call, without the start-up, and
//! unchanged by other load on the machine (BENCHMARKS.md, "Instructions per call").
//!
//! Two words change what is called: `mt` runs the calls from `block_on` on a 2-worker
//! multi_thread runtime (`memory_mt`), `raw` makes the raw baseline's calls instead (a tokio
//! mpsc request carrying a oneshot reply, to an echo task). `benches/syscalls.sh` counts the
//! system calls of each under `strace`.
//!
//! ```sh
//! cargo bench --bench callcost             # 200,000 calls, timed (20,000 with --quick)
//! cargo bench --bench callcost -- 5000     # another number of calls
//! cargo bench --bench callcost -- 5000 mt raw
//! benches/callgrind.sh                     # instructions per call (needs valgrind)
//! benches/syscalls.sh                      # system calls per call on memory_mt (needs strace)
//! ```

mod cli;

use std::time::Instant;

use cli::Args;
use rodario::memory::MemoryBroker;
use rodario::Node;
use rodario_core::testkit::actors::{Counter, CounterProxy};
use tokio::sync::{mpsc, oneshot};

/// Calls made when the command line names no number.
const DEFAULT_CALLS: u64 = 200_000;

/// Calls made before the timed ones: the first calls fill caches and tables.
const WARM_UP: u64 = 100;

fn main() {
    let args = Args::parse();
    // A number among the arguments is how many calls to make; others are filters, as for
    // every bench (`cargo bench -- call_sequential` skips this one), and `--quick` makes
    // fewer calls.
    let count = args
        .filters
        .iter()
        .find_map(|arg| arg.replace('_', "").parse().ok());
    if count.is_none() && !args.wants("callcost") {
        return;
    }
    let calls = count.unwrap_or(if args.quick {
        DEFAULT_CALLS / 10
    } else {
        DEFAULT_CALLS
    });
    let multi_thread = args.filters.iter().any(|arg| arg == "mt");
    let raw = args.filters.iter().any(|arg| arg == "raw");
    let runtime = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .expect("a runtime");
    let what = match (raw, multi_thread) {
        (false, false) => "memory",
        (false, true) => "memory_mt",
        (true, false) => "raw memory",
        (true, true) => "raw memory_mt",
    };
    let per_call = if raw {
        runtime.block_on(raw_calls(calls))
    } else {
        runtime.block_on(rodario_calls(calls))
    };
    eprintln!(
        "callcost: {calls} sequential {what} calls, {:.2} µs per call",
        per_call * 1e6
    );
}

/// Makes `calls` timed calls (after the warm-up) between two nodes on one memory broker;
/// returns the seconds per call.
async fn rodario_calls(calls: u64) -> f64 {
    let broker = MemoryBroker::new();
    let host = Node::builder(broker.backend()).build();
    let caller = Node::builder(broker.backend()).build();
    let _actor = host
        .spawn(Counter::named("cost"))
        .uuid("cost")
        .start()
        .await
        .expect("the actor starts");
    let proxy: CounterProxy = caller.registry().proxy("cost").expect("a valid name");
    let call = || async { proxy.add(1).await.expect("sent").await.expect("answered") };
    for _ in 0..WARM_UP {
        call().await;
    }
    let began = Instant::now();
    for _ in 0..calls {
        call().await;
    }
    let per_call = began.elapsed().as_secs_f64() / calls as f64;
    host.shutdown().await;
    caller.shutdown().await;
    per_call
}

/// The raw baseline of `benches/memory.rs`: `calls` timed requests to an echo task, each
/// answered through a oneshot channel; returns the seconds per call.
async fn raw_calls(calls: u64) -> f64 {
    let (requests, mut echo) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(1024);
    tokio::spawn(async move {
        let mut total = 0;
        while let Some((n, reply)) = echo.recv().await {
            total += n;
            let _ = reply.send(total);
        }
    });
    let call = || async {
        let (reply, answer) = oneshot::channel();
        requests.send((1, reply)).await.expect("the echo runs");
        answer.await.expect("answered")
    };
    for _ in 0..WARM_UP {
        call().await;
    }
    let began = Instant::now();
    for _ in 0..calls {
        call().await;
    }
    began.elapsed().as_secs_f64() / calls as f64
}
