//! What one sequential call costs on the memory backend, for instruction counts: a `Node`
//! pair on one memory broker (a current-thread runtime, as `call_sequential/memory`) makes
//! 100 calls of `proxy.add(1)` to warm up, then N more, and prints the time per call.
//! `benches/callgrind.sh` runs it under callgrind at 5,000 and 10,000 calls and prints the
//! difference divided by 5,000: the instructions of one call, without the start-up, and
//! unchanged by other load on the machine (BENCHMARKS.md, "Instructions per call").
//!
//! ```sh
//! cargo bench --bench callcost             # 200,000 calls, timed (20,000 with --quick)
//! cargo bench --bench callcost -- 5000     # another number of calls
//! benches/callgrind.sh                     # instructions per call (needs valgrind)
//! ```

mod cli;

use std::time::Instant;

use cli::Args;
use rodario::memory::MemoryBroker;
use rodario::Node;
use rodario_core::testkit::actors::{Counter, CounterProxy};

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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
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
        eprintln!(
            "callcost: {calls} sequential memory calls, {:.2} µs per call",
            per_call * 1e6
        );
        host.shutdown().await;
        caller.shutdown().await;
    });
}
