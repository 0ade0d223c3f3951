//! The calls a node waits on: each call's reply slot and deadline, routed replies, and the
//! sweep that fails calls whose deadline passed.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::backend::Group;
use crate::error::Error;
use crate::frame::{Expect, Frame, Reply, ValueReply};
use crate::name::ActorId;
use crate::shared::Shared;
use crate::sync::{locked, LocalKeys};
use crate::telemetry;

/// Where a reply to one of this node's calls goes.
pub(crate) enum PendingSlot {
    Single(oneshot::Sender<Result<Answer, Failure>>),
    Gather(mpsc::UnboundedSender<GatherEvent>),
}

/// A reply as a call receives it: a value still in its frame (every successful call's), or
/// any reply decoded.
pub(crate) enum Answer {
    Value(ValueReply),
    Reply(Reply),
}

/// Why a call ended without a reply.
pub(crate) enum Failure {
    /// Its deadline passed.
    TimedOut,
    /// Something else ended it (the connection dropped).
    Lost(Error),
}

/// What a cluster call's gatherer receives.
pub(crate) enum GatherEvent {
    TimedOut,
    Expect(u32),
    Reply(Answer),
    Failed(Error),
}

struct Waiting {
    slot: PendingSlot,
    deadline: Instant,
    /// The actor a direct call waits on (cluster calls wait on no one actor).
    target: Option<ActorId>,
    since: Instant,
    _counted: PendingCount,
}

/// Counts a call in `rodario_pending_calls` while its entry exists.
struct PendingCount;

impl PendingCount {
    fn new() -> Self {
        telemetry::pending_call(true);
        PendingCount
    }
}

impl Drop for PendingCount {
    fn drop(&mut self) {
        telemetry::pending_call(false);
    }
}

#[derive(Default)]
struct Table {
    calls: HashMap<u64, Waiting, LocalKeys>,
    /// The earliest deadline the sweeper knows of.
    sweep_at: Option<Instant>,
}

/// The table of calls waiting for replies. Shared by the node's client, the reply sink and
/// every pending reply (which removes its own slot when dropped).
#[derive(Default)]
pub(crate) struct CallTable {
    table: Mutex<Table>,
    /// Wakes the deadline sweeper when a call with an earlier deadline comes in.
    sweeper: Notify,
}

impl CallTable {
    /// Waits for replies to call `id` (made at `since`) in `slot` until `deadline`; `target`
    /// is the actor a direct call waits on.
    pub(crate) fn add(
        &self,
        id: u64,
        slot: PendingSlot,
        (since, deadline): (Instant, Instant),
        target: Option<ActorId>,
    ) {
        let waiting = Waiting {
            slot,
            deadline,
            target,
            since,
            _counted: PendingCount::new(),
        };
        let earliest = {
            let mut table = locked(&self.table);
            table.calls.insert(id, waiting);
            let earliest = table.sweep_at.is_none_or(|at| deadline < at);
            if earliest {
                table.sweep_at = Some(deadline);
            }
            earliest
        };
        if earliest {
            self.sweeper.notify_one();
        }
    }

    pub(crate) fn remove(&self, id: u64) {
        locked(&self.table).calls.remove(&id);
    }

    /// Forgets every call (their waiters see the node closed). The slots are dropped, and
    /// so their waiters woken, after the table's lock is released, as [`CallTable::answer`]
    /// does.
    pub(crate) fn clear(&self) {
        let forgotten = std::mem::take(&mut locked(&self.table).calls);
        drop(forgotten);
    }

    /// Hands a frame from the reply channel to the call waiting for it.
    pub(crate) fn route(&self, frame: Frame) {
        match frame {
            Frame::Reply(reply) => self.answer(reply.id, Answer::Reply(reply)),
            Frame::Expect(Expect { id, count }) => {
                if let Some(gather) = self.gather(id) {
                    let _ = gather.send(GatherEvent::Expect(count));
                }
            }
            Frame::Call(_) => tracing::warn!("dropped a call frame sent to a reply channel"),
        }
    }

    /// Hands a reply to call `id` to the call waiting for it.
    ///
    /// The waiter is woken after the table's lock is released: a waiter on another thread
    /// wakes at once and drops its pending reply, and finding the lock still held (waking
    /// a thread takes a system call) would cost it a sleep and its waker another wake.
    pub(crate) fn answer(&self, id: u64, answer: Answer) {
        let waiting = {
            let mut table = locked(&self.table);
            match table.calls.entry(id) {
                Entry::Occupied(waiting) => match &waiting.get().slot {
                    PendingSlot::Single(_) => waiting.remove(),
                    PendingSlot::Gather(gather) => {
                        let gather = gather.clone();
                        drop(table);
                        let _ = gather.send(GatherEvent::Reply(answer));
                        return;
                    }
                },
                Entry::Vacant(_) => {
                    tracing::debug!(call = id, "reply for a call nobody awaits");
                    return;
                }
            }
        };
        if let PendingSlot::Single(tx) = waiting.slot {
            let _ = tx.send(Ok(answer));
        }
    }

    /// The gather waiting for the replies to cluster call `id`, if any.
    fn gather(&self, id: u64) -> Option<mpsc::UnboundedSender<GatherEvent>> {
        match &locked(&self.table).calls.get(&id)?.slot {
            PendingSlot::Gather(gather) => Some(gather.clone()),
            PendingSlot::Single(_) => None,
        }
    }

    /// Fails the calls whose deadline has passed; returns the next deadline to look at.
    fn sweep(&self) -> Option<Instant> {
        let now = Instant::now();
        let (expired, next) = {
            let mut table = locked(&self.table);
            let expired: Vec<u64> = table
                .calls
                .iter()
                .filter(|(_, waiting)| waiting.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            let expired: Vec<PendingSlot> = expired
                .iter()
                .filter_map(|id| table.calls.remove(id))
                .map(|waiting| waiting.slot)
                .collect();
            let next = table.calls.values().map(|waiting| waiting.deadline).min();
            table.sweep_at = next;
            (expired, next)
        };
        for slot in expired {
            match slot {
                PendingSlot::Single(tx) => {
                    let _ = tx.send(Err(Failure::TimedOut));
                }
                PendingSlot::Gather(tx) => {
                    let _ = tx.send(GatherEvent::TimedOut);
                }
            }
        }
        next
    }

    /// The actors that direct calls have waited on since before `before`.
    fn awaited_since(&self, before: Instant) -> BTreeSet<ActorId> {
        locked(&self.table)
            .calls
            .values()
            .filter(|waiting| waiting.since <= before)
            .filter_map(|waiting| waiting.target.clone())
            .collect()
    }

    /// Fails the direct calls waiting on `actor` with [`Error::ActorLost`]; returns how many.
    fn fail_calls_to(&self, actor: &ActorId) -> usize {
        let lost: Vec<PendingSlot> = {
            let mut table = locked(&self.table);
            let ids: Vec<u64> = table
                .calls
                .iter()
                .filter(|(_, waiting)| waiting.target.as_ref() == Some(actor))
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| table.calls.remove(id))
                .map(|waiting| waiting.slot)
                .collect()
        };
        let count = lost.len();
        for slot in lost {
            if let PendingSlot::Single(tx) = slot {
                let _ = tx.send(Err(Failure::Lost(Error::ActorLost {
                    uuid: actor.to_string(),
                })));
            }
        }
        count
    }

    /// Fails every call with the error `lost` makes; returns how many there were.
    pub(crate) fn fail_all(&self, lost: impl Fn() -> Error) -> usize {
        let drained: Vec<PendingSlot> = locked(&self.table)
            .calls
            .drain()
            .map(|(_, waiting)| waiting.slot)
            .collect();
        let count = drained.len();
        for slot in drained {
            match slot {
                PendingSlot::Single(tx) => {
                    let _ = tx.send(Err(Failure::Lost(lost())));
                }
                PendingSlot::Gather(tx) => {
                    let _ = tx.send(GatherEvent::Failed(lost()));
                }
            }
        }
        count
    }
}

/// Fails each call when its deadline passes. One task per node, asleep until the earliest
/// deadline (or until a call with an earlier one comes in), instead of a timer per call.
pub(crate) async fn sweep_deadlines(
    calls: Arc<CallTable>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = shutdown.wait_for(|down| *down);
    tokio::pin!(stopped);
    loop {
        let next = calls.sweep();
        let notified = calls.sweeper.notified();
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            () = notified => {}
            () = sleep_until_or_forever(next) => {}
        }
    }
}

/// Fails the direct calls waiting on an actor whose registration is gone (it stopped, or
/// its process died and its registration lapsed), instead of leaving them to their deadline.
/// Every `period`, asks the broker about each actor that calls have waited on for at least
/// that long: nothing is asked while no call waits.
pub(crate) async fn watch_targets(
    calls: Arc<CallTable>,
    shared: Weak<Shared>,
    period: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = shutdown.wait_for(|down| *down);
    tokio::pin!(stopped);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            _ = ticks.tick() => {}
        }
        let awaited = calls.awaited_since(Instant::now() - period);
        if awaited.is_empty() {
            continue;
        }
        let Some(shared) = shared.upgrade() else {
            break;
        };
        let presence = shared.backend.presence();
        for actor in awaited {
            match presence.contains(Group::Actors, actor.as_str()).await {
                Ok(true) => {}
                Ok(false) => {
                    let failed = calls.fail_calls_to(&actor);
                    if failed > 0 {
                        tracing::info!(%actor, calls = failed, "an awaited actor is gone: failed its calls");
                    }
                }
                Err(e) => tracing::debug!(%actor, error = %e, "could not check an awaited actor"),
            }
        }
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Removes a call's slot when what waits on it (a pending reply, a gather, or a send that
/// was abandoned) is dropped.
pub(crate) struct SlotGuard {
    /// `None` once the slot is known to be gone.
    calls: Option<Arc<CallTable>>,
    id: u64,
}

impl SlotGuard {
    /// Guards the slot of call `id` in `calls`.
    pub(crate) fn new(calls: Arc<CallTable>, id: u64) -> Self {
        SlotGuard {
            calls: Some(calls),
            id,
        }
    }

    /// Forgets the slot without looking it up: whoever answered a single call (a reply, the
    /// deadline, a lost connection) removed its slot to do so.
    pub(crate) fn answered(&mut self) {
        self.calls = None;
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(calls) = &self.calls {
            calls.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::OnceLock;
    use std::task::{Context, Wake, Waker};

    use super::*;
    use crate::frame::Outcome;

    /// A waker that notes whether the call table's lock was free when it was woken.
    struct LockProbe {
        calls: Arc<CallTable>,
        lock_was_free: OnceLock<bool>,
    }

    impl Wake for LockProbe {
        fn wake(self: Arc<Self>) {
            let _ = self.lock_was_free.set(self.calls.table.try_lock().is_ok());
        }
    }

    impl LockProbe {
        fn new(calls: &Arc<CallTable>) -> (Arc<Self>, Waker) {
            let probe = Arc::new(LockProbe {
                calls: calls.clone(),
                lock_was_free: OnceLock::new(),
            });
            (probe.clone(), Waker::from(probe))
        }

        /// Fails unless the waiter (a `who`) was woken, with the table unlocked.
        fn assert_woken_unlocked(&self, who: &str) {
            match self.lock_was_free.get() {
                None => panic!("the {who} was not woken"),
                Some(free) => assert!(free, "the {who} was woken with the table locked"),
            }
        }
    }

    fn reply(id: u64) -> Answer {
        Answer::Reply(Reply {
            id,
            from: "actor".into(),
            outcome: Outcome::Ok(vec![0xc0]),
        })
    }

    fn times() -> (Instant, Instant) {
        let now = Instant::now();
        (now, now + Duration::from_secs(60))
    }

    /// Call `id` in `calls`, its reply awaited (polled once) with a probe for a waker.
    fn awaited_call(
        calls: &Arc<CallTable>,
        id: u64,
    ) -> (oneshot::Receiver<Result<Answer, Failure>>, Arc<LockProbe>) {
        let (tx, mut rx) = oneshot::channel();
        calls.add(id, PendingSlot::Single(tx), times(), None);
        let (probe, waker) = LockProbe::new(calls);
        assert!(Pin::new(&mut rx)
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        (rx, probe)
    }

    /// A caller on another thread wakes as soon as its reply is sent and drops its pending
    /// reply, which takes the table's lock: it must not find the lock still held.
    #[tokio::test]
    async fn a_reply_wakes_its_caller_after_releasing_the_table() {
        let calls = Arc::new(CallTable::default());
        let (rx, probe) = awaited_call(&calls, 7);

        calls.answer(7, reply(7));

        probe.assert_woken_unlocked("caller");
        assert!(matches!(rx.await, Ok(Ok(Answer::Reply(r))) if r.id == 7));
        assert!(locked(&calls.table).calls.is_empty(), "the slot stayed");
    }

    #[tokio::test]
    async fn a_member_reply_wakes_its_gather_after_releasing_the_table() {
        let calls = Arc::new(CallTable::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        calls.add(8, PendingSlot::Gather(tx), times(), None);
        let (probe, waker) = LockProbe::new(&calls);
        assert!(rx.poll_recv(&mut Context::from_waker(&waker)).is_pending());

        calls.answer(8, reply(8));

        probe.assert_woken_unlocked("gather");
        assert!(matches!(rx.recv().await, Some(GatherEvent::Reply(_))));
        assert_eq!(
            locked(&calls.table).calls.len(),
            1,
            "a gather keeps its slot"
        );
    }

    /// A node shutting down closes its calls' reply channels, also after releasing the table.
    #[tokio::test]
    async fn a_shutdown_wakes_its_callers_after_releasing_the_table() {
        let calls = Arc::new(CallTable::default());
        let (rx, probe) = awaited_call(&calls, 10);

        calls.clear();

        probe.assert_woken_unlocked("caller");
        assert!(rx.await.is_err(), "the reply channel stayed open");
    }

    /// A call abandoned before its reply (its pending reply dropped) leaves no slot behind,
    /// and its late reply finds nobody.
    #[test]
    fn an_abandoned_call_leaves_no_slot() {
        let calls = Arc::new(CallTable::default());
        let (tx, rx) = oneshot::channel();
        calls.add(9, PendingSlot::Single(tx), times(), None);
        drop((rx, SlotGuard::new(calls.clone(), 9)));
        assert!(locked(&calls.table).calls.is_empty(), "the slot stayed");
        calls.answer(9, reply(9));
    }
}
