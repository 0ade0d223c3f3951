//! Cluster channels on the host side: which local actors joined which channel, the
//! subscription each channel needs, and the fan-out of each cluster call to the members.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::actor_type::SingularMethods;
use super::handler::ClusterHandler;
use super::inbox::{decode_call, Envelope, Incoming, IncomingCall, Via, ViaCluster};
use super::liveness::Liveness;
use super::outbox::Outbox;
use crate::actor::{ChannelMember, MEMBERS_METHOD};
use crate::backend::{Channel, FrameSink, Subscription};
use crate::error::{Error, RemoteError, RemoteErrorKind, Result};
use crate::frame::{encode_value, Expect, Frame, Outcome};
use crate::hooks::Singular;
use crate::locks::Locks;
use crate::name::{ActorId, ClusterName, NodeId};
use crate::shared::Shared;
use crate::sync::locked;
use crate::sync::unix_ms;

/// A local actor on a cluster channel.
#[derive(Clone)]
pub(crate) struct ClusterMember {
    pub(crate) actor: ActorId,
    pub(crate) mailbox: mpsc::Sender<Envelope>,
    pub(crate) handler: Option<Arc<dyn ClusterHandler>>,
    /// Whether the actor is handling a call right now.
    pub(crate) busy: Arc<AtomicBool>,
    pub(crate) type_name: &'static str,
    /// The actor's `singular` methods.
    pub(crate) singular: Arc<SingularMethods>,
}

impl ClusterMember {
    /// The `singular` settings under which this member would run `method`, if it would run
    /// it through a singular method (not through a custom handler).
    fn singular(&self, method: &str) -> Option<&Singular> {
        self.singular_methods()?.get(method)
    }

    /// The member's type's `singular` methods, unless a custom handler takes its calls.
    fn singular_methods(&self) -> Option<&Arc<SingularMethods>> {
        match self.handler {
            Some(_) => None,
            None => Some(&self.singular),
        }
    }

    /// `members` without `actor`'s entry: the start of a new list when one joins or parts.
    fn others(members: &[ClusterMember], actor: &ActorId) -> Vec<ClusterMember> {
        members
            .iter()
            .filter(|member| &member.actor != actor)
            .cloned()
            .collect()
    }
}

/// A channel's local members, replaced whole when one joins or parts (copy on write): a
/// cluster call takes the list with one reference count, not a copy of every member.
type Members = Arc<Mutex<Arc<[ClusterMember]>>>;

/// One cluster channel this node subscribed to, and its local members.
struct ClusterEntry {
    members: Members,
    subscription: Subscription,
    fan_out: JoinHandle<()>,
}

/// Cluster calls a node may have queued for fanning out before further ones are dropped.
const CLUSTER_QUEUE: usize = 4096;

/// The cluster channels a node's actors joined.
pub(crate) struct Clusters {
    shared: Arc<Shared>,
    liveness: Arc<Liveness>,
    locks: Locks,
    entries: tokio::sync::Mutex<HashMap<ClusterName, ClusterEntry>>,
}

impl Clusters {
    pub(crate) fn new(shared: Arc<Shared>, liveness: Arc<Liveness>, locks: Locks) -> Self {
        Clusters {
            shared,
            liveness,
            locks,
            entries: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Adds `member` to this node's local members of `channel`, subscribing the node to the
    /// channel (and recording its membership, where the broker cannot count receivers) if
    /// it is the first.
    pub(crate) async fn join(&self, channel: &ClusterName, member: ClusterMember) -> Result<()> {
        let mut entries = self.entries.lock().await;
        if let Some(entry) = entries.get(channel) {
            let mut members = locked(&entry.members);
            let mut joined = ClusterMember::others(&members, &member.actor);
            joined.push(member);
            *members = joined.into();
            return Ok(());
        }
        self.liveness.join(channel).await?;
        let (frames, queued) = mpsc::channel(CLUSTER_QUEUE);
        let sink = Arc::new(ClusterSink {
            channel: channel.clone(),
            frames,
        });
        let subscription = self
            .shared
            .backend
            .transport()
            .subscribe(&Channel::Cluster(channel.clone()), sink)
            .await?;
        let members: Members = Arc::new(Mutex::new(Arc::from([member])));
        let fan_out = tokio::spawn(fan_out(
            Arc::downgrade(&self.shared),
            self.locks.clone(),
            channel.clone(),
            queued,
            members.clone(),
        ));
        entries.insert(
            channel.clone(),
            ClusterEntry {
                members,
                subscription,
                fan_out,
            },
        );
        Ok(())
    }

    /// Removes `actor` from this node's members of `channel`, unsubscribing when it was the
    /// last. Returns whether it was a member.
    pub(crate) async fn part(&self, channel: &ClusterName, actor: &ActorId) -> Result<bool> {
        let mut entries = self.entries.lock().await;
        let Some(entry) = entries.get(channel) else {
            return Ok(false);
        };
        let (was_member, now_empty) = {
            let mut members = locked(&entry.members);
            let before = members.len();
            *members = ClusterMember::others(&members, actor).into();
            (members.len() != before, members.is_empty())
        };
        if now_empty {
            if let Some(entry) = entries.remove(channel) {
                // Closing the subscription drops the sink, which ends the fan-out task once
                // it has handled the calls already queued.
                entry.subscription.close().await;
                let _ = entry.fan_out.await;
            }
            self.liveness.part(channel).await?;
        }
        Ok(was_member)
    }

    /// Ends every channel's fan-out at once, as a crashed process would.
    #[cfg(feature = "testkit")]
    pub(crate) async fn crash(&self) {
        for (_, entry) in self.entries.lock().await.drain() {
            entry.fan_out.abort();
        }
    }
}

/// Queues a cluster channel's frames for its fan-out task (which publishes, so cannot run
/// inside a sink).
struct ClusterSink {
    channel: ClusterName,
    frames: mpsc::Sender<Bytes>,
}

impl FrameSink for ClusterSink {
    fn deliver(&self, frame: Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.frames.try_send(frame) {
            tracing::warn!(channel = %self.channel, "cluster queue full: dropped a cluster call");
        }
    }
}

/// Reads a cluster channel, tells each caller how many local members got its call, and
/// hands the call to each member's mailbox (shedding with an error when one is full). A
/// call of a `singular` method is decided here, once for all the node's members: see
/// [`decide_singular`].
async fn fan_out(
    shared: Weak<Shared>,
    locks: Locks,
    channel: ClusterName,
    mut queued: mpsc::Receiver<Bytes>,
    members: Members,
) {
    let mut last_caller = None;
    let mut outbox = Outbox::new();
    loop {
        let bytes = tokio::select! {
            biased;
            () = outbox.progress(), if outbox.is_busy() => continue,
            next = queued.recv() => match next {
                Some(bytes) => bytes,
                None => break,
            },
        };
        let Some(shared) = shared.upgrade() else {
            break;
        };
        let max_frame = shared.config.max_frame;
        let Some((call, reply_to)) =
            decode_call(max_frame, bytes, (&channel, None), &mut last_caller)
        else {
            continue;
        };
        if shared.caller_gave_up(call.deadline_ms) {
            tracing::debug!(
                call = call.id,
                "skipped a cluster call whose caller gave up"
            );
            continue;
        }
        let members: Arc<[ClusterMember]> = locked(&members).clone();
        if call.one_way {
            fan_out_one_way(call, &reply_to, &channel, &locks, &members).await;
            continue;
        }
        let expect = Frame::Expect(Expect {
            id: call.id,
            count: members.len() as u32,
        });
        match shared.encode(&expect) {
            Ok(bytes) => {
                let to = Channel::Reply(reply_to.clone());
                let failed = |e: Error| {
                    tracing::warn!(error = %e, "could not tell a cluster caller what to expect");
                };
                outbox.publish(&shared, to, bytes, failed);
                outbox.make_room().await;
            }
            Err(e) => tracing::warn!(error = %e, "could not encode an expect frame"),
        }
        if call.method.as_str() == MEMBERS_METHOD {
            // Listing answered by the node: no member's mailbox is entered.
            for member in members.iter() {
                let listed = ChannelMember {
                    uuid: member.actor.to_string(),
                    type_name: member.type_name.to_owned(),
                };
                let outcome = match encode_value(&listed, "channel member") {
                    Ok(bytes) => Outcome::Ok(bytes),
                    Err(e) => {
                        Outcome::Err(RemoteError::new(RemoteErrorKind::Handler, e.to_string()))
                    }
                };
                let from = member.actor.clone();
                outbox.reply(&shared, reply_to.clone(), call.id, from, outcome);
                outbox.make_room().await;
            }
            continue;
        }
        let incoming = Arc::new(Incoming {
            call,
            reply_to: reply_to.clone(),
        });
        let call = &incoming.call;
        let decided = decide_singular(&locks, call, &reply_to, &members).await;
        for (index, member) in members.iter().enumerate() {
            // Members that serve the method as singular and were not chosen answer here.
            let answer = match &decided {
                Decision::Everyone => None,
                Decision::Only(chosen) if *chosen == index => None,
                Decision::Only(_) | Decision::Nobody => Some(Outcome::Declined),
                Decision::Failed(error) => Some(Outcome::Err(error.clone())),
            };
            if let Some(outcome) =
                answer.filter(|_| member.singular(call.method.as_str()).is_some())
            {
                let from = member.actor.clone();
                outbox.reply(&shared, reply_to.clone(), call.id, from, outcome);
                outbox.make_room().await;
                continue;
            }
            let singular_claimed = matches!(decided, Decision::Only(chosen) if chosen == index);
            let envelope = Envelope {
                incoming: incoming.clone(),
                via: Via::Cluster(Box::new(ViaCluster {
                    channel: channel.clone(),
                    handler: member.handler.clone(),
                    singular_claimed,
                })),
            };
            if let Err(refused) = member.mailbox.try_send(envelope) {
                let kind = match refused {
                    mpsc::error::TrySendError::Full(_) => RemoteErrorKind::Overloaded,
                    mpsc::error::TrySendError::Closed(_) => RemoteErrorKind::Stopped,
                };
                let error = RemoteError::new(kind, "the call was not queued");
                let outcome = Outcome::Err(error);
                let from = member.actor.clone();
                outbox.reply(&shared, reply_to.clone(), call.id, from, outcome);
                outbox.make_room().await;
            }
        }
    }
    outbox.flush().await;
}

/// Hands a one-way cluster call to the members that run it: no count, no declines and no
/// errors go back to its caller.
async fn fan_out_one_way(
    call: IncomingCall,
    reply_to: &NodeId,
    channel: &ClusterName,
    locks: &Locks,
    members: &[ClusterMember],
) {
    let incoming = Arc::new(Incoming {
        call,
        reply_to: reply_to.clone(),
    });
    let call = &incoming.call;
    let decided = decide_singular(locks, call, reply_to, members).await;
    for (index, member) in members.iter().enumerate() {
        let chosen = matches!(decided, Decision::Only(chosen) if chosen == index);
        let declines = !matches!(decided, Decision::Everyone) && !chosen;
        if declines && member.singular(call.method.as_str()).is_some() {
            continue;
        }
        let envelope = Envelope {
            incoming: incoming.clone(),
            via: Via::Cluster(Box::new(ViaCluster {
                channel: channel.clone(),
                handler: member.handler.clone(),
                singular_claimed: chosen,
            })),
        };
        if member.mailbox.try_send(envelope).is_err() {
            tracing::debug!(actor = %member.actor, method = call.method.as_str(), "shed a one-way cluster call");
        }
    }
}

/// What a node decided for its members about one cluster call.
enum Decision {
    /// The call is not of a `singular` method: every member gets it.
    Everyone,
    /// The node took the call's lease: the member at this index runs it, the others that
    /// serve the method as singular decline.
    Only(usize),
    /// Another node took the lease: every member that serves the method as singular
    /// declines.
    Nobody,
    /// The lease could not be asked for: those members answer this error.
    Failed(RemoteError),
}

/// The `singular` settings of the first member that runs `method` as a singular method.
/// Members of one actor type share its table, which is looked up once for all of them.
fn first_singular<'a>(members: &'a [ClusterMember], method: &str) -> Option<&'a Singular> {
    let mut looked_up: Option<&Arc<SingularMethods>> = None;
    members.iter().find_map(|member| {
        let table = member.singular_methods()?;
        if looked_up.is_some_and(|last| Arc::ptr_eq(last, table)) {
            return None;
        }
        looked_up = Some(table);
        table.get(method)
    })
}

/// Decides a cluster call of a `singular` method once for all the node's members, as soon
/// as it arrives: takes its lease (asking the broker no longer than the caller waits) and,
/// if won, picks an idle member to run it (a busy one only if none is idle). Members busy
/// with other calls so never hold up the caller: those that do not run it decline at once.
async fn decide_singular(
    locks: &Locks,
    call: &IncomingCall,
    caller: &NodeId,
    members: &[ClusterMember],
) -> Decision {
    let Some(singular) = first_singular(members, call.method.as_str()) else {
        return Decision::Everyone;
    };
    let remaining = Duration::from_millis(
        call.deadline_ms
            .saturating_sub(unix_ms(std::time::SystemTime::now())),
    );
    match singular
        .claim(locks, call.method.as_str(), caller, call.id, remaining)
        .await
    {
        Ok(true) => {
            let serving = || {
                members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.singular(call.method.as_str()).is_some())
            };
            let idle = serving().find(|(_, m)| !m.busy.load(Ordering::Acquire));
            let chosen = idle.or_else(|| serving().next()).map_or(0, |(i, _)| i);
            Decision::Only(chosen)
        }
        Ok(false) => Decision::Nobody,
        Err(error) => Decision::Failed(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    #[async_trait::async_trait]
    impl ClusterHandler for Echo {
        async fn handle(&self, _: &str, args: &[u8]) -> Result<Vec<u8>, RemoteError> {
            Ok(args.to_vec())
        }
    }

    fn member(
        singular: &Arc<SingularMethods>,
        handler: Option<Arc<dyn ClusterHandler>>,
    ) -> ClusterMember {
        ClusterMember {
            actor: ActorId::generate(),
            mailbox: mpsc::channel(1).0,
            handler,
            busy: Arc::new(AtomicBool::new(false)),
            type_name: "Test",
            singular: singular.clone(),
        }
    }

    /// Members of one type share a table looked up once; a member of another type, later
    /// in the list, is still looked up, and one with a custom handler never is.
    #[test]
    fn the_first_member_running_a_method_as_singular_is_found_across_types() {
        let plain = Arc::new(SingularMethods::default());
        let mut with_pick = SingularMethods::default();
        with_pick.insert("pick", Singular::default());
        let with_pick = Arc::new(with_pick);
        let handled = Some(Arc::new(Echo) as Arc<dyn ClusterHandler>);

        let only_plain = [member(&plain, None), member(&plain, None)];
        assert!(first_singular(&only_plain, "pick").is_none());

        let mixed = [
            member(&plain, None),
            member(&plain, None),
            member(&with_pick, handled),
            member(&with_pick, None),
        ];
        assert!(first_singular(&mixed, "pick").is_some());
        assert!(first_singular(&mixed, "other").is_none());

        let only_handled = [member(&with_pick, Some(Arc::new(Echo)))];
        assert!(first_singular(&only_handled, "pick").is_none());
    }
}
