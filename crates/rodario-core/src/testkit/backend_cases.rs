//! The behaviours of the three backend traits themselves, checked through the trait objects
//! of [`Backend`]s (no [`crate::Node`]): what every [`Presence`], [`LockStore`] and
//! [`Transport`] must do, whichever broker is behind it.
//!
//! Each case takes its connections from [`TestBroker::connect`] (each one as another process
//! would open it) and panics with a message on failure. The TTLs are a few hundred
//! milliseconds and every wait after one has a margin of several hundred more, so that a
//! loaded machine does not fail them; each assertion still fails when the behaviour breaks.
//!
//! [`Presence`]: crate::backend::Presence
//! [`LockStore`]: crate::backend::LockStore
//! [`Transport`]: crate::backend::Transport

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{next_frame, no_frame, TestBroker};
use crate::backend::{
    Backend, Channel, Delivery, FrameSink, Group, LeaseRenewal, LockKey, TransportExt,
};
use crate::error::BackendErrorKind;
use crate::name::{ActorId, ClusterName, NodeId};

/// A TTL meant to run out during a case.
const EXPIRING: Duration = Duration::from_millis(300);

/// The first TTL of an entry a case renews before it runs out: long enough that the renewal,
/// made right after the insert, comes in time on a loaded machine.
const FIRST: Duration = Duration::from_secs(1);

/// A TTL that does not run out during a case.
const LONG: Duration = Duration::from_secs(30);

/// How long past a TTL a case waits before it checks that the entry expired.
const MARGIN: Duration = Duration::from_millis(700);

/// Connections racing in the race cases, and tasks racing over them.
const RACING_CONNECTIONS: usize = 4;
const RACING_TASKS: usize = 16;

async fn connections(broker: &dyn TestBroker, count: usize) -> Vec<Backend> {
    let mut backends = Vec::with_capacity(count);
    for _ in 0..count {
        backends.push(broker.connect("a").await);
    }
    backends
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn lock_key(name: &str) -> LockKey {
    LockKey {
        context: "global.lock".to_owned(),
        name: name.to_owned(),
    }
}

/// Takes a lease for each of `owners` for `ttl`.
async fn leases(backend: &Backend, owners: &[&str], ttl: Duration) {
    for owner in owners {
        backend
            .presence()
            .keep_alive(owner, ttl)
            .await
            .unwrap_or_else(|e| panic!("lease of {owner}: {e}"));
    }
}

/// Of many connections racing to insert one member, exactly one wins, round after round;
/// a live member is not inserted again, even by the owner that holds it.
pub async fn registry_insert_race_has_one_winner(broker: &dyn TestBroker) {
    let backends = connections(broker, RACING_CONNECTIONS).await;
    let owners: Vec<String> = (0..RACING_TASKS)
        .map(|task| format!("owner-{task}"))
        .collect();
    let owner_names: Vec<&str> = owners.iter().map(String::as_str).collect();
    leases(&backends[0], &owner_names, LONG).await;
    leases(&backends[0], &["me"], LONG).await;
    let rounds = 5;
    for round in 0..rounds {
        let member = format!("contested-{round}");
        let tasks: Vec<_> = (0..RACING_TASKS)
            .map(|task| {
                let registry = backends[task % backends.len()].presence().clone();
                let member = member.clone();
                let owner = owners[task].clone();
                tokio::spawn(async move {
                    registry
                        .insert(Group::Actors, &member, &owner)
                        .await
                        .unwrap_or_else(|e| panic!("insert of {member}: {e}"))
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.expect("an insert task panicked"));
        }
        assert_eq!(winners, 1, "round {round}: {winners} racing inserts won");
    }
    let registry = backends[0].presence();
    let members = registry.members(Group::Actors).await.unwrap();
    assert_eq!(members.len(), rounds, "{members:?}");
    assert!(registry.insert(Group::Actors, "mine", "me").await.unwrap());
    assert!(
        !registry.insert(Group::Actors, "mine", "me").await.unwrap(),
        "a live member was inserted again by its own owner"
    );
}

/// `held` answers for the owner's entries only (one answer per member, in order); only the
/// owner removes its entries, another owner's attempt leaves the entry as it was. `remove`
/// without an owner removes whoever holds it and marks the holder's lease disturbed, which
/// its next renewal reports once.
pub async fn registry_held_and_remove_are_owner_only(broker: &dyn TestBroker) {
    let a = broker.connect("a").await;
    let b = broker.connect("a").await;
    leases(&a, &["A", "B"], LONG).await;
    let (ra, rb) = (a.presence(), b.presence());
    assert!(ra.insert(Group::Actors, "x", "A").await.unwrap());
    assert!(ra.insert(Group::Actors, "y", "A").await.unwrap());
    assert!(rb.insert(Group::Actors, "z", "B").await.unwrap());
    assert!(!rb.insert(Group::Actors, "x", "B").await.unwrap());

    // From any connection, for the owner's entries only, in the order asked.
    assert_eq!(
        rb.held(Group::Actors, &["x", "missing", "z", "y"], "A")
            .await
            .unwrap(),
        vec![true, false, false, true]
    );
    assert_eq!(
        ra.held(Group::Actors, &[], "A").await.unwrap(),
        Vec::<bool>::new()
    );
    assert_eq!(
        rb.held(Group::Actors, &["x"], "B").await.unwrap(),
        vec![false],
        "held by an owner that does not hold it"
    );
    assert!(!rb.remove(Group::Actors, "x", Some("B")).await.unwrap());
    assert!(rb.contains(Group::Actors, "x").await.unwrap());
    // The failed attempts did not take it over: A still holds it.
    assert_eq!(
        ra.held(Group::Actors, &["x"], "A").await.unwrap(),
        vec![true]
    );
    assert!(rb.remove(Group::Actors, "x", Some("A")).await.unwrap());
    assert!(!ra.contains(Group::Actors, "x").await.unwrap());
    assert!(!ra.remove(Group::Actors, "x", Some("A")).await.unwrap());
    assert_eq!(
        ra.held(Group::Actors, &["x"], "A").await.unwrap(),
        vec![false],
        "a removed entry is still held"
    );
    assert_eq!(
        ra.keep_alive("A", LONG).await.unwrap(),
        LeaseRenewal::Held,
        "an owner's own removal disturbed its lease"
    );

    // Without an owner: whoever holds it, once; the holder hears of it at its next renewal.
    assert!(ra.remove(Group::Actors, "z", None).await.unwrap());
    assert!(!ra.remove(Group::Actors, "z", None).await.unwrap());
    assert!(!rb.contains(Group::Actors, "z").await.unwrap());
    assert_eq!(ra.members(Group::Actors).await.unwrap(), set(&["y"]));
    assert_eq!(
        rb.keep_alive("B", LONG).await.unwrap(),
        LeaseRenewal::Disturbed
    );
    assert_eq!(rb.keep_alive("B", LONG).await.unwrap(), LeaseRenewal::Held);

    // A removed member can be inserted again, by anyone.
    assert!(rb.insert(Group::Actors, "x", "B").await.unwrap());
    assert_eq!(ra.members(Group::Actors).await.unwrap(), set(&["x", "y"]));
}

/// Entries live by their owner's lease: when it runs out (or is released), `contains` and
/// `members` no longer see them, their owner can no longer remove them, and another owner
/// can insert them; the owner's next renewal reports the lease lost, and an entry it still
/// holds is live again with the new lease. A lease renewed in time outlives its first TTL.
pub async fn registry_entries_expire_with_their_owners_lease(broker: &dyn TestBroker) {
    let a = broker.connect("a").await;
    let b = broker.connect("a").await;
    let (ra, rb) = (a.presence(), b.presence());
    let jobs = ClusterName::new("jobs").unwrap();
    let members = Group::Members(&jobs);
    let started = Instant::now();
    assert_eq!(
        ra.keep_alive("A", EXPIRING).await.unwrap(),
        LeaseRenewal::Lost,
        "a new lease"
    );
    leases(&a, &["K"], FIRST).await;
    leases(&a, &["L", "B"], LONG).await;
    assert!(ra.insert(Group::Actors, "brief", "A").await.unwrap());
    assert!(ra.insert(members, "brief", "A").await.unwrap());
    assert!(ra.insert(Group::Actors, "ghost", "A").await.unwrap());
    assert!(ra.insert(Group::Actors, "kept", "K").await.unwrap());
    assert!(ra.insert(Group::Actors, "lasting", "L").await.unwrap());
    assert_eq!(ra.keep_alive("K", LONG).await.unwrap(), LeaseRenewal::Held);

    tokio::time::sleep_until(started + FIRST + MARGIN).await;
    assert!(!rb.contains(Group::Actors, "brief").await.unwrap());
    assert!(!rb.contains(members, "brief").await.unwrap());
    assert!(rb.members(members).await.unwrap().is_empty());
    assert!(
        rb.contains(Group::Actors, "kept").await.unwrap(),
        "an entry of a renewed lease expired at its first TTL"
    );
    assert_eq!(
        rb.members(Group::Actors).await.unwrap(),
        set(&["kept", "lasting"])
    );

    // Expired: its owner cannot remove it, anyone can take it.
    assert!(!ra.remove(Group::Actors, "brief", Some("A")).await.unwrap());
    assert!(!ra.remove(members, "brief", None).await.unwrap());
    assert!(rb.insert(Group::Actors, "brief", "B").await.unwrap());
    assert!(rb.insert(members, "brief", "B").await.unwrap());
    assert!(
        !ra.held(Group::Actors, &["brief"], "A").await.unwrap()[0],
        "an entry taken by another owner is still held"
    );
    assert_eq!(ra.keep_alive("A", LONG).await.unwrap(), LeaseRenewal::Lost);
    assert!(!ra.insert(Group::Actors, "brief", "A").await.unwrap());
    assert!(ra.contains(Group::Actors, "brief").await.unwrap());
    assert!(!ra.remove(Group::Actors, "brief", Some("A")).await.unwrap());
    assert!(ra.remove(Group::Actors, "brief", Some("B")).await.unwrap());
    // An entry the lost lease's owner still holds (none took it; the broker may also have
    // dropped it) is live again with the new lease, or missing: never held and dead.
    let ghost = ra.held(Group::Actors, &["ghost"], "A").await.unwrap()[0];
    assert_eq!(
        ghost,
        ra.contains(Group::Actors, "ghost").await.unwrap(),
        "held and live disagree after the lease came back"
    );

    // Released: its entries are gone at once.
    assert!(ra.release("L").await.unwrap());
    assert!(!ra.release("L").await.unwrap());
    assert!(!rb.contains(Group::Actors, "lasting").await.unwrap());
    assert!(rb.insert(Group::Actors, "lasting", "B").await.unwrap());
}

/// `Group::Actors` and the `Group::Members` of each channel are separate sets.
pub async fn registry_groups_are_separate(broker: &dyn TestBroker) {
    let backend = broker.connect("a").await;
    leases(&backend, &["A", "B"], LONG).await;
    let registry = backend.presence();
    let one = ClusterName::new("one").unwrap();
    let two = ClusterName::new("two").unwrap();
    assert!(registry.insert(Group::Actors, "m", "A").await.unwrap());
    assert!(!registry.contains(Group::Members(&one), "m").await.unwrap());
    assert!(registry
        .members(Group::Members(&one))
        .await
        .unwrap()
        .is_empty());
    // The same member in another group is another entry, with its own owner.
    assert!(registry
        .insert(Group::Members(&one), "m", "B")
        .await
        .unwrap());
    assert!(registry
        .insert(Group::Members(&two), "n", "B")
        .await
        .unwrap());
    assert_eq!(
        registry
            .held(Group::Members(&one), &["m"], "A")
            .await
            .unwrap(),
        vec![false]
    );
    assert_eq!(
        registry.members(Group::Members(&one)).await.unwrap(),
        set(&["m"])
    );
    assert_eq!(
        registry.members(Group::Members(&two)).await.unwrap(),
        set(&["n"])
    );
    assert_eq!(registry.members(Group::Actors).await.unwrap(), set(&["m"]));
    assert!(registry
        .remove(Group::Members(&one), "m", None)
        .await
        .unwrap());
    assert!(registry.contains(Group::Actors, "m").await.unwrap());
    assert!(!registry.contains(Group::Members(&one), "m").await.unwrap());
    assert!(registry
        .remove(Group::Actors, "m", Some("A"))
        .await
        .unwrap());
    assert!(registry.contains(Group::Members(&two), "n").await.unwrap());
}

/// Of many connections racing to acquire one free lock, exactly one wins, round after
/// round; a held lock is not acquired again, even with its holder's token; another context
/// or name is another lock.
pub async fn lock_acquire_race_has_one_winner(broker: &dyn TestBroker) {
    let backends = connections(broker, RACING_CONNECTIONS).await;
    for round in 0..5 {
        let key = lock_key(&format!("contested-{round}"));
        let tasks: Vec<_> = (0..RACING_TASKS)
            .map(|task| {
                let locks = backends[task % backends.len()].locks().clone();
                let key = key.clone();
                tokio::spawn(async move {
                    locks
                        .acquire(&key, &format!("token-{task}"), LONG)
                        .await
                        .unwrap_or_else(|e| panic!("acquire of {key:?}: {e}"))
                })
            })
            .collect();
        let mut winners = Vec::new();
        for (task, handle) in tasks.into_iter().enumerate() {
            if handle.await.expect("an acquire task panicked") {
                winners.push(task);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let locks = backends[0].locks();
        assert!(
            !locks
                .acquire(&key, &format!("token-{}", winners[0]), LONG)
                .await
                .unwrap(),
            "a held lock was acquired again by its holder's token"
        );
        let other_context = LockKey {
            context: "other.lock".to_owned(),
            name: key.name.clone(),
        };
        assert!(locks.acquire(&other_context, "other", LONG).await.unwrap());
    }
}

/// Only the holder's token releases or renews a lease; a wrong token changes nothing.
/// After the release the lock is free for another token, and the old token holds nothing.
pub async fn lock_release_and_renew_are_token_checked(broker: &dyn TestBroker) {
    let a = broker.connect("a").await;
    let b = broker.connect("a").await;
    let key = lock_key("method");
    assert!(a.locks().acquire(&key, "t1", LONG).await.unwrap());
    assert!(!b.locks().acquire(&key, "t2", LONG).await.unwrap());
    assert!(!b.locks().release(&key, "t2").await.unwrap());
    assert!(!b.locks().renew(&key, "t2", LONG).await.unwrap());
    assert!(
        !b.locks().acquire(&key, "t2", LONG).await.unwrap(),
        "a wrong token's release or renew freed the lock"
    );
    // The right token works from any connection.
    assert!(b.locks().renew(&key, "t1", LONG).await.unwrap());
    assert!(a.locks().release(&key, "t1").await.unwrap());
    assert!(!a.locks().release(&key, "t1").await.unwrap());
    assert!(!a.locks().renew(&key, "t1", LONG).await.unwrap());
    assert!(b.locks().acquire(&key, "t2", LONG).await.unwrap());
    assert!(!a.locks().release(&key, "t1").await.unwrap());
    assert!(!a.locks().acquire(&key, "t3", LONG).await.unwrap());
    assert!(b.locks().release(&key, "t2").await.unwrap());
}

/// A lease not renewed is free after its TTL: another token takes it, and the old token can
/// neither release nor renew it. A lease renewed in time outlives its first TTL; a wrong
/// token's renewal does not extend one.
pub async fn lock_leases_expire(broker: &dyn TestBroker) {
    let a = broker.connect("a").await;
    let b = broker.connect("a").await;
    let brief = lock_key("brief");
    let kept = lock_key("kept");
    let started = Instant::now();
    assert!(a.locks().acquire(&brief, "t1", EXPIRING).await.unwrap());
    assert!(a.locks().acquire(&kept, "t1", FIRST).await.unwrap());
    assert!(a.locks().renew(&kept, "t1", LONG).await.unwrap());
    assert!(!b.locks().renew(&brief, "t2", LONG).await.unwrap());

    tokio::time::sleep_until(started + FIRST + MARGIN).await;
    assert!(
        b.locks().acquire(&brief, "t2", LONG).await.unwrap(),
        "an expired lease was not free"
    );
    assert!(
        !b.locks().acquire(&kept, "t2", LONG).await.unwrap(),
        "a renewed lease expired at its first TTL"
    );
    assert!(!a.locks().release(&brief, "t1").await.unwrap());
    assert!(!a.locks().renew(&brief, "t1", LONG).await.unwrap());
    assert!(!a.locks().acquire(&brief, "t3", LONG).await.unwrap());
    assert!(b.locks().release(&brief, "t2").await.unwrap());
    assert!(a.locks().release(&kept, "t1").await.unwrap());
}

/// A zero TTL is refused with [`BackendErrorKind::InvalidInput`] by `LockStore::acquire`
/// and `renew` and by `Presence::keep_alive`, and changes nothing.
pub async fn zero_ttls_are_refused(broker: &dyn TestBroker) {
    let backend = broker.connect("a").await;
    let (locks, registry) = (backend.locks(), backend.presence());
    let key = lock_key("zero");
    refused("acquire", locks.acquire(&key, "t1", Duration::ZERO).await);
    assert!(locks.acquire(&key, "t1", LONG).await.unwrap());
    refused("renew", locks.renew(&key, "t1", Duration::ZERO).await);
    assert!(
        !locks.acquire(&key, "t2", LONG).await.unwrap(),
        "a refused renewal freed the lease"
    );
    assert!(locks.renew(&key, "t1", LONG).await.unwrap());

    refused("keep_alive", registry.keep_alive("A", Duration::ZERO).await);
    assert_eq!(
        registry.keep_alive("A", LONG).await.unwrap(),
        LeaseRenewal::Lost,
        "a refused lease was taken"
    );
    assert!(registry.insert(Group::Actors, "zero", "A").await.unwrap());
    refused("keep_alive", registry.keep_alive("A", Duration::ZERO).await);
    assert!(
        registry.contains(Group::Actors, "zero").await.unwrap(),
        "a refused renewal ended the lease"
    );
}

/// Checks that a call with a zero TTL was refused as invalid input.
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, crate::error::BackendError>) {
    match result {
        Err(e) => assert_eq!(e.kind(), BackendErrorKind::InvalidInput, "{what}: {e}"),
        Ok(answer) => panic!("{what} with a zero TTL answered {answer:?}"),
    }
}

/// Checks a publish's delivery report against the number of connections subscribed: exact
/// when the transport counts receivers, else never contradicting it.
fn check_report(report: Delivery, connections: usize, counts: bool, what: &str) {
    if counts {
        assert_eq!(report, Delivery::Exact(connections), "{what}");
        return;
    }
    match report {
        Delivery::Exact(n) => assert_eq!(n, connections, "{what}: a wrong exact count"),
        Delivery::AtLeastOne => assert!(connections > 0, "{what}: AtLeastOne with nobody"),
        Delivery::Unknown => {}
    }
}

/// A publish reports what the broker knows of its receivers: `Exact(0)` when nobody
/// subscribed to an actor's channel; on a transport that counts receivers `Exact(n)` for
/// `n` subscribed connections (several subscriptions on one connection count once), and
/// otherwise never a report that contradicts the subscriptions. Every subscription gets
/// every frame, also after another one on its connection closed.
pub async fn publish_reports_delivery(broker: &dyn TestBroker) {
    let a = broker.connect("a").await;
    let b = broker.connect("a").await;
    let c = broker.connect("a").await;
    let counts = c.transport().counts_receivers();
    // Nodes rely on it to fail a call to a missing actor at once.
    assert_eq!(
        c.transport()
            .publish(
                &Channel::Actor(ActorId::new("nobody").unwrap()),
                Bytes::from_static(b"lost")
            )
            .await
            .unwrap(),
        Delivery::Exact(0),
        "a publish to an actor nobody serves"
    );
    // The publish to nobody goes to a channel of its own: a backend may return from an
    // unchecked publish before the broker has it, so a subscription made right after could
    // still see it.
    let channels = [
        (
            Channel::Actor(ActorId::new("delivery").unwrap()),
            Channel::Actor(ActorId::new("unheard").unwrap()),
        ),
        (
            Channel::Cluster(ClusterName::new("delivery").unwrap()),
            Channel::Cluster(ClusterName::new("unheard").unwrap()),
        ),
        (
            Channel::Reply(NodeId::new("delivery").unwrap()),
            Channel::Reply(NodeId::new("unheard").unwrap()),
        ),
    ];
    for (channel, unheard) in &channels {
        let publish_on = |channel: &Channel, frame: &'static [u8]| {
            let transport = c.transport().clone();
            let channel = channel.clone();
            async move {
                transport
                    .publish(&channel, Bytes::from_static(frame))
                    .await
                    .unwrap_or_else(|e| panic!("publish on {channel}: {e}"))
            }
        };
        let publish = |frame: &'static [u8]| publish_on(channel, frame);
        check_report(
            publish_on(unheard, b"none").await,
            0,
            counts,
            &format!("{unheard}, nobody"),
        );

        let mut a1 = a.transport().subscribe_stream(channel).await.unwrap();
        let mut b1 = b.transport().subscribe_stream(channel).await.unwrap();
        check_report(
            publish(b"two").await,
            2,
            counts,
            &format!("{channel}, a and b"),
        );
        assert_eq!(next_frame(&mut a1).await, "two");
        assert_eq!(next_frame(&mut b1).await, "two");

        let mut a2 = a.transport().subscribe_stream(channel).await.unwrap();
        check_report(
            publish(b"twice").await,
            2,
            counts,
            &format!("{channel}, a twice and b"),
        );
        for stream in [&mut a1, &mut a2, &mut b1] {
            assert_eq!(next_frame(stream).await, "twice");
        }

        // Closing one of a's subscriptions keeps its other one.
        a1.close().await;
        check_report(
            publish(b"after-a1").await,
            2,
            counts,
            &format!("{channel}, a once and b"),
        );
        assert_eq!(next_frame(&mut a2).await, "after-a1");
        assert_eq!(next_frame(&mut b1).await, "after-a1");
        b1.close().await;
        check_report(
            publish(b"a-only").await,
            1,
            counts,
            &format!("{channel}, a"),
        );
        assert_eq!(next_frame(&mut a2).await, "a-only");
        a2.close().await;
        check_report(
            publish(b"gone").await,
            0,
            counts,
            &format!("{channel}, closed"),
        );
    }
}

/// When `subscribe` returns the subscription is active: a frame published at once, from
/// another connection, is delivered, on every kind of channel.
pub async fn frame_published_after_subscribe_is_delivered(broker: &dyn TestBroker) {
    let a = broker.connect("a").await;
    let b = broker.connect("a").await;
    for round in 0..30 {
        let name = format!("ready-{round}");
        let channel = match round % 3 {
            0 => Channel::Actor(ActorId::new(&name).unwrap()),
            1 => Channel::Cluster(ClusterName::new(&name).unwrap()),
            _ => Channel::Reply(NodeId::new(&name).unwrap()),
        };
        let mut stream = a.transport().subscribe_stream(&channel).await.unwrap();
        b.transport()
            .publish(&channel, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(next_frame(&mut stream).await, "hello", "round {round}");
        stream.close().await;
    }
}

/// Forwards frames to a queue the case keeps, so that it can see what reaches a
/// subscription after it was closed or dropped.
struct Tap(mpsc::UnboundedSender<Bytes>);

impl FrameSink for Tap {
    fn deliver(&self, frame: Bytes) {
        // The case may have stopped listening; the frame is then of no interest.
        let _ = self.0.send(frame);
    }
}

/// Panics if `tap` yields a frame within 300 ms (the backend may drop its sink instead).
async fn tap_is_quiet(tap: &mut mpsc::UnboundedReceiver<Bytes>, what: &str) {
    if let Ok(Some(frame)) = tokio::time::timeout(Duration::from_millis(300), tap.recv()).await {
        panic!("{what}: a frame reached it: {frame:?}");
    }
}

/// After `Subscription::close` returns, and after a subscription is dropped, its sink gets
/// no more frames, while other subscriptions to the channel (on its connection and on
/// others) keep theirs.
pub async fn closed_or_dropped_subscription_gets_no_frames(broker: &dyn TestBroker) {
    let a = broker.connect("a").await;
    let b = broker.connect("a").await;
    let channel = Channel::Cluster(ClusterName::new("closing").unwrap());
    let (publisher, target) = (b.transport(), &channel);
    let publish = |frame: &'static [u8]| async move {
        publisher
            .publish(target, Bytes::from_static(frame))
            .await
            .unwrap()
    };
    let mut same_connection = a.transport().subscribe_stream(&channel).await.unwrap();
    let mut other_connection = b.transport().subscribe_stream(&channel).await.unwrap();

    for dropped in [false, true] {
        let what = if dropped { "dropped" } else { "closed" };
        let (tx, mut tap) = mpsc::unbounded_channel();
        let subscription = a
            .transport()
            .subscribe(&channel, Arc::new(Tap(tx)))
            .await
            .unwrap();
        publish(b"before").await;
        let before = tokio::time::timeout(Duration::from_secs(5), tap.recv()).await;
        assert!(
            matches!(&before, Ok(Some(frame)) if frame == "before"),
            "{what}: the subscription did not get its frame: {before:?}"
        );
        assert_eq!(next_frame(&mut same_connection).await, "before");
        assert_eq!(next_frame(&mut other_connection).await, "before");

        if dropped {
            drop(subscription);
        } else {
            subscription.close().await;
        }
        publish(b"after").await;
        assert_eq!(next_frame(&mut same_connection).await, "after");
        assert_eq!(next_frame(&mut other_connection).await, "after");
        tap_is_quiet(&mut tap, what).await;
    }
    same_connection.close().await;
    publish(b"last").await;
    assert_eq!(next_frame(&mut other_connection).await, "last");
    no_frame(&mut other_connection).await;
}
