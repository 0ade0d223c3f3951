//! Real outages: nats-server SIGKILLed under steady traffic and restarted (same store), once
//! after 4 s and twenty times after 1 s (`rodario_core::testkit::outage`). Every call ends
//! by its deadline, and each time direct calls, registrations and a gather over every
//! member work again within 1 s of the server answering.

use std::time::Duration;

use rodario_core::testkit::outage::kill_under_traffic;
use rodario_nats::testkit::NatsServer;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_end_by_their_deadline_through_a_restart_and_everything_comes_back() {
    let mut broker = NatsServer::private(&[]);
    let report = kill_under_traffic(&mut broker, "outage", Duration::from_secs(4)).await;
    eprintln!("nats: {report}");
}

/// Twenty short restarts in a row, each with fresh nodes on a namespace of its own (the
/// earlier runs' registrations lapse on their own), within a bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_restarts_in_a_row() {
    const RUNS: usize = 20;
    const BUDGET: Duration = Duration::from_secs(240);
    let mut broker = NatsServer::private(&[]);
    let began = Instant::now();
    for run in 0..RUNS {
        assert!(
            began.elapsed() < BUDGET,
            "only {run} of {RUNS} runs within {BUDGET:?}"
        );
        let report =
            kill_under_traffic(&mut broker, &format!("run{run}"), Duration::from_secs(1)).await;
        eprintln!("nats run {run}: {report}");
    }
}
