//! A real outage as a test scenario: the broker's server is killed under steady direct and
//! cluster calls and started again later. Backends whose tests run private servers call
//! [`kill_under_traffic`] with a [`KillableBroker`].
//!
//! What it asserts, as a user would see it:
//! - every call issued before, during and after the outage ends within its deadline plus
//!   [`SLACK`] (in a value or a typed error, never a wait on a backend's own timeout);
//! - once the server answers again, direct calls, the registrations of the hosts' actors,
//!   registering a new actor, and a cluster gather over every member each work within
//!   [`RECOVERY`] of that moment, with nobody doing anything.
//!
//! The recovery is checked from a node whose calls have a short deadline (200 ms): pub/sub
//! is at most once, so a call published while a host is still reconnecting is lost, and
//! waiting the full 2 s for it would leave no time to try again.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::actors::{Counter, CounterCluster, CounterProxy};
use super::{eventually, TestBroker};
use crate::node::Node;

/// The deadline of the scenario's calls.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// How late past its deadline a call may end.
pub const SLACK: Duration = Duration::from_millis(100);

/// How soon after the server answers again everything must work.
pub const RECOVERY: Duration = Duration::from_secs(1);

/// A broker whose server a test can kill and start again.
pub trait KillableBroker: TestBroker {
    /// Kills the server at once (SIGKILL), as a crash would.
    fn kill(&mut self);

    /// Starts the server again on the same address (and store), returning once it accepts
    /// connections.
    fn restart(&mut self);
}

/// What [`kill_under_traffic`] measured.
#[derive(Clone, Debug)]
pub struct OutageReport {
    /// How long the server was dead.
    pub outage: Duration,
    /// Calls made in all.
    pub calls: usize,
    /// Calls issued while the server was dead.
    pub during: usize,
    /// Calls that failed (with a typed error).
    pub failed: usize,
    /// The longest any call took.
    pub longest: Duration,
    /// The longest any call issued during the outage took.
    pub longest_during: Duration,
    /// From the server answering again to a direct call succeeding.
    pub direct_back: Duration,
    /// From the server answering again to both hosts' actors being listed.
    pub registrations_back: Duration,
    /// From the server answering again to a new actor's registration succeeding.
    pub new_registration_back: Duration,
    /// From the server answering again to a gather reaching every member.
    pub gather_back: Duration,
}

impl fmt::Display for OutageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} outage: {} calls ({} issued during it, {} failed), longest {:?} ({:?} for \
             one issued during it); after the server answered again: direct calls {:?}, \
             registrations {:?}, a new registration {:?}, a gather over every member {:?}",
            self.outage,
            self.calls,
            self.during,
            self.failed,
            self.longest,
            self.longest_during,
            self.direct_back,
            self.registrations_back,
            self.new_registration_back,
            self.gather_back
        )
    }
}

/// One call's fate.
struct Outcome {
    issued: Duration,
    took: Duration,
    ok: bool,
}

async fn node(broker: &dyn TestBroker, namespace: &str, deadline: Duration) -> Node {
    Node::builder(broker.connect(namespace).await)
        .call_timeout(deadline)
        .build()
}

/// The deadline of the calls that check recovery: short, so that a call lost while a host
/// was still reconnecting (pub/sub is at most once) leaves time to try again within
/// [`RECOVERY`].
const RECOVERY_CHECK: Duration = Duration::from_millis(200);

/// Issues `call` again and again (with a short pause) until `stop`, recording each outcome.
async fn steady<F, Fut>(began: Instant, stop: Arc<AtomicBool>, mut call: F) -> Vec<Outcome>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut outcomes = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let issued = began.elapsed();
        let started = Instant::now();
        let ok = call().await;
        outcomes.push(Outcome {
            issued,
            took: started.elapsed(),
            ok,
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    outcomes
}

async fn direct_call(proxy: CounterProxy) -> bool {
    match proxy.add(1).await {
        Ok(pending) => pending.await.is_ok(),
        Err(_) => false,
    }
}

async fn gather_both(cluster: CounterCluster) -> bool {
    match cluster.add(0).await {
        Ok(gather) => gather.all().await.is_ok_and(|replies| replies.len() == 2),
        Err(_) => false,
    }
}

/// Polls `check` until it holds and returns the time since `since`; panics naming `what`
/// if that is not within [`RECOVERY`].
async fn recovered<F, Fut>(what: &str, since: Instant, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        eventually(RECOVERY.saturating_sub(since.elapsed()), check).await,
        "{what} did not work within {RECOVERY:?} of the server answering again"
    );
    since.elapsed()
}

/// Two hosts (an actor each, both on one cluster channel) and a caller making steady direct
/// and cluster calls, all in `namespace`; the server is killed after a second of traffic,
/// kept dead for `outage`, and started again. Panics when a guarantee in the
/// [module docs](self) does not hold; returns the figures.
///
/// Needs a multi-threaded runtime (the server is killed and restarted in place).
pub async fn kill_under_traffic<B: KillableBroker>(
    broker: &mut B,
    namespace: &str,
    outage: Duration,
) -> OutageReport {
    let host_a = node(broker, namespace, DEADLINE).await;
    let host_b = node(broker, namespace, DEADLINE).await;
    let caller = node(broker, namespace, DEADLINE).await;
    let checker = node(broker, namespace, RECOVERY_CHECK).await;
    for (host, name) in [(&host_a, "a"), (&host_b, "b")] {
        let actor = host
            .spawn(Counter::named(name))
            .uuid(name)
            .start()
            .await
            .unwrap_or_else(|e| panic!("starting actor {name}: {e}"));
        actor.join("workers").await.unwrap();
    }
    let proxy: CounterProxy = caller.registry().proxy("a").unwrap();
    let cluster: CounterCluster = caller.cluster("workers").unwrap();
    assert!(
        gather_both(cluster.clone()).await,
        "no gather before the outage"
    );
    let check_proxy: CounterProxy = checker.registry().proxy("a").unwrap();
    let check_cluster: CounterCluster = checker.cluster("workers").unwrap();
    assert!(
        gather_both(check_cluster.clone()).await,
        "no gather from the checking node before the outage"
    );

    let began = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let direct = tokio::spawn(steady(began, stop.clone(), {
        let proxy = proxy.clone();
        move || direct_call(proxy.clone())
    }));
    let gathers = tokio::spawn(steady(began, stop.clone(), {
        let cluster = cluster.clone();
        move || gather_both(cluster.clone())
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = began.elapsed();
    tokio::task::block_in_place(|| broker.kill());
    tokio::time::sleep(outage).await;
    tokio::task::block_in_place(|| broker.restart());
    let back = Instant::now();
    let back_at = began.elapsed();

    let registry = checker.registry();
    let direct_back = recovered("a direct call", back, || direct_call(check_proxy.clone())).await;
    let registrations_back = recovered("listing both hosts' actors", back, || async {
        let listed = registry.actors().await;
        listed.is_ok_and(|actors| actors.contains("a") && actors.contains("b"))
    })
    .await;
    let attempt = AtomicUsize::new(0);
    let new_registration_back = recovered("registering a new actor", back, || async {
        let n = attempt.fetch_add(1, Ordering::Relaxed);
        registry.register(&format!("new{n}")).await.is_ok()
    })
    .await;
    let gather_back = recovered("a gather over every member", back, || {
        gather_both(check_cluster.clone())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = direct.await.expect("the direct calls' task panicked");
    outcomes.extend(gathers.await.expect("the gathers' task panicked"));

    for outcome in &outcomes {
        assert!(
            outcome.took <= DEADLINE + SLACK,
            "a call issued {:?} into the run took {:?}, past its deadline of {DEADLINE:?}",
            outcome.issued,
            outcome.took
        );
    }
    let during: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.issued >= killed && o.issued < back_at)
        .collect();
    assert!(!during.is_empty(), "no call was issued during the outage");
    assert!(
        outcomes.iter().any(|o| o.issued > back_at && o.ok),
        "no call of the steady traffic succeeded after the restart"
    );
    for host in [host_a, host_b, caller, checker] {
        host.shutdown().await;
    }
    OutageReport {
        outage,
        calls: outcomes.len(),
        during: during.len(),
        failed: outcomes.iter().filter(|o| !o.ok).count(),
        longest: outcomes.iter().map(|o| o.took).max().unwrap_or_default(),
        longest_during: during.iter().map(|o| o.took).max().unwrap_or_default(),
        direct_back,
        registrations_back,
        new_registration_back,
        gather_back,
    }
}
