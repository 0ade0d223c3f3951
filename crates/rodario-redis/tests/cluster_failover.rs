//! A primary of a private Redis Cluster SIGKILLed under steady calls, on a cluster of its
//! own: the replica that takes over serves its shard again, and the backend restores what
//! the shard lost (subscriptions, registrations) by itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rodario_core::node::Node;
use rodario_core::testkit::actors::{Counter, CounterCluster, CounterProxy};
use rodario_core::testkit::eventually;
use rodario_core::testkit::outage::{DEADLINE, SLACK};
use rodario_redis::testkit::RedisCluster;
use tokio::time::Instant;

/// Calls through the kill.
const CALLS: usize = 1000;

/// How long after the replica's promotion every call must succeed.
const SETTLE: Duration = Duration::from_secs(2);

/// Actors per primary.
const PER_SHARD: usize = 2;

/// One call's fate: when it was issued (from the start of the traffic), how long it took.
struct Outcome {
    issued: Duration,
    took: Duration,
    ok: bool,
    /// Whether the actor called lives on the killed primary's shard.
    lost_shard: bool,
}

async fn direct_call(proxy: &CounterProxy) -> bool {
    match proxy.add(1).await {
        Ok(pending) => pending.await.is_ok(),
        Err(_) => false,
    }
}

async fn gather_all(cluster: &CounterCluster, members: usize) -> bool {
    match cluster.add(0).await {
        Ok(gather) => gather
            .all()
            .await
            .is_ok_and(|replies| replies.len() == members),
        Err(_) => false,
    }
}

async fn node(cluster: &RedisCluster) -> Node {
    Node::builder(cluster.backend("failover").await)
        .call_timeout(DEADLINE)
        .build()
}

/// `CALLS` direct calls, back to back with a short pause, round robin over actors whose
/// channels live on every shard (two per primary); the primary serving the registry's slot
/// (and so every presence key) is SIGKILLed a second in. A lease whose key lives on that
/// shard is held across it. No call outlives its deadline; every call issued from `SETTLE`
/// after the replica's promotion on succeeds; the actors of the lost shard are reachable
/// and listed; the lease is still held and nobody else can take it; a gather reaches both
/// members of a cluster channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_under_calls_is_replaced_and_everything_comes_back() {
    let cluster = Arc::new(RedisCluster::start().await);
    let prefix = cluster.prefix("failover");
    let victim = cluster
        .primary_of(&format!("{{{prefix}rodario}}actors"))
        .await;
    let nodes = cluster.nodes().await;
    let victim_slots = nodes
        .iter()
        .find(|node| node.port == victim)
        .expect("the victim is a node")
        .slots
        .clone();

    // Actor names whose channels spread over the three primaries.
    let mut names: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        let name = format!("a{i}");
        let primary = cluster.primary_of(&format!("{prefix}actor:{name}")).await;
        let on_primary = names.entry(primary).or_default();
        if on_primary.len() < PER_SHARD {
            on_primary.push(name);
        }
        if names.len() == 3 && names.values().all(|n| n.len() == PER_SHARD) {
            break;
        }
    }
    let mut lease_name = String::new();
    for i in 0.. {
        lease_name = format!("migrate{i}");
        if cluster
            .primary_of(&format!("{prefix}global.lock:{lease_name}"))
            .await
            == victim
        {
            break;
        }
    }

    let host = node(&cluster).await;
    let member = node(&cluster).await;
    let caller = node(&cluster).await;
    let mut actors = Vec::new();
    let mut proxies = Vec::new();
    let on_victim: Vec<bool> = names
        .iter()
        .flat_map(|(primary, names)| names.iter().map(move |_| *primary == victim))
        .collect();
    for name in names.values().flatten() {
        let actor = host
            .spawn(Counter::named(name))
            .uuid(name)
            .start()
            .await
            .unwrap_or_else(|e| panic!("starting actor {name}: {e}"));
        proxies.push(
            caller
                .registry()
                .proxy::<CounterProxy>(name)
                .expect("a proxy"),
        );
        actors.push(actor);
    }
    actors[0].join("workers").await.unwrap();
    let other = member
        .spawn(Counter::named("other"))
        .uuid("other")
        .start()
        .await
        .unwrap();
    other.join("workers").await.unwrap();
    let lease = host
        .locks()
        .acquire(&lease_name)
        .expiry(Duration::from_secs(30))
        .await
        .unwrap()
        .expect("nobody holds the lease yet");
    let workers: CounterCluster = caller.cluster("workers").unwrap();
    assert!(gather_all(&workers, 2).await, "no gather before the kill");
    for proxy in &proxies {
        assert!(direct_call(proxy).await, "a call failed before the kill");
    }

    let began = Instant::now();
    let mut outcomes = Vec::with_capacity(CALLS);
    let mut killed_at = None;
    let mut promotion = None;
    for i in 0..CALLS {
        if killed_at.is_none() && began.elapsed() >= Duration::from_secs(1) {
            tokio::task::block_in_place(|| cluster.kill(victim));
            killed_at = Some(began.elapsed());
            let cluster = cluster.clone();
            let slots = victim_slots.clone();
            promotion = Some(tokio::spawn(async move {
                cluster
                    .await_promotion(victim, &slots, Duration::from_secs(20))
                    .await;
                began.elapsed()
            }));
        }
        let issued = began.elapsed();
        let started = Instant::now();
        let ok = direct_call(&proxies[i % proxies.len()]).await;
        outcomes.push(Outcome {
            issued,
            took: started.elapsed(),
            ok,
            lost_shard: on_victim[i % proxies.len()],
        });
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    let killed_at = killed_at.expect("the calls ended before the kill");
    let promoted_at = promotion
        .expect("a promotion watcher")
        .await
        .expect("no replica took over");

    for outcome in &outcomes {
        assert!(
            outcome.took <= DEADLINE + SLACK,
            "a call issued {:?} into the run took {:?}, past its deadline of {DEADLINE:?}",
            outcome.issued,
            outcome.took
        );
    }
    let settled = promoted_at + SETTLE;
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.issued >= settled).collect();
    assert!(
        after.len() >= 100,
        "only {} calls were issued {SETTLE:?} after the promotion: the run is too short",
        after.len()
    );
    let failed_after: Vec<Duration> = after.iter().filter(|o| !o.ok).map(|o| o.issued).collect();
    assert!(
        failed_after.is_empty(),
        "calls issued {SETTLE:?} after the promotion ({promoted_at:?}) failed, at {failed_after:?}"
    );
    let back = outcomes
        .iter()
        .find(|o| {
            o.issued >= killed_at
                && o.ok
                && outcomes[..]
                    .iter()
                    .filter(|l| l.issued >= o.issued)
                    .all(|l| l.ok)
        })
        .map(|o| o.issued + o.took)
        .expect("calls did not succeed again after the kill");

    let registry = caller.registry();
    let listed = registry.actors().await.expect("listing the actors");
    for name in names.values().flatten() {
        assert!(
            listed.contains(name.as_str()),
            "{name} is not listed after the failover"
        );
        assert!(
            registry.register(name).await.is_err(),
            "{name} could be registered twice"
        );
    }
    for proxy in &proxies {
        assert!(
            direct_call(proxy).await,
            "an actor is unreachable after the failover"
        );
    }
    assert!(
        lease.renew(Duration::from_secs(30)).await.unwrap(),
        "the lease held across the kill was lost"
    );
    assert!(
        caller.locks().acquire(&lease_name).await.unwrap().is_none(),
        "another node took the lease held across the kill"
    );
    assert!(
        eventually(Duration::from_secs(2), || gather_all(&workers, 2)).await,
        "no gather reached every member after the failover"
    );
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    let failed_elsewhere = outcomes.iter().filter(|o| !o.ok && !o.lost_shard).count();
    let longest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    eprintln!(
        "redis cluster: {CALLS} calls over {} actors on 3 shards, the registry's primary \
         killed {killed_at:?} in; replica promoted {:?} after the kill; {failed} failed \
         ({failed_elsewhere} of them to actors on the other shards), longest {longest:?}, calls succeed again {:?} after the kill ({:?} after the \
         promotion)",
        proxies.len(),
        promoted_at - killed_at,
        back.saturating_sub(killed_at),
        back.saturating_sub(promoted_at),
    );
    drop(actors);
    drop(other);
    for node in [host, member, caller] {
        node.shutdown().await;
    }
}
